"""What a generation costs: per-model prices in USD per 1M input/output tokens, versioned.

Each generation stores the `price_version` it was priced with, so a past row's cost can be
re-derived after prices change: add a new version to PRICE_TABLES (never edit a published
one) and point CURRENT_VERSION at it. Models match by longest prefix, so dated snapshots
(`gpt-4o-mini-2024-07-18`) and aliases (`claude-3-5-haiku-latest`) take their family's price.
"""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

PRICE_TABLES: dict[str, dict[str, tuple[str, str]]] = {
    "2026-12-01": {
        # OpenAI
        "gpt-4o-mini": ("0.15", "0.60"),
        "gpt-4o": ("2.50", "10.00"),
        "gpt-4.1-nano": ("0.10", "0.40"),
        "gpt-4.1-mini": ("0.40", "1.60"),
        "gpt-4.1": ("2.00", "8.00"),
        # Anthropic
        "claude-3-haiku": ("0.25", "1.25"),
        "claude-3-5-haiku": ("0.80", "4.00"),
        "claude-haiku-4-5": ("1.00", "5.00"),
        "claude-3-5-sonnet": ("3.00", "15.00"),
        "claude-3-7-sonnet": ("3.00", "15.00"),
        "claude-sonnet-4": ("3.00", "15.00"),
        # The local provider `make dev` starts when no key is set (devtools/local_llm.py)
        "local-dev": ("0", "0"),
    },
}
# The current defaults (OPENAI_MODEL, ANTHROPIC_MODEL), list prices as published in 2026:
# gpt-5.4-mini $0.75 / $4.50, claude-haiku-5-5 $0.10 / $0.50 (up to 100K input tokens a
# request; generate's inputs are capped far below that, at 60,000 characters).
PRICE_TABLES["2026-12-02"] = {**PRICE_TABLES["2026-12-01"],
                              "gpt-5.4-mini": ("0.75", "4.50"),
                              "claude-haiku-5-5": ("0.10", "0.50")}
CURRENT_VERSION = "2026-12-02"
UNPRICED = "unpriced"
_MILLION = Decimal(1_000_000)
_CENT_FRACTION = Decimal("0.00000001")  # the generations.cost_usd column's scale


@dataclass(frozen=True)
class Price:
    version: str
    model_key: str | None
    input_per_million: Decimal
    output_per_million: Decimal


def price_for(model: str, version: str = CURRENT_VERSION) -> Price:
    """The price of `model` in table `version` (longest matching prefix). An unknown model
    costs 0 with version `<version>:unpriced`, so it is visible rather than guessed. Pure."""
    table = PRICE_TABLES[version]
    matches = [key for key in table if model == key or model.startswith(key + "-")]
    if not matches:
        return Price(f"{version}:{UNPRICED}", None, Decimal(0), Decimal(0))
    key = max(matches, key=len)
    input_price, output_price = table[key]
    return Price(version, key, Decimal(input_price), Decimal(output_price))


def cost_usd(price: Price, input_tokens: int, output_tokens: int) -> Decimal:
    """USD cost of the tokens at `price`, rounded to the column's 8 decimals. Pure."""
    cost = (input_tokens * price.input_per_million + output_tokens * price.output_per_million) / _MILLION
    return cost.quantize(_CENT_FRACTION, rounding=ROUND_HALF_UP)
