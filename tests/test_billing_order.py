"""Out-of-order and duplicated Stripe deliveries end in exactly the in-order state."""

import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ops.stripe_events import sample_event, subscription_lifecycle
from tests.support.stripe_signing import PRICE_AGENCY, PRICE_TEAM, deliver

ORGS, SUBSCRIPTIONS_PER_ORG, EVENTS_PER_SUBSCRIPTION = 10, 2, 10


def _history(rng: random.Random, org: str, customer: str, subscription: str, start: int,
             price: str) -> list[tuple[dict, str | None]]:
    """Ten events of one subscription's life, one to three seconds apart, with the status
    each subscription event leaves it in."""
    return [(sample_event(event_type, org=org if event_type.startswith("checkout") else None,
                          customer=customer, subscription=subscription, subscription_created=start,
                          status=status, **kw), status)
            for event_type, status, kw in subscription_lifecycle(rng, start, price, PRICE_AGENCY)]


def _scenario(seed: int):
    """200 events for 20 subscriptions of 10 organizations (two each: the second one starts
    while the first is still running), in the order Stripe generated them."""
    rng = random.Random(seed)
    base = int(time.time()) - 100_000
    organizations, ordered, final_status = [], [], {}
    for o in range(ORGS):
        external_id = f"org_{seed}_{o}"
        organizations.append((uuid.UUID(int=o + 1), external_id))
        customer = f"cus_{seed}_{o}"
        for s in range(SUBSCRIPTIONS_PER_ORG):
            subscription = f"sub_{seed}_{o}_{s}"
            # Starts overlap across subscriptions, so many events share a second.
            start = base + o * 3 + s * rng.randint(5, 20)
            steps = _history(rng, external_id, customer, subscription, start,
                             rng.choice([PRICE_TEAM, PRICE_AGENCY]))
            assert len(steps) == EVENTS_PER_SUBSCRIPTION
            final_status[subscription] = steps[-1][1]
            ordered += [(event["created"], o, s, i, event) for i, (event, _) in enumerate(steps)]
    ordered.sort(key=lambda item: item[:4])
    return organizations, [item[-1] for item in ordered], final_status


@pytest.fixture
def url(webhook_url):
    return webhook_url


def _reset(sql, organizations) -> None:
    sql.execute("TRUNCATE stripe_events, stripe_subscriptions, organizations CASCADE")
    for org_id, external_id in organizations:
        sql.execute("INSERT INTO organizations (id, external_id, trial_ends_at, created_at) "
                    "VALUES (%s, %s, '2030-01-01T00:00:00Z', '2026-01-01T00:00:00Z')", (org_id, external_id))


def _state(sql) -> dict:
    orgs = sql.execute("SELECT * FROM organizations ORDER BY external_id").fetchall()
    subs = sql.execute("SELECT * FROM stripe_subscriptions ORDER BY id").fetchall()
    for row in orgs + subs:
        row.pop("updated_at")
    events = sql.execute("SELECT id FROM stripe_events ORDER BY id").fetchall()
    return {"organizations": orgs, "subscriptions": subs, "events": [e["id"] for e in events]}


def _differences(got: dict, want: dict) -> list:
    """(row id, column, got, want) for every differing column: a readable failure."""
    found = []
    for kind in ("organizations", "subscriptions"):
        for a, b in zip(got[kind], want[kind], strict=True):
            found += [(a["id"], k, v, b[k]) for k, v in a.items() if v != b[k]]
    return found


def _deliver_all(url, events, workers: int) -> list[int]:
    with httpx.Client() as client:
        if workers == 1:
            return [deliver(url, event, client=client).status_code for event in events]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda event: deliver(url, event, client=client).status_code, events))


@pytest.mark.parametrize("seed,workers", [(1, 1), (2, 1), (3, 1), (4, 8)],
                         ids=["seed1", "seed2", "seed3", "seed4-8-concurrent"])
def test_shuffled_events_with_duplicates_end_in_the_in_order_state(url, sql, seed, workers):
    organizations, ordered, final_status = _scenario(seed)
    assert len(ordered) == 200 and len(final_status) == 20

    _reset(sql, organizations)
    assert set(_deliver_all(url, ordered, 1)) == {200}
    in_order = _state(sql)

    rng = random.Random(seed * 1000)
    shuffled = ordered + rng.sample(ordered, 40)  # 20 % duplicates
    rng.shuffle(shuffled)
    _reset(sql, organizations)
    assert set(_deliver_all(url, shuffled, workers)) == {200}
    shuffled_state = _state(sql)
    assert _differences(shuffled_state, in_order) == []
    assert shuffled_state == in_order

    # The in-order state is the one the histories describe, not merely a repeatable one.
    assert {s["id"]: s["status"] for s in in_order["subscriptions"]} == final_status
    assert len(in_order["events"]) == 200
    for org in in_order["organizations"]:
        subs = [s for s in in_order["subscriptions"] if s["organization_id"] == org["id"]]
        entitled = [s for s in subs if s["status"] in ("trialing", "active", "past_due")]
        if entitled:
            newest = max(entitled, key=lambda s: s["created"])
            assert (org["plan"], org["stripe_subscription_id"]) == (newest["plan"], newest["id"])
        else:
            # Ended: back to TRIAL, the trial over since the first subscription began.
            assert org["plan"] == "TRIAL" and org["trial_ends_at"] == min(s["created"] for s in subs)
