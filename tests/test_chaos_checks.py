"""The chaos run's webhook and purge parts on the real stack, one scenario at a time: Stripe's
retries and the drain deliver every event exactly once even when Postgres was down for the
first deliveries; the replay reproduces the delivered billing state; the purge conserves
every row while backends are killed under it. Each check is also shown to fail on the
violation it exists for (a missing or doubly applied event, a differing column, a row gone
without its rollup), so none of them passes vacuously."""

import threading
import time
from collections import Counter
from datetime import datetime, timezone

import psycopg
import pytest

from bench import _chaos_purge as purge_history, _chaos_webhooks as webhooks
from devtools.serve import serve_runtime_layout
from lib import config, db
from lib.errors import DatabaseUnavailable
from lib.jobs import purge
from tests.conftest import _with_dbname, migrated_database

TRIAL_ENDS = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def billing(monkeypatch, database_url):
    """The chaos run's billing settings and organizations; yields (orgs, events)."""
    for key, value in webhooks.ENV.items():
        monkeypatch.setenv(key, value)
    config.reload()
    orgs = webhooks.organizations(3)
    webhooks.create_organizations(database_url, orgs, TRIAL_ENDS)
    events = webhooks.scenario(5, [external_id for _, external_id in orgs],
                               int(time.time()) - 50_000)
    yield orgs, events


@pytest.fixture
def replay_url(postgres_server_url):
    with migrated_database(postgres_server_url, "ascendos_test_replay") as url:
        yield url


def _counting(statuses: Counter):
    """A `record_status` for the sender that counts statuses."""
    return lambda kind, status: statuses.update([status])


