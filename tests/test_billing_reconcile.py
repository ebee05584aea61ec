"""Issue 11 §4: the daily reconciliation with the Stripe API repairs what missed webhooks left
wrong. The real stripe SDK lists subscriptions from devtools.fake_stripe (STRIPE_API_BASE);
events before the drift arrive signed through the real webhook handler."""

import json
import time

import pytest

from lib import config
from ops.stripe_events import MONTH_S, sample_event, subscription_object
from devtools.fake_stripe import FakeStripe
from tests.support.cli import run_cli
from tests.support.crons import fire
from tests.support.stripe_signing import BILLING_ENV, PRICE_AGENCY, PRICE_TEAM, deliver

PATH = "/api/cron/reconcile-billing"
T0 = int(time.time()) - 50_000
KEY = "sk_test_reconcile_0123456789"


@pytest.fixture
def stripe_api(monkeypatch, cron_secret):
    fake = FakeStripe(api_key=KEY)
    for key, value in {**BILLING_ENV, "STRIPE_SECRET_KEY": KEY, "STRIPE_API_BASE": fake.url}.items():
        monkeypatch.setenv(key, value)
    config.reload()
    yield fake
    fake.close()


@pytest.fixture
def urls(serve, stripe_api):
    return {"webhook": serve("api/webhooks/stripe.py"), "cron": serve("api/cron/reconcile-billing.py")}


def _subscribe(sql, urls, external_id: str, price: str) -> tuple[dict, dict]:
    """An organization subscribed through delivered webhooks; returns it and the Stripe object."""
    sql.execute("INSERT INTO organizations (external_id, trial_ends_at) "
                "VALUES (%s, now() + interval '14 days')", (external_id,))
    customer, sub = f"cus_{external_id}", f"sub_{external_id}"
    obj = subscription_object(subscription=sub, customer=customer, org=external_id, price=price,
                              status="active", created=T0 + 1, period_end=T0 + MONTH_S)
    assert deliver(urls["webhook"], sample_event("checkout.session.completed", org=external_id,
                                                 customer=customer, subscription=sub,
                                                 created=T0)).json()["outcome"] == "applied"
    event = sample_event("customer.subscription.created", created=T0 + 1)
    event["data"]["object"] = obj
    assert deliver(urls["webhook"], event).json()["outcome"] == "applied"
    return _org(sql, external_id), obj


def _org(sql, external_id: str) -> dict:
    return sql.execute("SELECT * FROM organizations WHERE external_id = %s", (external_id,)).fetchone()


def _snapshot(sql) -> dict:
    return {table: sql.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("organizations", "stripe_subscriptions", "stripe_customers", "stripe_events")}


def _last(stdout: str) -> dict:
    """The command's result: its last line (the log lines come first)."""
    return json.loads(stdout.strip().splitlines()[-1])


def _upgraded(obj: dict) -> dict:
    """The same subscription after an upgrade to AGENCY whose webhook never arrived."""
    changed = json.loads(json.dumps(obj))
    changed["items"]["data"][0]["price"]["id"] = PRICE_AGENCY
    changed["items"]["data"][0]["current_period_end"] = T0 + 2 * MONTH_S
    return changed


def test_an_upgrade_whose_webhook_never_arrived_is_repaired_and_others_untouched(urls, sql,
                                                                                 stripe_api):
    upgraded, up_obj = _subscribe(sql, urls, "org_up", PRICE_TEAM)
    steady, steady_obj = _subscribe(sql, urls, "org_ok", PRICE_TEAM)
    steady_sub = sql.execute("SELECT * FROM stripe_subscriptions WHERE id = 'sub_org_ok'").fetchone()
    stripe_api.put(_upgraded(up_obj), steady_obj)

    response = fire(urls["cron"], PATH)
    assert response.status_code == 200, response.text
    assert response.json() == {"job": "reconcile-billing", "dry_run": False, "checked": 2,
                               "repaired": 1, "conflicts": 0, "unmatched": 0, "complete": True}
    after = _org(sql, "org_up")
    assert (after["plan"], after["subscription_status"]) == ("AGENCY", "active")
    assert after["current_period_end"].timestamp() == T0 + 2 * MONTH_S
    assert after["trial_ends_at"] == upgraded["trial_ends_at"]
    assert _org(sql, "org_ok") == steady
    assert sql.execute("SELECT * FROM stripe_subscriptions WHERE id = 'sub_org_ok'").fetchone() == steady_sub
    repairs = sql.execute("SELECT id, type, outcome, organization_id FROM stripe_events "
                          "WHERE id LIKE 'reconcile_%'").fetchall()
    assert [(r["type"], r["outcome"], r["organization_id"]) for r in repairs] == \
        [("customer.subscription.updated", "applied", upgraded["id"])]
    assert repairs[0]["id"].startswith("reconcile_sub_org_up_")
    run = sql.execute("SELECT status, complete, counts FROM cron_runs WHERE job = 'reconcile-billing'").fetchone()
    assert (run["status"], run["complete"], run["counts"]["repaired"]) == ("succeeded", True, 1)
    # Nothing has drifted any more: the next run repairs nothing.
    assert fire(urls["cron"], PATH).json()["repaired"] == 0
    # The SDK asked the way Stripe expects.
    assert stripe_api.requests[0] == ("/v1/subscriptions", {"status": "all", "limit": "100"})


