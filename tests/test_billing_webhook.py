"""POST /api/webhooks/stripe: verification, each event's effect, idempotency, failures."""

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest

from lib import config
from ops.stripe_events import sample_event
from devtools.services import ROOT, free_port
from devtools.serve import SentryReceiver, serve_through_vercel_runtime
from tests.support.stripe_signing import (BILLING_ENV, OLD_SECRET, PRICE_AGENCY, PRICE_TEAM,
                                          PRICE_TEAM_YEARLY, ROUTE, SECRET, deliver, signature)

NOW = int(time.time())


@pytest.fixture
def billing_env(monkeypatch, app_env):
    for key, value in BILLING_ENV.items():
        monkeypatch.setenv(key, value)
    config.reload()
    return {**app_env, **BILLING_ENV}


@pytest.fixture
def url(serve, billing_env):
    return serve("api/webhooks/stripe.py")


def _event(event_type: str, price: str = PRICE_TEAM, **fields) -> dict:
    return sample_event(event_type, price=price, **fields)


def _org(sql, external_id: str, trial_days: int = 14) -> dict:
    return sql.execute("INSERT INTO organizations (external_id, trial_ends_at) "
                       "VALUES (%s, now() + make_interval(days => %s)) RETURNING *",
                       (external_id, trial_days)).fetchone()


def _reload(sql, org: dict) -> dict:
    return sql.execute("SELECT * FROM organizations WHERE id = %s", (org["id"],)).fetchone()


def _events(sql) -> list[dict]:
    return sql.execute("SELECT * FROM stripe_events ORDER BY created, id").fetchall()


def _nothing_written(sql) -> bool:
    counts = sql.execute("SELECT (SELECT count(*) FROM stripe_events) AS e, "
                         "(SELECT count(*) FROM stripe_subscriptions) AS s").fetchone()
    return counts == {"e": 0, "s": 0}


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["error"]["code"]


# --- the runbook contract and verification -------------------------------------------------

def test_runbook_curl_without_signature_is_400(url, sql):
    response = httpx.post(url + ROUTE, headers={"Content-Type": "application/json"},
                          content=b'{"type":"test"}')
    assert _error(response, 400) == "invalid_signature"
    assert "Stripe-Signature" in response.json()["error"]["message"]
    assert _nothing_written(sql)


def test_unset_webhook_secret_fails_closed_with_a_clear_500(serve, monkeypatch, sql, capfd):
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    config.reload()
    response = deliver(serve("api/webhooks/stripe.py"), _event("invoice.paid"))
    assert _error(response, 500) == "config_error"
    assert "STRIPE_WEBHOOK_SECRET" in response.json()["error"]["message"]
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
    logged = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    assert any(line["event"] == "error" and line["error_class"] == "ConfigError" for line in logged)
    assert _nothing_written(sql)


@pytest.mark.parametrize("secret", ["whsec_wrong_secret", ""])
def test_signature_with_another_secret_is_400(url, sql, secret):
    assert _error(deliver(url, _event("invoice.paid"), secret=secret), 400) == "invalid_signature"
    assert _nothing_written(sql)


def test_tampered_body_is_400(url, sql):
    body = json.dumps(_event("customer.subscription.updated")).encode()
    header = signature(body, [SECRET])
    tampered = body.replace(b'"active"', b'"trialing"')
    response = httpx.post(url + ROUTE, content=tampered, headers={"Stripe-Signature": header})
    assert _error(response, 400) == "invalid_signature"
    assert _nothing_written(sql)


def test_timestamp_older_than_five_minutes_is_a_rejected_replay(url, sql):
    response = deliver(url, _event("invoice.paid"), timestamp=int(time.time()) - 301)
    assert _error(response, 400) == "invalid_signature"
    assert "older than 300 s" in response.json()["error"]["message"]
    assert deliver(url, _event("test.unknown_event"),
                   timestamp=int(time.time()) - 290).status_code == 200
    assert len(_events(sql)) == 1


