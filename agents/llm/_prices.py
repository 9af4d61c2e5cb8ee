"""What a call cost: tokens times the model's price per million tokens.

The default table holds OpenAI list prices for a few common models as published in
mid-2025. They are approximate and go stale: pass `LLM(prices={...})` with your
contract's prices (it overrides and extends this table). A model with no price costs 0.0
and is logged once, so a budget on `cost_usd` is never silently wrong without a trace.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger("agents.llm")


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million input (prompt) and output (completion) tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def __post_init__(self) -> None:
        if min(self.input_per_mtok, self.output_per_mtok) < 0:
            raise ValueError(f"Price needs amounts >= 0, got {self}")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1_000_000


# Approximate OpenAI list prices as of 2025-06 (USD per 1M tokens, input / output).
DEFAULT_PRICES: Mapping[str, Price] = {
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "o3-mini": Price(1.10, 4.40),
    "gpt-3.5-turbo": Price(0.50, 1.50),
}


class PriceTable:
    """Prices by model name. A dated name (`gpt-4o-2024-08-06`) takes the price of the
    longest listed name it extends with a `-` (`gpt-4o`), as providers name snapshots."""

    def __init__(self, prices: Mapping[str, Price] | None = None, *, defaults: bool = True) -> None:
        self._prices = {**(DEFAULT_PRICES if defaults else {}), **(prices or {})}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def price(self, model: str) -> Price | None:
        if model in self._prices:
            return self._prices[model]
        listed = [name for name in self._prices if model.startswith(f"{name}-")]
        return self._prices[max(listed, key=len)] if listed else None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        price = self.price(model)
        if price is not None:
            return price.cost(prompt_tokens, completion_tokens)
        with self._lock:
            first = model not in self._warned
            self._warned.add(model)
        if first:
            log.warning(
                "no price for model %r: its calls count as costing 0.0 USD; pass "
                "LLM(prices={%r: Price(input_per_mtok=..., output_per_mtok=...)})",
                model,
                model,
            )
        return 0.0
