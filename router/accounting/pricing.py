"""Prices applied to usage, exactly: integer micro-dollars, computed with ``Decimal``.

Prices are USD per million tokens, so a token costs ``price`` micro-dollars:
cost in micro-USD = sum(tokens * price_per_million).  Cached prompt tokens
are billed at ``cached_input`` (else ``input``), cache writes at
``cache_write`` (else ``input``), reasoning tokens at ``reasoning`` (else
``output``).  Fractions of a micro-dollar are kept as ``Decimal`` until the
record is rounded once, half-up, so sums over many records stay exact.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from providers.base import Usage
from router.config import Price

MICRO = Decimal(1)  # a price per million tokens is a price in micro-dollars per token


def cost_micro_usd(usage: Usage, price: Price | None) -> Decimal:
    """Exact cost in micro-dollars (may carry fractions; round once with ``to_micro``)."""
    if price is None:
        return Decimal(0)
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cache_write = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
    fresh_input = usage.prompt_tokens - cached - cache_write
    reasoning = min(usage.reasoning_tokens, usage.completion_tokens) if price.reasoning is not None else 0
    output = usage.completion_tokens - reasoning
    return (
        fresh_input * price.input
        + cached * (price.cached_input if price.cached_input is not None else price.input)
        + cache_write * (price.cache_write if price.cache_write is not None else price.input)
        + output * price.output
        + reasoning * (price.reasoning if price.reasoning is not None else price.output)
    )


def to_micro(amount: Decimal) -> int:
    return int(amount.quantize(MICRO, rounding=ROUND_HALF_UP))


def max_cost_micro_usd(prompt_tokens: int, max_output_tokens: int, price: Price | None) -> int:
    """The most a request can cost: every prompt token uncached, every output token at the dearest output rate."""
    if price is None:
        return 0
    output_rate = max(price.output, price.reasoning or Decimal(0))
    input_rate = max(price.input, price.cache_write or Decimal(0))
    # Round up: a reservation must never be smaller than what it guards.
    amount = prompt_tokens * input_rate + max_output_tokens * output_rate
    return int(amount.to_integral_value(rounding="ROUND_CEILING"))
