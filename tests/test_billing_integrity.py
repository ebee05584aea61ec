"""Issue 11 §3 (billing never silently wrong) and issue 10 §6 (unstorable webhooks), with
correctly signed events through the real webhook handler. Every scenario ends in the exact
plan, subscription status and trial state of every organization involved."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from lib import config, monitoring
from lib.billing import ledger
from ops.stripe_events import sample_event
from devtools.serve import SentryReceiver
from tests.support.stripe_signing import PRICE_AGENCY, PRICE_TEAM, deliver

T0 = int(time.time()) - 10_000
INTACT = "intact"


@pytest.fixture
def url(webhook_url):
    return webhook_url


def _org(sql, external_id: str) -> dict:
    return sql.execute("INSERT INTO organizations (external_id, trial_ends_at) "
                       "VALUES (%s, now() + interval '14 days') RETURNING *", (external_id,)).fetchone()


def _send(url, event_type: str, at: int, **fields) -> str:
    response = deliver(url, sample_event(event_type, created=at, **fields))
    assert response.status_code == 200, response.text
    return response.json()["outcome"]


def _state(sql, org: dict) -> tuple:
    """(plan, subscription_status, trial): trial is INTACT or the moment it ended."""
    now = sql.execute("SELECT plan, subscription_status, trial_ends_at FROM organizations "
                      "WHERE id = %s", (org["id"],)).fetchone()
    trial = INTACT if now["trial_ends_at"] == org["trial_ends_at"] else now["trial_ends_at"]
    return now["plan"], now["subscription_status"], trial


def _at(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


def _outcomes(sql) -> list[str]:
    return [r["outcome"] for r in sql.execute("SELECT outcome FROM stripe_events ORDER BY created, id")]


def test_one_customer_paying_for_two_orgs_is_a_conflict_never_a_swap(url, sql):
    a, b = _org(sql, "org_a"), _org(sql, "org_b")
    assert _send(url, "checkout.session.completed", T0, org="org_a", customer="cus_1",
                 subscription="sub_a") == "applied"
    assert _send(url, "customer.subscription.created", T0 + 1, org="org_a", customer="cus_1",
                 subscription="sub_a", price=PRICE_TEAM) == "applied"
    # The same customer checks out for org_b: the customer is org_a's.
    assert _send(url, "checkout.session.completed", T0 + 10, org="org_b", customer="cus_1",
                 subscription="sub_b") == "conflict"
    assert _send(url, "customer.subscription.created", T0 + 11, org="org_b", customer="cus_1",
                 subscription="sub_b", price=PRICE_AGENCY) == "conflict"
    assert _state(sql, a) == ("TEAM", "active", _at(T0 + 1))
    assert _state(sql, b) == ("TRIAL", None, INTACT)
    assert _send(url, "customer.subscription.deleted", T0 + 20, customer="cus_1",
                 subscription="sub_a") == "applied"
    assert _state(sql, a) == ("TRIAL", "canceled", _at(T0 + 1))
    assert _state(sql, b) == ("TRIAL", None, INTACT)  # no paid plan without a live subscription
    assert ledger.conflicts_since(datetime.now(UTC) - timedelta(minutes=5)) == 2


def test_metadata_naming_another_org_is_a_conflict_applied_to_nobody(url, sql, capfd):
    a, b = _org(sql, "org_a"), _org(sql, "org_b")
    _send(url, "checkout.session.completed", T0, org="org_a", customer="cus_1", subscription="sub_1")
    _send(url, "customer.subscription.created", T0 + 1, customer="cus_1", subscription="sub_1",
          price=PRICE_TEAM)
    assert _send(url, "customer.subscription.updated", T0 + 2, org="org_b", customer="cus_1",
                 subscription="sub_1", price=PRICE_AGENCY) == "conflict"
    assert _state(sql, a) == ("TEAM", "active", _at(T0 + 1))
    assert _state(sql, b) == ("TRIAL", None, INTACT)
    owner = sql.execute("SELECT organization_id FROM stripe_subscriptions WHERE id = 'sub_1'").fetchone()
    assert owner["organization_id"] == a["id"]  # never moved
    logged = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    conflict = [line for line in logged if line["event"] == "stripe_event_conflict"]
    assert len(conflict) == 1 and conflict[0]["organizations"] == sorted([str(a["id"]), str(b["id"])])
    # An invoice of the same subscription still belongs to org_a.
    assert _send(url, "invoice.payment_failed", T0 + 3, customer="cus_1", subscription="sub_1") == "applied"
    assert _state(sql, a) == ("TEAM", "past_due", _at(T0 + 1))
    assert _state(sql, b) == ("TRIAL", None, INTACT)


def test_a_later_checkout_under_a_new_customer_never_unlinks_the_first(url, sql):
    a = _org(sql, "org_a")
    _send(url, "checkout.session.completed", T0, org="org_a", customer="cus_1", subscription="sub_1")
    _send(url, "customer.subscription.created", T0 + 1, customer="cus_1", subscription="sub_1",
          price=PRICE_TEAM)
    # A second checkout (a new customer) whose payment never went through.
    assert _send(url, "checkout.session.completed", T0 + 10, org="org_a", customer="cus_2",
                 subscription="sub_2") == "applied"
    assert _send(url, "customer.subscription.created", T0 + 11, customer="cus_2",
                 subscription="sub_2", price=PRICE_AGENCY, status="incomplete") == "applied"
    assert _send(url, "customer.subscription.deleted", T0 + 20, customer="cus_1",
                 subscription="sub_1") == "applied"
    # The real customer subscribes again (billing portal: no metadata).
    assert _send(url, "customer.subscription.created", T0 + 30, customer="cus_1",
                 subscription="sub_3", price=PRICE_TEAM) == "applied"
    assert _state(sql, a) == ("TEAM", "active", _at(T0 + 1))
    row = sql.execute("SELECT stripe_customer_id, stripe_subscription_id FROM organizations "
                      "WHERE id = %s", (a["id"],)).fetchone()
    assert row == {"stripe_customer_id": "cus_1", "stripe_subscription_id": "sub_3"}
    customers = sql.execute("SELECT id, organization_id FROM stripe_customers ORDER BY id").fetchall()
    assert customers == [{"id": "cus_1", "organization_id": a["id"]},
                         {"id": "cus_2", "organization_id": a["id"]}]


def test_client_reference_id_never_links_another_org(url, sql):
    buyer, victim, other = _org(sql, "org_buyer"), _org(sql, "org_victim"), _org(sql, "org_other")
    checkout = sample_event("checkout.session.completed", org="org_buyer", customer="cus_b",
                            subscription="sub_b", created=T0)
    checkout["data"]["object"]["client_reference_id"] = "org_victim"
    assert deliver(url, checkout).json()["outcome"] == "applied"
    assert _send(url, "customer.subscription.created", T0 + 1, customer="cus_b",
                 subscription="sub_b", price=PRICE_TEAM) == "applied"
    # A payment link used without our metadata: the buyer's client_reference_id alone.
    bare = sample_event("checkout.session.completed", customer="cus_x", subscription="sub_x",
                        created=T0 + 2)
    bare["data"]["object"].update(client_reference_id="org_other", metadata={})
    assert deliver(url, bare).json()["outcome"] == "unmatched"
    assert _send(url, "customer.subscription.created", T0 + 3, customer="cus_x",
                 subscription="sub_x", price=PRICE_AGENCY) == "unmatched"
    assert _state(sql, buyer) == ("TEAM", "active", _at(T0 + 1))
    assert _state(sql, victim) == ("TRIAL", None, INTACT)
    assert _state(sql, other) == ("TRIAL", None, INTACT)


def test_a_first_subscription_that_never_became_active_keeps_the_trial(url, sql):
    a = _org(sql, "org_a")
    _send(url, "checkout.session.completed", T0, org="org_a", customer="cus_1", subscription="sub_1")
    _send(url, "customer.subscription.created", T0 + 1, customer="cus_1", subscription="sub_1",
          price=PRICE_TEAM, status="incomplete")
    assert _state(sql, a) == ("TRIAL", "incomplete", INTACT)
    assert _send(url, "customer.subscription.updated", T0 + 2, customer="cus_1", subscription="sub_1",
                 price=PRICE_TEAM, status="incomplete_expired", subscription_created=T0 + 1) == "applied"
    assert _state(sql, a) == ("TRIAL", "incomplete_expired", INTACT)
    # A subscription that does become active ends the trial when it began.
    _send(url, "customer.subscription.created", T0 + 5, customer="cus_1", subscription="sub_2",
          price=PRICE_AGENCY)
    assert _state(sql, a) == ("AGENCY", "active", _at(T0 + 5))


def test_conflicts_raise_the_billing_conflicts_alert(url, sql):
    _org(sql, "org_a"), _org(sql, "org_b")
    assert not [a for a in monitoring.dashboard()["alerts"] if a["metric"] == "billing_conflicts"]
    _send(url, "checkout.session.completed", T0, org="org_a", customer="cus_1", subscription="sub_1")
    _send(url, "checkout.session.completed", T0 + 1, org="org_b", customer="cus_1", subscription="sub_2")
    alert = [a for a in monitoring.dashboard()["alerts"] if a["metric"] == "billing_conflicts"]
    assert alert == [{"metric": "billing_conflicts", "value": 1, "level": "warning", "threshold": 0,
                      "unit": "count", "window": "1h", "since": None}]
    assert _outcomes(sql) == ["applied", "conflict"]


# --- issue 10 §6: strings Postgres can't store -----------------------------------------------

@pytest.mark.parametrize("where", ["metadata", "id", "type", "key"])
@pytest.mark.parametrize("bad", ["\x00", "\ud800"], ids=["nul", "surrogate"])
def test_signed_event_with_unstorable_strings_is_200_rejected_and_reported(url, sql, monkeypatch,
                                                                           where, bad):
    org = _org(sql, "org_a")
    receiver = SentryReceiver()
    monkeypatch.setenv("SENTRY_DSN", receiver.dsn)
    config.reload()
    event = sample_event("customer.subscription.created", org="org_a", customer="cus_1",
                         subscription="sub_1", price=PRICE_AGENCY)
    if where == "metadata":
        event["data"]["object"]["metadata"]["note"] = f"a{bad}b"
    elif where == "id":
        event["id"] += bad
    elif where == "type":
        event["type"] += bad
    else:
        event["data"]["object"]["metadata"][f"k{bad}"] = "v"
    body = json.dumps(event).encode()  # \u0000 / \ud800 escapes: valid JSON, valid UTF-8
    try:
        response = deliver(url, body)
        assert response.status_code == 200, response.text
        assert response.json() == {"received": True, "outcome": "rejected"}
        again = {"received": True, "ignored": True} if where == "type" else \
            {"received": True, "duplicate": True}  # an unknown type is `ignored`, as ever
        assert deliver(url, body).json() == again
        assert [e["type"] for e in receiver.events[0]["exception"]["values"]][-1] == "UnstorableEvent"
        assert len(receiver.events) == 1
    finally:
        receiver.close()
    assert _outcomes(sql) == ["rejected"]
    assert _state(sql, org) == ("TRIAL", None, INTACT)
    assert sql.execute("SELECT count(*) AS n FROM stripe_subscriptions").fetchone()["n"] == 0