def test_rotated_second_secret_is_accepted(url, sql, monkeypatch):
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f"{SECRET}, {OLD_SECRET}")
    config.reload()
    for secret in (SECRET, OLD_SECRET):
        assert deliver(url, _event("test.unknown_event"), secret=secret).status_code == 200
    assert _error(deliver(url, _event("test.unknown_event"), secret="whsec_x"), 400)
    assert len(_events(sql)) == 2


def test_header_with_several_signatures_matches_any(url):
    body = json.dumps(_event("test.unknown_event")).encode()
    header = signature(body, ["whsec_other", SECRET])
    assert httpx.post(url + ROUTE, content=body, headers={"Stripe-Signature": header}).status_code == 200


@pytest.mark.parametrize("header", ["garbage", "t=abc,v1=00", "v1=deadbeef", "t=1", "t=,v1=",
                                    "t=99999999999999999999999,v1=ab", "x" * 8000])
def test_malformed_signature_headers_are_400(url, header):
    response = httpx.post(url + ROUTE, content=b"{}", headers={"Stripe-Signature": header})
    assert _error(response, 400) == "invalid_signature"


@pytest.mark.parametrize("body,code", [
    (b"not json at all", "invalid_json"), (b"[1, 2]", "invalid_json"), (b"", "invalid_json"),
    (b"[" * 50000, "invalid_json"), (b'{"id": "evt_1", "type": "invoice.paid"}', "invalid_event"),
    (b'{"id": 5, "type": "invoice.paid", "created": 1, "data": {"object": {}}}', "invalid_event"),
    (b'{"id": "evt_1", "type": "x", "created": "soon", "data": {"object": {}}}', "invalid_event"),
    (b'{"id": "evt_1", "type": "x", "created": 1, "data": {"object": []}}', "invalid_event"),
    (b'{"id": "evt_1", "type": "customer.subscription.updated", "created": 1,'
     b' "data": {"object": {"id": "sub_1"}}}', "invalid_event"),
    (b'{"id": "evt_1", "type": "invoice.paid", "created": 1, "data": {"object": {"customer": 7}}}',
     "invalid_event"),
])
def test_signed_body_that_is_not_an_event_is_400(url, sql, body, code):
    assert _error(deliver(url, body), 400) == code
    assert _nothing_written(sql)


def test_non_utf8_body_is_400(url):
    response = httpx.post(url + ROUTE, content=b"\xff\xfe{}", headers={
        "Stripe-Signature": signature(b"\xff\xfe{}", [SECRET])})
    assert _error(response, 400) == "invalid_json"


def test_other_methods_are_405_and_huge_bodies_413(url):
    response = httpx.get(url + ROUTE)
    assert _error(response, 405) == "method_not_allowed" and response.headers["allow"] == "POST"
    big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    assert _error(httpx.post(url + ROUTE, content=big, headers={
        "Stripe-Signature": signature(big, [SECRET])}), 413) == "payload_too_large"


def test_unknown_event_type_is_recorded_as_ignored_without_effect(url, sql):
    org = _org(sql, "org_unknown")
    response = deliver(url, _event("payment_intent.created", org="org_unknown"))
    assert response.status_code == 200
    assert response.json() == {"received": True, "ignored": True}
    assert [e["outcome"] for e in _events(sql)] == ["ignored"]
    assert _reload(sql, org) == org


# --- each handled event's effect ---------------------------------------------------------------

def _subscribe(url, external_id, price=PRICE_TEAM, status="active", created=NOW - 100, **kw):
    """checkout.session.completed then customer.subscription.created, like a real checkout."""
    customer, subscription = f"cus_{external_id}", f"sub_{external_id}"
    assert deliver(url, _event("checkout.session.completed", org=external_id, customer=customer,
                                     subscription=subscription, created=created)).json() == \
        {"received": True, "outcome": "applied"}
    response = deliver(url, _event("customer.subscription.created", customer=customer,
                                         subscription=subscription, price=price, status=status,
                                         created=created + 1, **kw))
    assert response.json() == {"received": True, "outcome": "applied"}
    return customer, subscription