def test_a_dry_run_changes_nothing_and_the_cli_then_repairs(urls, sql, stripe_api):
    _, up_obj = _subscribe(sql, urls, "org_up", PRICE_TEAM)
    stripe_api.put(_upgraded(up_obj))
    before = _snapshot(sql)
    assert fire(urls["cron"], PATH + "?dry_run=1").json()["repaired"] == 1
    dry = run_cli("stripe-reconcile", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert _last(dry.stdout) == {"job": "reconcile-billing", "dry_run": True, "checked": 1,
                                      "repaired": 1, "conflicts": 0, "unmatched": 0, "complete": True}
    assert _snapshot(sql) == before
    real = run_cli("stripe-reconcile")
    assert real.returncode == 0, real.stderr
    assert _last(real.stdout)["repaired"] == 1
    assert _org(sql, "org_up")["plan"] == "AGENCY"


def test_a_subscription_never_delivered_is_applied_and_a_conflicting_one_counted(urls, sql, stripe_api):
    _, a_obj = _subscribe(sql, urls, "org_a", PRICE_TEAM)
    sql.execute("INSERT INTO organizations (external_id, trial_ends_at) "
                "VALUES ('org_b', now() + interval '14 days'), ('org_c', now() + interval '14 days')")
    b = _org(sql, "org_b")
    # org_c checked out, but none of its subscription's events arrived.
    deliver(urls["webhook"], sample_event("checkout.session.completed", org="org_c",
                                          customer="cus_c", subscription="sub_c", created=T0))
    missed = subscription_object(subscription="sub_c", customer="cus_c", org="org_c",
                                 price=PRICE_AGENCY, status="active", created=T0 + 5,
                                 period_end=T0 + MONTH_S)
    # org_a's customer, with metadata someone edited to name org_b.
    stolen = subscription_object(subscription="sub_x", customer="cus_org_a", org="org_b",
                                 price=PRICE_AGENCY, status="active", created=T0 + 6,
                                 period_end=T0 + MONTH_S)
    stripe_api.put(a_obj, missed, stolen)
    body = fire(urls["cron"], PATH).json()
    assert {k: body[k] for k in ("checked", "repaired", "conflicts", "unmatched")} == \
        {"checked": 3, "repaired": 1, "conflicts": 1, "unmatched": 0}
    c = _org(sql, "org_c")
    assert (c["plan"], c["subscription_status"], c["stripe_subscription_id"]) == ("AGENCY", "active", "sub_c")
    assert _org(sql, "org_b") == b
    a = _org(sql, "org_a")
    assert (a["plan"], a["stripe_subscription_id"]) == ("TEAM", "sub_org_a")
    cli = run_cli("stripe-reconcile", "--dry-run")
    assert cli.returncode == 1 and _last(cli.stdout)["conflicts"] == 1  # still there


def test_every_page_is_read(urls, sql, stripe_api):
    stripe_api.put(*[subscription_object(subscription=f"sub_{i:03}", customer=f"cus_{i:03}", org=None,
                                         price=PRICE_TEAM, status="active", created=T0 + i,
                                         period_end=T0 + MONTH_S) for i in range(130)])
    body = fire(urls["cron"], PATH).json()
    assert (body["checked"], body["unmatched"], body["complete"]) == (130, 130, True)
    assert [q.get("starting_after") for _, q in stripe_api.requests] == [None, "sub_030"]
    assert sql.execute("SELECT count(*) AS n FROM stripe_subscriptions").fetchone()["n"] == 130
    # Kept unmatched, they are no drift on the next run.
    assert fire(urls["cron"], PATH).json()["unmatched"] == 0


def test_stripe_failing_is_a_clear_503_and_a_failed_run(urls, sql, stripe_api):
    stripe_api.status = 500
    response = fire(urls["cron"], PATH)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "service_unavailable"
    assert KEY not in response.text
    run = sql.execute("SELECT status FROM cron_runs WHERE job = 'reconcile-billing'").fetchone()
    assert run["status"] == "failed"


def test_without_the_cron_secret_nothing_runs(urls, sql, stripe_api):
    assert fire(urls["cron"], PATH, secret=None).status_code == 401
    assert stripe_api.requests == []


@pytest.mark.pure
def test_the_stripe_sdk_loads_only_when_a_reconciliation_runs():
    import subprocess
    import sys

    from devtools.services import ROOT

    code = ("import sys\n"
            "from devtools.serve import load_handler\n"
            "import lib.billing.reconcile, ops.cli\n"
            "load_handler('api/cron/reconcile-billing.py')\n"
            "print('stripe' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
