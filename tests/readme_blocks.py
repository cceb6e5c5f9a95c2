"""README.md's fenced code blocks, with the HTML comment marker (if any) on the line before each."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
_FENCE = re.compile(r"^```(\S*)\s*$")
_MARKER = re.compile(r"^<!--\s*([a-z][a-z0-9-]*)\s*-->$")


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the opening fence
    marker: str | None  # e.g. "not-routes", from `<!-- not-routes -->` on the line before the fence

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"


def blocks(path: Path = README) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = _MARKER.match(before)
        found.append(Block(opening.group(1), "\n".join(lines[i + 1 : end]) + "\n", i + 1, marker.group(1) if marker else None))
        i = end + 1
    return found