def test_checkout_links_the_customer_by_our_metadata(url, sql):
    org = _org(sql, "org_checkout")
    event = _event("checkout.session.completed", org="org_checkout", customer="cus_checkout",
                   subscription="sub_c")
    assert deliver(url, event).json()["outcome"] == "applied"
    after = _reload(sql, org)
    assert after["stripe_customer_id"] == "cus_checkout"
    assert after["plan"] == "TRIAL" and after["trial_ends_at"] == org["trial_ends_at"]
    assert _events(sql)[0]["organization_id"] == org["id"]


def test_checkout_with_only_a_client_reference_id_links_nothing(url, sql):
    # client_reference_id is whatever the buyer's payment link says (issue 11 §3).
    org = _org(sql, "org_checkout")
    event = _event("checkout.session.completed", customer="cus_checkout", subscription="sub_c")
    event["data"]["object"].update(client_reference_id="org_checkout", metadata={})
    assert deliver(url, event).json()["outcome"] == "unmatched"
    assert _reload(sql, org) == org


def test_checkout_for_a_one_time_payment_is_ignored(url, sql):
    org = _org(sql, "org_payment")
    event = _event("checkout.session.completed", org="org_payment")
    event["data"]["object"]["mode"] = "payment"
    assert deliver(url, event).json() == {"received": True, "outcome": "ignored"}
    assert _reload(sql, org)["stripe_customer_id"] is None


@pytest.mark.parametrize("price,plan", [(PRICE_TEAM, "TEAM"), (PRICE_TEAM_YEARLY, "TEAM"),
                                        (PRICE_AGENCY, "AGENCY")])
def test_active_subscription_sets_the_plan_of_its_price(url, sql, price, plan):
    org = _org(sql, "org_paid")
    _, subscription = _subscribe(url, "org_paid", price=price, period_end=NOW + 3600)
    after = _reload(sql, org)
    assert after["plan"] == plan and after["stripe_subscription_id"] == subscription
    assert after["subscription_status"] == "active" and after["cancel_at_period_end"] is False
    assert after["current_period_end"] == datetime.fromtimestamp(NOW + 3600, UTC)


def test_subscription_metadata_links_an_organization_without_checkout(url, sql):
    org = _org(sql, "user_personal")
    response = deliver(url, _event("customer.subscription.created", org="user_personal",
                                         customer="cus_meta", price=PRICE_AGENCY))
    assert response.json()["outcome"] == "applied"
    after = _reload(sql, org)
    assert (after["plan"], after["stripe_customer_id"]) == ("AGENCY", "cus_meta")


def test_update_to_cancel_at_period_end_keeps_the_plan(url, sql):
    org = _org(sql, "org_cancel")
    customer, subscription = _subscribe(url, "org_cancel")
    event = _event("customer.subscription.updated", customer=customer,
                         subscription=subscription, price=PRICE_TEAM)
    event["data"]["object"]["cancel_at_period_end"] = True
    assert deliver(url, event).json()["outcome"] == "applied"
    after = _reload(sql, org)
    assert (after["plan"], after["cancel_at_period_end"]) == ("TEAM", True)


def test_upgrade_to_agency_changes_the_plan(url, sql):
    org = _org(sql, "org_upgrade")
    customer, subscription = _subscribe(url, "org_upgrade")
    deliver(url, _event("customer.subscription.updated", customer=customer,
                              subscription=subscription, price=PRICE_AGENCY))
    assert _reload(sql, org)["plan"] == "AGENCY"


@pytest.mark.parametrize("event_type,status", [
    ("customer.subscription.deleted", "canceled"), ("customer.subscription.updated", "canceled"),
    ("customer.subscription.updated", "unpaid")])
def test_ended_subscription_falls_back_to_trial_that_is_already_over(url, sql, event_type, status):
    org = _org(sql, "org_ended")
    customer, subscription = _subscribe(url, "org_ended", status="active")
    assert deliver(url, _event(event_type, customer=customer, subscription=subscription,
                                     status=status)).json()["outcome"] == "applied"
    after = _reload(sql, org)
    assert after["plan"] == "TRIAL" and after["subscription_status"] == status
    assert after["trial_ends_at"] < datetime.now(UTC)  # /api/generate answers 402


