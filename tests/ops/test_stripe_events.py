"""`python -m ops stripe-trigger`: signed sample events the webhook accepts."""

import json
import subprocess
import sys

import psycopg
import pytest
import stripe

from lib import config
from lib.billing import events
from ops import cli, stripe_events
from devtools.services import ROOT
from tests.support.stripe_signing import BILLING_ENV, PRICE_TEAM, SECRET


@pytest.fixture
def url(serve, monkeypatch):
    for key, value in BILLING_ENV.items():
        monkeypatch.setenv(key, value)
    config.reload()
    return serve("api/webhooks/stripe.py") + "/api/webhooks/stripe"


def test_sample_payloads_pin_the_api_version_of_the_pinned_sdk():
    assert stripe_events.API_VERSION == stripe.api_version
    event = stripe_events.sample_event("customer.subscription.updated")
    assert event["api_version"] == stripe_events.API_VERSION


@pytest.mark.parametrize("event_type", stripe_events.TYPES)
def test_every_sample_type_is_accepted_by_the_webhook(url, event_type, capsys):
    assert cli.main(["stripe-trigger", event_type, "--url", url, "--secret", SECRET]) == 0
    out = capsys.readouterr().out
    assert f"{event_type} evt_test_" in out and "200 " in out


def test_samples_parse_as_the_events_they_name():
    sub = events.subscription(events.parse_event(json.dumps(stripe_events.sample_event(
        "customer.subscription.updated", customer="cus_1", subscription="sub_1", org="org_1",
        price=PRICE_TEAM, created=1_800_000_000, period_end=1_800_100_000))))
    assert (sub.id, sub.customer, sub.organization_ref, sub.price_id, sub.status) == \
        ("sub_1", "cus_1", "org_1", PRICE_TEAM, "active")
    assert int(sub.current_period_end.timestamp()) == 1_800_100_000
    invoice = events.invoice(events.parse_event(json.dumps(stripe_events.sample_event(
        "invoice.payment_failed", customer="cus_1", subscription="sub_1"))))
    assert (invoice.subscription_id, invoice.outcome) == ("sub_1", "failed")


def test_trigger_with_org_links_the_organization(url, database_url, capsys):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO organizations (external_id) VALUES ('org_ops')")
        assert cli.main(["stripe-trigger", "customer.subscription.created", "--url", url,
                         "--org", "org_ops", "--customer", "cus_ops"]) == 0
        plan, customer = conn.execute("SELECT plan, stripe_customer_id FROM organizations").fetchone()
    assert (plan, customer) == ("TEAM", "cus_ops")  # --price defaults to STRIPE_PRICE_TEAM
    assert '"outcome": "applied"' in capsys.readouterr().out


def test_wrong_secret_exits_1_and_shows_the_400(url, capsys):
    assert cli.main(["stripe-trigger", "invoice.paid", "--url", url, "--secret", "whsec_no"]) == 1
    assert "400 " in capsys.readouterr().out


def test_missing_secret_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    config.reload()
    assert cli.main(["stripe-trigger", "invoice.paid", "--url", "http://127.0.0.1:9"]) == 2
    assert "STRIPE_WEBHOOK_SECRET" in capsys.readouterr().err


def test_print_shows_the_event_without_sending():
    result = subprocess.run([sys.executable, "-m", "ops", "stripe-trigger", "invoice.paid", "--print"],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    event = json.loads(result.stdout)
    assert event["type"] == "invoice.paid" and event["object"] == "event"
