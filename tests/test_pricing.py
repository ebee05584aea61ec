"""lib.generation.pricing: versioned per-model prices, longest-prefix matching, exact decimals."""

from decimal import Decimal

import pytest

from lib.generation import pricing

pytestmark = pytest.mark.pure  # no Postgres, no Redis


def test_dated_snapshots_and_aliases_take_their_family_price():
    assert pricing.price_for("gpt-4o-mini-2024-07-18").model_key == "gpt-4o-mini"
    assert pricing.price_for("gpt-4o-2024-08-06").model_key == "gpt-4o"
    assert pricing.price_for("claude-3-5-haiku-latest").model_key == "claude-3-5-haiku"
    assert pricing.price_for("gpt-4.1-mini").model_key == "gpt-4.1-mini"


def test_a_prefix_must_end_at_a_dash():
    assert pricing.price_for("gpt-4ox").model_key is None


def test_cost_is_tokens_times_price_per_million():
    price = pricing.price_for("gpt-4o-mini")
    assert pricing.cost_usd(price, 1_000_000, 0) == Decimal("0.15000000")
    assert pricing.cost_usd(price, 1000, 500) == Decimal("0.00045000")
    assert pricing.cost_usd(price, 1, 1) == Decimal("0.00000075")


def test_unknown_model_costs_zero_and_says_so():
    price = pricing.price_for("mystery-model")
    assert price.version == f"{pricing.CURRENT_VERSION}:unpriced"
    assert pricing.cost_usd(price, 10_000, 10_000) == Decimal("0E-8")


def test_every_table_prices_input_and_output_as_decimals():
    for version, table in pricing.PRICE_TABLES.items():
        for model, (input_price, output_price) in table.items():
            if model == "local-dev":  # make dev's local provider: free, and priced, not "unpriced"
                assert Decimal(input_price) == 0 == Decimal(output_price)
                continue
            assert Decimal(input_price) > 0 and Decimal(output_price) > 0, (version, model)
    assert pricing.CURRENT_VERSION in pricing.PRICE_TABLES
