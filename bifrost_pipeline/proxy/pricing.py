"""Cost of a request from the pricing table kept in the repository (``pricing.json``), overridable in config."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

PRICING_FILE = Path(__file__).with_name("pricing.json")


def load_table(overrides: Mapping[str, object] | None = None) -> dict[str, tuple[float, float]]:
    """model -> (input USD per 1M tokens, output USD per 1M tokens); config entries win over the file."""
    raw = json.loads(PRICING_FILE.read_text())
    table = {
        name: (float(p["input_per_million"]), float(p["output_per_million"]))
        for name, p in raw.items()
        if not name.startswith("_")
    }
    for name, price in (overrides or {}).items():
        table[name] = (float(price.input_per_million), float(price.output_per_million))
    return table


class Pricing:
    def __init__(self, overrides: Mapping[str, object] | None = None):
        self.table = load_table(overrides)
        self._found: dict[tuple[str, str], tuple[float, float] | None] = {}  # a few models, asked per record

    def price(self, provider: str, model: str) -> tuple[float, float] | None:
        key = (provider, model)
        if key in self._found:
            return self._found[key]
        if len(self._found) >= 4096:  # senders name the models: bounded
            self._found.clear()
        found = self._found[key] = self.table.get(f"{provider}/{model}") or self.table.get(model)
        return found

    def cost(
        self, provider: str, model: str, input_tokens: int | None, output_tokens: int | None
    ) -> float | None:
        """USD, or None when the model has no price or the request reported no usage."""
        if input_tokens is None and output_tokens is None:
            return None
        price = self.price(provider, model)
        if price is None:
            return None
        return round(((input_tokens or 0) * price[0] + (output_tokens or 0) * price[1]) / 1_000_000, 10)
