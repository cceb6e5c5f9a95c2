"""``max_price``: the request's price ceiling, and the filter that keeps every fallback under it.

A request may send ``"max_price": {"input": 1.0, "output": 4.0}`` (USD per
million tokens; ``prompt``/``completion`` are accepted as names too).  A
target is kept only if its configured input and output prices are both at or
under the ceiling; a target with no configured price is never assumed cheap.
When nothing is left, the client gets ``OverPriceCeiling`` naming the ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from router.errors import InvalidRequest, OverPriceCeiling
from router.routing.candidates import Candidate


@dataclass(frozen=True, slots=True)
class PriceCeiling:
    input: Decimal | None
    output: Decimal | None

    def __str__(self) -> str:
        parts = [f"{name} ${value}/M" for name, value in (("input", self.input), ("output", self.output)) if value is not None]
        return "max_price " + ", ".join(parts)


def _amount(value: Any, name: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidRequest(f"'max_price.{name}' must be a number (USD per million tokens)", param=f"max_price.{name}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise InvalidRequest(f"'max_price.{name}' must be a number (USD per million tokens)", param=f"max_price.{name}") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidRequest(f"'max_price.{name}' must be a non-negative number", param=f"max_price.{name}")
    return amount


def parse_ceiling(body: dict[str, Any]) -> PriceCeiling | None:
    raw = body.get("max_price")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidRequest('\'max_price\' must be an object like {"input": 1.0, "output": 4.0} (USD per million tokens)', param="max_price")
    ceiling = PriceCeiling(_amount(raw.get("input", raw.get("prompt")), "input"), _amount(raw.get("output", raw.get("completion")), "output"))
    return ceiling if ceiling.input is not None or ceiling.output is not None else None


def over_ceiling(candidate: Candidate, ceiling: PriceCeiling) -> str | None:
    price = candidate.target.price
    if price is None:
        return "over price (no price configured)"
    if ceiling.input is not None and price.input > ceiling.input:
        return f"over price (input ${price.input}/M > ${ceiling.input}/M)"
    if ceiling.output is not None and price.output > ceiling.output:
        return f"over price (output ${price.output}/M > ${ceiling.output}/M)"
    return None


def apply_ceiling(candidates: list[Candidate], body: dict[str, Any]) -> tuple[list[Candidate], list[tuple[Candidate, str]]]:
    ceiling = parse_ceiling(body)
    if ceiling is None:
        return candidates, []
    kept: list[Candidate] = []
    skipped: list[tuple[Candidate, str]] = []
    for candidate in candidates:
        reason = over_ceiling(candidate, ceiling)
        if reason is None:
            kept.append(candidate)
        else:
            skipped.append((candidate, reason))
    return kept, skipped


def ceiling_error(body: dict[str, Any], skipped: list[tuple[Candidate, str]], headers: dict[str, str]) -> OverPriceCeiling:
    detail = "; ".join(f"{c.target.key}: {reason}" for c, reason in skipped)
    return OverPriceCeiling(f"no target is priced within the request's {parse_ceiling(body)} ({detail})", param="max_price", headers=headers)
