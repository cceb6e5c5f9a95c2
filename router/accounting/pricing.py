"""Prices applied to usage, exactly: integer micro-dollars, computed with ``Decimal``.

Prices are USD per million tokens, so a token costs ``price`` micro-dollars:
cost in micro-USD = sum(tokens * price_per_million).  Cached prompt tokens
are billed at ``cached_input`` (else ``input``), cache writes at
``cache_write`` (else ``input``), reasoning tokens at ``reasoning`` (else
``output``).  Fractions of a micro-dollar are kept as ``Decimal`` until the
record is rounded once, half-up, so sums over many records stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from providers.base import Usage
from router.config import Price

MICRO = Decimal(1)  # a price per million tokens is a price in micro-dollars per token


@dataclass(frozen=True, slots=True)
class CostParts:
    """A cost split by what was billed, exact micro-dollars (the split ``usage.cost_details`` shows)."""

    input: Decimal = Decimal(0)  # prompt tokens read fresh
    cached_input: Decimal = Decimal(0)
    cache_write: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    reasoning: Decimal = Decimal(0)  # only when the price bills reasoning apart from output

    @property
    def total(self) -> Decimal:
        return self.input + self.cached_input + self.cache_write + self.output + self.reasoning

    def split(self) -> tuple[Decimal, ...]:
        """The parts in field order (what ``usage.cost_details`` lists)."""
        return (self.input, self.cached_input, self.cache_write, self.output, self.reasoning)

    def __add__(self, other: CostParts) -> CostParts:
        return CostParts(
            self.input + other.input,
            self.cached_input + other.cached_input,
            self.cache_write + other.cache_write,
            self.output + other.output,
            self.reasoning + other.reasoning,
        )


NO_COST = CostParts()


def cost_parts(usage: Usage, price: Price | None) -> CostParts:
    """Exact cost in micro-dollars, split (each part may carry fractions; the total is rounded once with ``to_micro``)."""
    if price is None:
        return NO_COST
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cache_write = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
    fresh_input = usage.prompt_tokens - cached - cache_write
    reasoning = min(usage.reasoning_tokens, usage.completion_tokens) if price.reasoning is not None else 0
    return CostParts(
        input=fresh_input * price.input,
        cached_input=cached * (price.cached_input if price.cached_input is not None else price.input),
        cache_write=cache_write * (price.cache_write if price.cache_write is not None else price.input),
        output=(usage.completion_tokens - reasoning) * price.output,
        reasoning=reasoning * (price.reasoning if price.reasoning is not None else price.output),
    )


def cost_micro_usd(usage: Usage, price: Price | None) -> Decimal:
    """Exact cost in micro-dollars (may carry fractions; round once with ``to_micro``)."""
    return cost_parts(usage, price).total


def to_micro(amount: Decimal) -> int:
    """The one rounding: exact micro-dollars to whole ones, half-up (per request, as the ledger row and the client see it)."""
    return int(amount.quantize(MICRO, rounding=ROUND_HALF_UP))


def usd(micro: int | Decimal) -> float:
    """Micro-dollars as a JSON number of dollars (``usage.cost``): 25 -> 2.5e-05."""
    return float(Decimal(micro) / 1_000_000)


def max_cost_micro_usd(prompt_tokens: int, max_output_tokens: int, price: Price | None) -> int:
    """The most a request can cost: every prompt token uncached, every output token at the dearest output rate."""
    if price is None:
        return 0
    output_rate = max(price.output, price.reasoning or Decimal(0))
    input_rate = max(price.input, price.cache_write or Decimal(0))
    # Round up: a reservation must never be smaller than what it guards.
    amount = prompt_tokens * input_rate + max_output_tokens * output_rate
    return int(amount.to_integral_value(rounding="ROUND_CEILING"))