def test_paying_again_restores_the_plan(url, sql):
    org = _org(sql, "org_unpaid")
    customer, subscription = _subscribe(url, "org_unpaid", price=PRICE_AGENCY)
    deliver(url, _event("customer.subscription.updated", customer=customer, price=PRICE_AGENCY,
                        subscription=subscription, status="unpaid", created=NOW - 50))
    assert _reload(sql, org)["plan"] == "TRIAL"
    paid = deliver(url, _event("invoice.paid", customer=customer, subscription=subscription,
                                     created=NOW - 40, period_end=NOW + 40 * 86400))
    assert paid.json()["outcome"] == "applied"
    after = _reload(sql, org)
    assert (after["plan"], after["subscription_status"]) == ("AGENCY", "active")
    assert after["current_period_end"] == datetime.fromtimestamp(NOW + 40 * 86400, UTC)


def test_failed_payment_makes_the_subscription_past_due_and_keeps_the_plan(url, sql):
    org = _org(sql, "org_failed")
    customer, subscription = _subscribe(url, "org_failed", period_end=NOW + 500)
    response = deliver(url, _event("invoice.payment_failed", customer=customer,
                                         subscription=subscription, created=NOW - 10))
    assert response.json()["outcome"] == "applied"
    after = _reload(sql, org)
    assert (after["plan"], after["subscription_status"]) == ("TEAM", "past_due")
    assert after["current_period_end"] == datetime.fromtimestamp(NOW + 500, UTC)


def test_trial_will_end_records_the_trialing_state(url, sql):
    org = _org(sql, "org_trialing")
    customer, subscription = _subscribe(url, "org_trialing", status="trialing")
    response = deliver(url, _event("customer.subscription.trial_will_end", customer=customer,
                                         subscription=subscription, period_end=NOW + 3 * 86400))
    assert response.json()["outcome"] == "applied"
    after = _reload(sql, org)
    assert (after["plan"], after["subscription_status"]) == ("TEAM", "trialing")
    assert after["current_period_end"] == datetime.fromtimestamp(NOW + 3 * 86400, UTC)


def test_unknown_price_grants_no_plan(url, sql):
    org = _org(sql, "org_price")
    _subscribe(url, "org_price", price="price_not_configured")
    after = _reload(sql, org)
    assert after["plan"] == "TRIAL" and after["subscription_status"] == "active"


def test_invoice_without_subscription_is_ignored(url, sql):
    event = _event("invoice.paid", customer="cus_oneoff")
    event["data"]["object"]["parent"] = None
    assert deliver(url, event).json() == {"received": True, "outcome": "ignored"}


def test_unknown_customer_is_200_recorded_unmatched_and_logged(url, sql, capfd):
    response = deliver(url, _event("customer.subscription.updated", customer="cus_nobody"))
    assert response.status_code == 200 and response.json()["outcome"] == "unmatched"
    assert [e["outcome"] for e in _events(sql)] == ["unmatched"]
    logged = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    assert any(line["event"] == "stripe_event_unmatched" and line["customer"] == "cus_nobody"
               for line in logged)


def test_subscription_seen_before_its_checkout_is_adopted_by_the_checkout(url, sql):
    org = _org(sql, "org_early")
    early = deliver(url, _event("customer.subscription.created", customer="cus_early",
                                      subscription="sub_early", price=PRICE_AGENCY, created=NOW - 5))
    assert early.json()["outcome"] == "unmatched"
    deliver(url, _event("checkout.session.completed", org="org_early", customer="cus_early",
                              subscription="sub_early", created=NOW - 6))
    after = _reload(sql, org)
    assert (after["plan"], after["stripe_subscription_id"]) == ("AGENCY", "sub_early")


