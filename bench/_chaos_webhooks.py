"""Stripe webhooks in the chaos run (bench.chaos): signed events for a set of organizations,
delivered concurrently with duplicates and out of order while the faults run, re-delivered
like Stripe does until each got a 2xx, then checked for exactly-once and against a replay.

The scenario: each billed organization has two subscriptions (more in a longer run) on one
customer. The first (every other one) is created through our checkout, so its session and
its subscription objects carry `metadata.organization_id`; the second was started elsewhere
(no metadata), so only the customer's link ties it to the organization. Each subscription lives through ten events
(checkout, created `incomplete`, active, invoice paid, invoice failed, past_due, paid again,
a price change, ..., and one of several endings), a second or three apart, and each
subscription starts while the previous one still runs, so many events share a second. A few
events of a type the ledger ignores are mixed in.

Delivery: every event once, a quarter of them again (some right after the original, so two
workers send them at the same time), in a shuffled order, spread over the fault phase by
four workers. A delivery without a 2xx is sent again after a short backoff (Stripe retries);
once the faults stop, the drain re-delivers every event not yet acknowledged until each got
a 2xx, within DRAIN_S.
"""

import heapq
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import psycopg

from lib import config, db
from lib.billing import events as ev, ledger, webhook
from ops.stripe_events import sample_event, signature_header, subscription_lifecycle

SECRET = "whsec_chaos_0123456789abcdef"
PRICE_TEAM, PRICE_AGENCY = "price_chaos_team", "price_chaos_agency"
ENV = {"STRIPE_WEBHOOK_SECRET": SECRET, "STRIPE_PRICE_TEAM": PRICE_TEAM,
       "STRIPE_PRICE_AGENCY": PRICE_AGENCY}
ROUTE = "/api/webhooks/stripe"
WORKERS = 4
DRAIN_S = 60
DUPLICATES = 0.25
IGNORED_TYPE = "payment_intent.created"

# The outcomes each kind of event may be recorded with, whatever the delivery order: an event
# older than the stored state is `stale`; one that arrives before anything tied its
# subscription or customer to the organization is `unmatched` (kept, adopted by the link).
# Never `conflict`: no event of the scenario names another organization.
_BY_METADATA = {"applied", "stale"}
_BY_CUSTOMER = {"applied", "stale", "unmatched"}

# The columns the ledger owns, compared between the chaos database and the replay.
ORG_COLUMNS = ("plan", "trial_ends_at", "stripe_customer_id", "stripe_customer_linked_at",
               "stripe_subscription_id", "subscription_status", "current_period_end",
               "cancel_at_period_end")
SUBSCRIPTION_COLUMNS = ("customer_id", "organization_id", "created", "price_id", "plan",
                        "status", "current_period_end", "cancel_at_period_end",
                        "snapshot_status", "snapshot_period_end", "snapshot_event_id",
                        "snapshot_event_created", "invoice_outcome", "invoice_period_end",
                        "invoice_event_id", "invoice_event_created", "ever_active")


@dataclass
class Event:
    """One Stripe event of the scenario: its payload and the outcomes it may be recorded with."""

    order: int  # position in the order Stripe generated them (ties of `created` keep it)
    payload: dict
    allowed: set[str]

    @property
    def id(self) -> str:
        return self.payload["id"]


def organizations(count: int) -> list[tuple[uuid.UUID, str]]:
    """(id, external id) of the chaos run's organizations (the generate traffic's too)."""
    return [(uuid.UUID(int=0xC4A05 * 1000 + i), f"org_chaos_{i}") for i in range(count)]


def create_organizations(url: str, orgs: list[tuple[uuid.UUID, str]], trial_ends_at) -> None:
    """The organizations as first contact would have made them, with fixed ids and trial end,
    so that the replay database can hold exactly the same rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        for org_id, external_id in orgs:
            conn.execute("INSERT INTO organizations (id, external_id, plan, trial_ends_at) "
                         "VALUES (%s, %s, 'TRIAL', %s)", (org_id, external_id, trial_ends_at))


def scenario(seed: int, billed: list[str], base: int, subscriptions: int = 2) -> list[Event]:
    """Every event for the `billed` organizations (external ids), in Stripe's order, with
    `subscriptions` per organization (every other one through our checkout)."""
    rng = random.Random(seed)
    items: list[tuple[int, int, int, dict, set[str]]] = []
    for o, org in enumerate(billed):
        customer = f"cus_chaos_{o}"
        for s in range(subscriptions):
            start = base + o * 3 + s * rng.randint(5, 20)
            price = rng.choice([PRICE_TEAM, PRICE_AGENCY])
            for i, (event, allowed) in enumerate(_history(rng, org, customer, f"sub_chaos_{o}_{s}",
                                                          start, price, metadata=s % 2 == 0)):
                items.append((event["created"], o * subscriptions + s, i, event, allowed))
        for i in range(2):
            event = sample_event(IGNORED_TYPE, created=base + rng.randint(0, 60))
            items.append((event["created"], 10_000 + o, i, event, {"ignored"}))
    items.sort(key=lambda item: item[:3])
    return [Event(n, item[3], item[4]) for n, item in enumerate(items)]


def _history(rng: random.Random, org: str, customer: str, subscription: str, start: int,
             price: str, metadata: bool) -> list[tuple[dict, set[str]]]:
    """One subscription's events (ops.stripe_events.subscription_lifecycle), each with the
    outcomes the ledger may record for it: through our checkout (`metadata`), the checkout
    and the subscription's events name the org; without, only the customer link ties them."""
    steps: list[tuple[dict, set[str]]] = []
    for event_type, status, kw in subscription_lifecycle(rng, start, price, PRICE_AGENCY,
                                                         checkout=metadata):
        named = event_type == ev.CHECKOUT_TYPE or (metadata and event_type in ev.SUBSCRIPTION_TYPES)
        allowed = {"applied"} if event_type == ev.CHECKOUT_TYPE else \
            _BY_METADATA if named else _BY_CUSTOMER
        steps.append((sample_event(event_type, org=org if named else None, customer=customer,
                                   subscription=subscription, subscription_created=start,
                                   status=status, **kw), allowed))
    return steps


