"""Prices read from a LiteLLM ``model_prices_and_context_window.json`` file.

Many teams already keep that file.  Its prices are USD per token; ours are
USD per million tokens, so each is multiplied by 10^6 exactly: the JSON is
parsed with ``Decimal`` for every number, never a binary float.  A target's
own ``price:`` in routes.yaml always wins over the file.

    input_cost_per_token                -> input
    output_cost_per_token               -> output
    cache_read_input_token_cost         -> cached_input
    cache_creation_input_token_cost     -> cache_write
    output_cost_per_reasoning_token     -> reasoning

The version stored on each record is ``litellm:<first 12 hex of the file's sha256>``,
so a bill says exactly which file priced it.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from router.schema import Price

MILLION = Decimal(1_000_000)
_FIELDS = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cached_input",
    "cache_creation_input_token_cost": "cache_write",
    "output_cost_per_reasoning_token": "reasoning",
}


class PriceFileError(Exception):
    pass


def load_litellm_prices(path: str | Path) -> dict[str, Price]:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PriceFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        document = json.loads(raw, parse_float=Decimal, parse_int=Decimal)
    except ValueError as exc:
        raise PriceFileError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise PriceFileError(f"{path} must be a JSON object of model name -> prices")
    version = "litellm:" + hashlib.sha256(raw).hexdigest()[:12]
    prices: dict[str, Price] = {}
    for model, entry in document.items():
        if model == "sample_spec":  # LiteLLM's schema example, not a model
            continue
        price = _price(entry, version)
        if price is not None:
            prices[model] = price
    return prices


def _price(entry: Any, version: str) -> Price | None:
    if not isinstance(entry, dict) or "input_cost_per_token" not in entry or "output_cost_per_token" not in entry:
        return None  # image/audio-only entries have no token prices
    values: dict[str, Decimal] = {}
    for field, ours in _FIELDS.items():
        value = entry.get(field)
        if isinstance(value, Decimal) and value.is_finite() and value >= 0:
            values[ours] = (value * MILLION).normalize()
    if "input" not in values or "output" not in values:
        return None
    return Price(version=version, **values)
