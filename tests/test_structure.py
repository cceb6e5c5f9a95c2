"""The request path stays a ladder of small rungs: checked on the source, so it cannot drift back.

Issue 11's rule: no function in the request path (app, pipeline, routing
engine, admission, transport) is over 40 lines or takes more than 4
parameters (``self`` and ``cls`` not counted), and no outcome is parsed back
from a string anywhere in router/ or providers/.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUEST_PATH = ["router/app.py", "router/pipeline.py", "router/routing/engine.py", "router/auth/admission.py", "router/transport.py"]
MAX_LINES = 40
MAX_PARAMS = 4


def functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def params(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = node.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)] + ([a.vararg.arg] if a.vararg else []) + ([a.kwarg.arg] if a.kwarg else [])
    return len([n for n in names if n not in ("self", "cls")])


@pytest.mark.parametrize("name", REQUEST_PATH)
def test_request_path_functions_are_small_rungs(name: str) -> None:
    too_big = []
    for node in functions(ROOT / name):
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length > MAX_LINES or params(node) > MAX_PARAMS:
            too_big.append(f"{name}:{node.lineno} {node.name}: {length} lines, {params(node)} parameters")
    assert not too_big, "\n".join(too_big)


# The forms outcomes used to be written in and parsed back: prefix/suffix tests and splits of outcome text.
PARSED_OUTCOME = re.compile(r"""outcome\w*\.(startswith|endswith|split|partition)\(|\.startswith\(["']skipped|endswith\(["']mid-stream""")


def test_no_outcome_is_parsed_from_a_string() -> None:
    found = []
    for path in [*ROOT.glob("router/**/*.py"), *ROOT.glob("providers/**/*.py")]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if PARSED_OUTCOME.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