def _body(event: Event) -> bytes:
    return json.dumps(event.payload, indent=2).encode()  # Stripe sends pretty-printed JSON


@dataclass
class Deliveries:
    """What was sent and what came back, per event id."""

    events: list[Event]
    answers: dict[str, list[tuple[object, dict | None]]] = field(default_factory=dict)
    acknowledged: set[str] = field(default_factory=set)
    figures: Counter = field(default_factory=lambda: Counter(
        {"deliveries": 0, "duplicates sent": 0, "re-deliveries (no 2xx)": 0, "drain deliveries": 0}))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, event: Event, status, answer: dict | None) -> bool:
        with self.lock:
            self.answers.setdefault(event.id, []).append((status, answer))
            self.figures["deliveries"] += 1
            if isinstance(status, int) and 200 <= status < 300:
                self.acknowledged.add(event.id)
                return True
            return False


def _deliver(client: httpx.Client, base_url: str, event: Event) -> tuple[object, dict | None]:
    """POST the event, signed now; (status, JSON answer). The status is `500 <code>` for a
    designed 5xx (its error code named) and a string for a connection that failed."""
    body = _body(event)
    try:
        response = client.post(base_url + ROUTE, content=body, headers={
            "Content-Type": "application/json; charset=utf-8", "User-Agent": "Stripe/1.0",
            "Stripe-Signature": signature_header(body, SECRET)})
    except httpx.HTTPError:  # the function was killed mid-request, or is restarting
        return "connection lost (process killed)", None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code >= 500 and isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return f"{response.status_code} {answer['error'].get('code')}", answer
    return response.status_code, answer


class Sender:
    """Delivers the scenario over the fault phase (`run`, until `stop`), then drains."""

    def __init__(self, base_url: str | Callable[[], str], events: list[Event], seconds: float,
                 seed: int):
        self._base_url = base_url  # a callable when the function moves (killed, restarted)
        self.deliveries = Deliveries(events)
        rng = random.Random(seed)
        order = list(events) + rng.sample(events, int(len(events) * DUPLICATES))
        rng.shuffle(order)
        for event in rng.sample(events, 10):  # the same event twice at once
            at = rng.randrange(len(order))
            order[at:at] = [event, event]
        self.deliveries.figures["duplicates sent"] = len(order) - len(events)
        spread = max(1.0, seconds * 0.9)
        self.queue = [(spread * i / len(order), i, event) for i, event in enumerate(order)]
        heapq.heapify(self.queue)
        self.lock = threading.Lock()
        self.seq = len(order)

    @property
    def base_url(self) -> str:
        return self._base_url() if callable(self._base_url) else self._base_url

    def _next(self, started: float, stop: threading.Event) -> Event | None:
        while not stop.is_set():
            with self.lock:
                if self.queue and self.queue[0][0] <= time.perf_counter() - started:
                    return heapq.heappop(self.queue)[2]
            stop.wait(0.02)
        return None

    def _retry_later(self, started: float, event: Event) -> None:
        with self.lock:
            self.seq += 1
            due = time.perf_counter() - started + random.uniform(0.3, 1.5)
            heapq.heappush(self.queue, (due, self.seq, event))
            self.deliveries.figures["re-deliveries (no 2xx)"] += 1

    def worker(self, started: float, stop: threading.Event, record_status) -> None:
        """Deliver what is due until `stop`; `record_status("webhook", status)` per answer."""
        with httpx.Client(timeout=30) as client:
            while (event := self._next(started, stop)) is not None:
                status, answer = _deliver(client, self.base_url, event)
                record_status("webhook", status)
                if not self.deliveries.record(event, status, answer):
                    self._retry_later(started, event)

    def drain(self, record_status, deadline_s: float = DRAIN_S) -> float:
        """Re-deliver every event without a 2xx yet, until each has one or `deadline_s`
        passed (what is left unacknowledged then fails the run's drain invariant). Returns
        the drain's seconds."""
        started = time.perf_counter()
        with httpx.Client(timeout=30) as client:
            while time.perf_counter() - started < deadline_s:
                missing = [e for e in self.deliveries.events if e.id not in self.deliveries.acknowledged]
                if not missing:
                    break
                for event in missing:
                    status, answer = _deliver(client, self.base_url, event)
                    record_status("webhook", status)
                    self.deliveries.record(event, status, answer)
                    self.deliveries.figures["drain deliveries"] += 1
                time.sleep(0.2)
        return time.perf_counter() - started