def test_new_subscription_after_a_canceled_one_restores_the_plan(url, sql):
    org = _org(sql, "org_again")
    customer, old = _subscribe(url, "org_again", created=NOW - 1000)
    deliver(url, _event("customer.subscription.deleted", customer=customer, subscription=old,
                              created=NOW - 900))
    assert _reload(sql, org)["plan"] == "TRIAL"
    deliver(url, _event("customer.subscription.created", customer=customer,
                              subscription="sub_again_2", price=PRICE_AGENCY, created=NOW - 800))
    after = _reload(sql, org)
    assert (after["plan"], after["stripe_subscription_id"]) == ("AGENCY", "sub_again_2")
    # A late redelivery about the old subscription doesn't take the plan away again.
    deliver(url, _event("customer.subscription.updated", customer=customer, subscription=old,
                              status="canceled", created=NOW - 700))
    assert _reload(sql, org)["plan"] == "AGENCY"


# --- idempotency and order --------------------------------------------------------------

def test_redelivered_event_has_no_second_effect(url, sql):
    org = _org(sql, "org_dup")
    customer, subscription = _subscribe(url, "org_dup")
    event = _event("customer.subscription.deleted", customer=customer, subscription=subscription)
    assert deliver(url, event).json()["outcome"] == "applied"
    ended = _reload(sql, org)
    for _ in range(3):
        assert deliver(url, event).json() == {"received": True, "duplicate": True}
    assert _reload(sql, org) == ended
    assert len([e for e in _events(sql) if e["id"] == event["id"]]) == 1