def _deliver_for(sender: webhooks.Sender, seconds: float, statuses: Counter) -> None:
    """Run the sender's workers for `seconds` (the fault phase), then stop them."""
    stop, started = threading.Event(), time.perf_counter()
    threads = [threading.Thread(target=sender.worker, args=(started, stop, _counting(statuses)))
               for _ in range(webhooks.WORKERS)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(30)


def test_events_refused_while_postgres_was_down_are_redelivered_until_applied_once(
        billing, database_url, postgres_server_url, monkeypatch):
    _, events = billing
    with serve_runtime_layout("api/webhooks/stripe.py") as url:
        statuses: Counter = Counter()
        sender = webhooks.Sender(url, events, seconds=1, seed=1)
        monkeypatch.setenv("DATABASE_URL", _with_dbname(postgres_server_url, "ascendos_no_such_db"))
        config.reload()
        _deliver_for(sender, 2, statuses)
        sender.drain(_counting(statuses), deadline_s=0.5)
        observed, ok, _ = webhooks.exactly_once(database_url, sender.deliveries)
        # Postgres was unreachable: every answer is the designed 500, nothing is recorded,
        # and the bounded drain gives up rather than hang.
        assert set(statuses) == {"500 webhook_not_applied"}
        assert not ok and f"{len(events)} not recorded" in observed
        assert sender.deliveries.figures["re-deliveries (no 2xx)"] > 0
        assert not sender.deliveries.acknowledged

        monkeypatch.setenv("DATABASE_URL", database_url)
        config.reload()
        sender.drain(_counting(statuses))
    observed, ok, outcomes = webhooks.exactly_once(database_url, sender.deliveries)
    assert ok, observed
    assert sender.deliveries.acknowledged == {e.id for e in events}
    assert sum(outcomes.values()) == len(events) and outcomes["conflict"] == 0


def test_the_in_order_replay_reproduces_shuffled_concurrent_deliveries(
        billing, database_url, replay_url, sql):
    orgs, events = billing
    with serve_runtime_layout("api/webhooks/stripe.py") as url:
        statuses: Counter = Counter()
        sender = webhooks.Sender(url, events, seconds=2, seed=2)
        _deliver_for(sender, 3, statuses)
        sender.drain(_counting(statuses))
    assert set(statuses) == {200}  # no faults here
    assert sender.deliveries.figures["duplicates sent"] > 0
    observed, ok, _ = webhooks.exactly_once(database_url, sender.deliveries)
    assert ok, observed

    webhooks.create_organizations(replay_url, orgs, TRIAL_ENDS)
    webhooks.replay(replay_url, events)
    external_ids = [external_id for _, external_id in orgs]
    assert webhooks.compare_with_replay(database_url, replay_url, external_ids) == []
    # Both subscriptions of each org ended up bound to it, the one without metadata too
    # (adopted when its customer was linked), whatever the order they came in.
    bound = sql("SELECT id, organization_id IS NOT NULL FROM stripe_subscriptions ORDER BY id")
    assert bound == [(f"sub_chaos_{o}_{s}", True) for o in range(3) for s in range(2)]

    # Each column that differs is named, with both values.
    sql.execute("UPDATE organizations SET trial_ends_at = trial_ends_at + interval '1 day' "
                "WHERE external_id = %s", (external_ids[0],))
    sql.execute("UPDATE stripe_subscriptions SET snapshot_event_id = 'evt_other' WHERE id = 'sub_chaos_1_0'")
    differences = webhooks.compare_with_replay(database_url, replay_url, external_ids)
    assert len(differences) == 2
    assert any(d.startswith(f"organization {external_ids[0]}.trial_ends_at:") for d in differences)
    assert any(d.startswith("subscription sub_chaos_1_0.snapshot_event_id: 'evt_other'")
               for d in differences)


def test_exactly_once_reports_a_missing_event_a_wrong_outcome_and_a_second_application(
        billing, database_url, sql):
    _, events = billing
    with serve_runtime_layout("api/webhooks/stripe.py") as url:
        sender = webhooks.Sender(url, events, seconds=1, seed=3)
        sender.drain(lambda kind, status: None)
    assert webhooks.exactly_once(database_url, sender.deliveries)[1]
    checkout = next(e for e in events if e.payload["type"] == "checkout.session.completed")
    invoice = next(e for e in events if e.payload["type"] == "invoice.paid")
    sql.execute("DELETE FROM stripe_events WHERE id = %s", (events[-1].id,))
    sql.execute("UPDATE stripe_events SET outcome = 'conflict' WHERE id = %s", (checkout.id,))
    # a second delivery answered as a first application (what a lost exactly-once would say)
    sender.deliveries.answers[invoice.id] += [(200, {"received": True, "outcome": "applied"})] * 2
    observed, ok, _ = webhooks.exactly_once(database_url, sender.deliveries)
    assert not ok
    for problem in ("1 not recorded", "1 with an outcome outside their set", "1 applied twice"):
        assert problem in observed, observed


def test_purge_conserves_every_row_while_its_backends_are_killed(database_url, sql, monkeypatch):
    monkeypatch.setenv("PURGE_BATCH_SIZE", "25")
    config.reload()
    retention = {plan: config.settings().retention_days[plan] for plan in config.PLANS}
    expected = purge_history.seed(database_url, retention, expired_per_plan=300, kept_per_plan=40)
    before = purge_history.snapshot(database_url)

    stop, killed = threading.Event(), Counter()

    def kill_backends() -> None:
        with psycopg.connect(database_url, autocommit=True) as admin:
            while not stop.wait(0.02):
                killed["backends"] += admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                    "application_name = 'ascendos' AND datname = current_database()").fetchone()[0]

    killer = threading.Thread(target=kill_backends)
    killer.start()
    try:
        for _ in range(200):
            try:
                if purge.run().get("complete") is True:
                    break
            except DatabaseUnavailable:
                killed["runs failed"] += 1
    finally:
        stop.set()
        killer.join()
    db.close_all()
    checks = purge_history.check(database_url, before, expected, retention)
    assert [ok for _, _, ok in checks] == [True] * 3, checks
    assert checks[0][1] == f"{3 * 3 * 340} = {3 * 3 * 300} + {3 * 3 * 40}"

    # A rollup that counts one token too many: only the sums' check fails, naming it.
    org = purge_history.organizations()[0][0]
    sql.execute("UPDATE usage_daily SET input_tokens = input_tokens + 1 "
                "WHERE (day, organization_id, provider, model) = (SELECT day, organization_id, "
                "provider, model FROM usage_daily WHERE organization_id = %s AND provider = 'openai' "
                "LIMIT 1)", (org,))
    checks = purge_history.check(database_url, before, expected, retention)
    assert [ok for _, _, ok in checks] == [True, True, False], checks
    assert checks[2][1].startswith("1 mismatches") and "openai input_tokens" in checks[2][1], checks

    # A kept row deleted without a rollup: conservation and the kept count fail.
    sql.execute("DELETE FROM generations WHERE id = (SELECT id FROM generations "
                "WHERE organization_id = %s LIMIT 1)", (org,))
    conserved, deleted_expired, _ = purge_history.check(database_url, before, expected, retention)
    assert not conserved[2] and conserved[1].startswith(f"{org}: 1020 before"), conserved
    assert not deleted_expired[2] and f"kept {3 * 40 - 1}, expected {3 * 40}" in deleted_expired[1]