def exactly_once(url: str, deliveries: Deliveries) -> tuple[str, bool, Counter]:
    """Each sent event id is recorded once in stripe_events with an outcome its kind allows,
    nothing else is recorded, and no event was answered as applied (any outcome but
    `duplicate`) by two deliveries. Returns (observed, ok, outcomes)."""
    with psycopg.connect(url, autocommit=True) as conn:
        recorded: dict = dict(conn.execute("SELECT id, outcome FROM stripe_events").fetchall())
    outcomes = Counter(recorded.values())
    missing = [e.id for e in deliveries.events if e.id not in recorded]
    unexpected = sorted(set(recorded) - {e.id for e in deliveries.events})
    wrong = [(e.id, recorded[e.id]) for e in deliveries.events
             if e.id in recorded and recorded[e.id] not in e.allowed]
    twice, disagree = [], []
    for event in deliveries.events:
        if event.payload["type"] not in ev.HANDLED_TYPES:
            continue  # the route answers `ignored` on every delivery of those, first or not
        firsts = [answer.get("outcome") for status, answer in deliveries.answers.get(event.id, [])
                  if status == 200 and isinstance(answer, dict) and not answer.get("duplicate")]
        if len(firsts) > 1:
            twice.append(event.id)
        if firsts and event.id in recorded and firsts[0] != recorded[event.id]:
            disagree.append((event.id, firsts[0], recorded[event.id]))
    problems = [f"{len(missing)} not recorded", f"{len(unexpected)} unknown ids recorded",
                f"{len(wrong)} with an outcome outside their set", f"{len(twice)} applied twice",
                f"{len(disagree)} recorded unlike their answer"]
    ok = not (missing or unexpected or wrong or twice or disagree)
    observed = f"{len(deliveries.events) - len(missing)} of {len(deliveries.events)} once" if ok else \
        "; ".join(p for p in problems if not p.startswith("0 ")) + \
        f" (e.g. {(missing + unexpected + wrong + twice + disagree)[:3]})"
    return observed, ok, outcomes


def replay(url: str, events: list[Event]) -> None:
    """Apply `events` in `created` order (Stripe's order within a second), one at a time,
    through what the route calls (webhook.read_event, then ledger.apply_event), to the
    database at `url`. Nothing else may use lib.db meanwhile: the process's settings point
    at `url` for the duration."""
    import os

    saved = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    config.reload()
    try:
        for event in sorted(events, key=lambda e: (e.payload["created"], e.order)):
            body = _body(event)
            ledger.apply_event(webhook.read_event(body, signature_header(body, SECRET)))
    finally:
        db.close_all()
        if saved is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved
        config.reload()


def _billing_state(url: str, external_ids: list[str]) -> dict:
    """{("organization", external id) or ("subscription", id) or ("customer", id): {column:
    value}} for the ledger's rows of these organizations."""
    state: dict = {}
    with psycopg.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        for row in conn.execute(f"SELECT external_id, {', '.join(ORG_COLUMNS)} FROM organizations "
                                "WHERE external_id = ANY(%s)", (external_ids,)):
            state[("organization", row.pop("external_id"))] = row
        for row in conn.execute(f"SELECT s.id, {', '.join('s.' + c for c in SUBSCRIPTION_COLUMNS)} "
                                "FROM stripe_subscriptions s"):
            state[("subscription", row.pop("id"))] = row
        for row in conn.execute("SELECT id, organization_id, linked_at, linked_by_event "
                                "FROM stripe_customers"):
            state[("customer", row.pop("id"))] = row
    return state


def compare_with_replay(chaos_url: str, replay_url: str, external_ids: list[str]) -> list[str]:
    """Every (row, column) where the chaos database differs from the in-order replay."""
    got, want = _billing_state(chaos_url, external_ids), _billing_state(replay_url, external_ids)
    found = [f"{kind} {key}: only in the {'chaos run' if (kind, key) in got else 'replay'}"
             for kind, key in sorted(set(got) ^ set(want))]
    for row in sorted(set(got) & set(want)):
        found += [f"{row[0]} {row[1]}.{column}: {value!r} (replay {want[row][column]!r})"
                  for column, value in got[row].items() if value != want[row][column]]
    return found