def test_ten_concurrent_deliveries_of_one_event_have_one_effect(url, sql):
    _org(sql, "org_race")
    customer, subscription = _subscribe(url, "org_race")
    event = _event("customer.subscription.updated", customer=customer,
                         subscription=subscription, price=PRICE_AGENCY)
    barrier, answers = threading.Barrier(10), []

    def send():
        barrier.wait()
        answers.append(deliver(url, event))

    threads = [threading.Thread(target=send) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bodies = [answer.json() for answer in answers]
    assert all(answer.status_code == 200 for answer in answers), bodies
    assert bodies.count({"received": True, "outcome": "applied"}) == 1, bodies
    assert bodies.count({"received": True, "duplicate": True}) == 9, bodies
    assert sql.execute("SELECT count(*) AS n FROM stripe_events WHERE id = %s",
                       (event["id"],)).fetchone()["n"] == 1


def test_older_subscription_event_never_overwrites_a_newer_one(url, sql):
    org = _org(sql, "org_order")
    customer, subscription = _subscribe(url, "org_order", created=NOW - 100)
    newer = _event("customer.subscription.updated", customer=customer, subscription=subscription,
                         price=PRICE_AGENCY, created=NOW - 10)
    older = _event("customer.subscription.updated", customer=customer, subscription=subscription,
                         status="past_due", created=NOW - 20)
    assert deliver(url, newer).json()["outcome"] == "applied"
    assert deliver(url, older).json()["outcome"] == "stale"
    after = _reload(sql, org)
    assert (after["plan"], after["subscription_status"]) == ("AGENCY", "active")


def test_same_second_events_order_by_the_subscription_lifecycle(url, sql):
    org = _org(sql, "org_tie")
    deliver(url, _event("checkout.session.completed", org="org_tie", customer="cus_tie",
                              subscription="sub_tie", created=NOW))
    active = _event("customer.subscription.updated", customer="cus_tie", subscription="sub_tie",
                          created=NOW, period_end=NOW + 100)
    incomplete = _event("customer.subscription.created", customer="cus_tie",
                              subscription="sub_tie", status="incomplete", created=NOW,
                              period_end=NOW + 100)
    assert deliver(url, active).json()["outcome"] == "applied"
    assert deliver(url, incomplete).json()["outcome"] == "stale"
    assert _reload(sql, org)["subscription_status"] == "active"


def test_canceled_subscription_is_not_revived_by_a_later_stamped_event(url, sql):
    org = _org(sql, "org_final")
    customer, subscription = _subscribe(url, "org_final")
    deliver(url, _event("customer.subscription.deleted", customer=customer,
                              subscription=subscription, created=NOW - 10))
    late = _event("customer.subscription.updated", customer=customer,
                        subscription=subscription, created=NOW - 5)
    assert deliver(url, late).json()["outcome"] == "stale"
    assert _reload(sql, org)["plan"] == "TRIAL"


# --- failures -----------------------------------------------------------------------------

_KILL_ON_ORG_UPDATE = """
CREATE FUNCTION test_kill_backend() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$;
CREATE TRIGGER test_kill_backend BEFORE UPDATE ON organizations
    FOR EACH ROW EXECUTE FUNCTION test_kill_backend();
"""


def test_database_dying_mid_transaction_is_500_and_a_retry_applies_everything(url, sql, monkeypatch):
    org = _org(sql, "org_dies")
    receiver = SentryReceiver()
    monkeypatch.setenv("SENTRY_DSN", receiver.dsn)
    config.reload()
    event = _event("customer.subscription.created", org="org_dies", customer="cus_dies",
                         price=PRICE_AGENCY)
    try:
        # The backend serving the webhook really terminates after it wrote the subscription
        # row and while it updates the organization: the transaction is cut off mid-way.
        sql.execute(_KILL_ON_ORG_UPDATE)
        response = deliver(url, event)
        assert _error(response, 500) == "webhook_not_applied"
        assert _nothing_written(sql) and _reload(sql, org) == org
        assert receiver.wait_for(1)  # flushed after the response was written
        assert len(receiver.events) == 1
        assert receiver.events[0]["exception"]["values"][-1]["type"] == "WebhookNotApplied"
    finally:
        sql.execute("DROP TRIGGER IF EXISTS test_kill_backend ON organizations; "
                    "DROP FUNCTION IF EXISTS test_kill_backend()")
        receiver.close()
    retried = deliver(url, event)  # what "Resend" in the Stripe dashboard does
    assert retried.json() == {"received": True, "outcome": "applied"}
    after = _reload(sql, org)
    assert (after["plan"], after["stripe_customer_id"]) == ("AGENCY", "cus_dies")
    assert [e["outcome"] for e in _events(sql)] == ["applied"]


def test_unreachable_database_is_500_and_the_event_stays_unrecorded(url, sql, monkeypatch,
                                                                    database_url):
    org = _org(sql, "org_offline")
    event = _event("customer.subscription.created", org="org_offline", customer="cus_off")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    config.reload()
    assert _error(deliver(url, event), 500) == "webhook_not_applied"
    assert _nothing_written(sql)
    monkeypatch.setenv("DATABASE_URL", database_url)
    config.reload()
    assert deliver(url, event).json()["outcome"] == "applied"
    assert _reload(sql, org)["plan"] == "TEAM"


# --- cold start and the Vercel runtime ------------------------------------------------------

def test_stripe_sdk_is_imported_only_when_a_webhook_is_verified():
    code = ("import sys, importlib.util\n"
            "from devtools.serve import load_handler\n"
            "import lib.http, lib.db, lib.billing.webhook, lib.billing.ledger\n"
            "load_handler('api/webhooks/stripe.py'); load_handler('api/health.py')\n"
            "print('stripe' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.slow
def test_webhook_through_the_vercel_runtime_adapter(billing_env, sql):
    org = _org(sql, "org_vercel")
    with serve_through_vercel_runtime("api/webhooks/stripe.py", billing_env) as base:
        unsigned = httpx.post(base + ROUTE, content=b'{"type":"test"}', timeout=30,
                              headers={"Content-Type": "application/json"})
        assert unsigned.status_code == 400
        event = _event("customer.subscription.created", org="org_vercel", customer="cus_v",
                             price=PRICE_TEAM)
        assert deliver(base, event).json() == {"received": True, "outcome": "applied"}
        assert deliver(base, event).json() == {"received": True, "duplicate": True}
    assert _reload(sql, org)["plan"] == "TEAM"


