"""Stripe webhook throughput: verified events per second, sequential, and the Postgres round
trips each one costs, for new events, redeliveries (duplicates), stale and unknown events.

    python -m bench billing            # 400 events per row (~30 s)
    python -m bench billing --full     # 4000 events per row

Postgres: BENCH_DATABASE_URL, else TEST_DATABASE_URL, else the embedded server; a scratch
database is created, migrated and dropped. Round trips are counted by a TCP proxy between
the app and Postgres (a round trip = the client speaking again after the server answered).
"""

import json
import sys
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from psycopg.conninfo import conninfo_to_dict

from devtools import services
from lib import config, db, migrate
from lib.billing import events, ledger
from lib.billing.signature import verify_signature
from ops.stripe_events import sample_event, signature_header
from devtools.serve import serve_in_process

from bench._postgres_wire import RoundTripCounter

SECRET = "whsec_bench_0123456789"
PRICE = "price_bench_team"


def _scratch_database(server_url: str) -> tuple[str, str]:
    name = f"ascendos_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    if "host=/" in server_url or urlsplit(server_url).hostname is None:
        params = conninfo_to_dict(server_url)
        params["dbname"] = name
        url = psycopg.conninfo.make_conninfo(**params)
    else:
        url = urlunsplit(urlsplit(server_url)._replace(path="/" + name))
    migrate.apply(url)
    return name, url


def _signed(event: dict) -> tuple[bytes, str]:
    body = json.dumps(event, indent=2).encode()
    return body, signature_header(body, SECRET)


def _events(kind: str, n: int, start: int) -> list[tuple[bytes, str]]:
    """`n` signed events of one kind for subscriptions of org_bench_0..9."""
    now = int(time.time())
    made = []
    for i in range(n):
        org = i % 10
        common = {"customer": f"cus_bench_{org}", "subscription": f"sub_bench_{org}", "price": PRICE,
                  "subscription_created": now - 10_000}
        if kind == "new":
            event = sample_event("customer.subscription.updated", created=start + i, **common)
        elif kind == "stale":
            event = sample_event("customer.subscription.updated", created=start - 5000 - i, **common)
        elif kind == "invoice":
            event = sample_event("invoice.paid", created=start + i, **common)
        else:
            event = sample_event("payment_intent.created", created=start + i)
        made.append(_signed(event))
    return made


def _verify_and_apply(body: bytes, header: str) -> str:
    """What lib.routes.stripe does, minus the HTTP layer."""
    payload = verify_signature(body, header, config.settings().stripe_webhook_secrets)
    return ledger.apply_event(events.parse_event(payload))


def _measure(label, items, counter, run) -> dict:
    before = counter.turns
    started = time.perf_counter()
    outcomes = {}
    for body, header in items:
        outcome = run(body, header)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    elapsed = time.perf_counter() - started
    return {"row": label, "n": len(items), "per_s": len(items) / elapsed,
            "ms": elapsed * 1000 / len(items), "rt": (counter.turns - before) / len(items),
            "outcomes": ",".join(f"{k}:{v}" for k, v in sorted(outcomes.items()))}


def main() -> None:
    n = 4000 if "--full" in sys.argv else 400
    import os

    server_url = (os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
                  or services.embedded_postgres(services.DATA / "pg-bench"))
    name, url = _scratch_database(server_url)
    params = conninfo_to_dict(url)
    counter = RoundTripCounter(params)
    auth = params.get("user", "postgres") + (f":{params['password']}" if params.get("password") else "")
    proxied = f"postgresql://{auth}@127.0.0.1:{counter.port}/{params['dbname']}"
    saved = {k: os.environ.get(k) for k in ("DATABASE_URL", "STRIPE_WEBHOOK_SECRET", "STRIPE_PRICE_TEAM")}
    os.environ.update(DATABASE_URL=proxied, STRIPE_WEBHOOK_SECRET=SECRET, STRIPE_PRICE_TEAM=PRICE)
    config.reload()
    rows = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for org in range(10):
                conn.execute("INSERT INTO organizations (external_id, stripe_customer_id) VALUES (%s, %s)",
                             (f"org_bench_{org}", f"cus_bench_{org}"))
        db.ping()  # open the pooled connection outside the measurements
        start = int(time.time()) - 3 * n
        verify_only = _events("unknown", n, start)
        began = time.perf_counter()
        for body, header in verify_only:
            verify_signature(body, header, (SECRET,))
        elapsed = time.perf_counter() - began
        rows.append({"row": "signature check only (no database)", "n": n, "per_s": n / elapsed,
                     "ms": elapsed * 1000 / n, "rt": 0.0, "outcomes": "-"})
        new = _events("new", n, start)
        rows.append(_measure("new subscription events", new, counter, _verify_and_apply))
        rows.append(_measure("duplicates (the same events again)", new, counter, _verify_and_apply))
        rows.append(_measure("stale (older than stored)", _events("stale", n, start), counter,
                             _verify_and_apply))
        rows.append(_measure("new invoice.paid events", _events("invoice", n, start), counter,
                             _verify_and_apply))
        rows.append(_measure("unknown event types", _events("unknown", n, start + n), counter,
                             _verify_and_apply))
        with serve_in_process("api/webhooks/stripe.py") as base, httpx.Client() as client:
            def over_http(body, header):
                answer = client.post(base + "/api/webhooks/stripe", content=body,
                                     headers={"Stripe-Signature": header}).json()
                return answer.get("outcome") or ("duplicate" if answer.get("duplicate") else "ignored")

            http_new = _events("new", n, start + 2 * n)
            rows.append(_measure("HTTP: new subscription events", http_new, counter, over_http))
            rows.append(_measure("HTTP: duplicates", http_new, counter, over_http))
    finally:
        db.close_all()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        config.reload()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print(f"{'sequential, one connection':<38} {'events':>6} {'events/s':>9} {'ms/event':>9} "
          f"{'PG round trips/event':>21}  outcomes")
    for row in rows:
        print(f"{row['row']:<38} {row['n']:>6} {row['per_s']:>9.0f} {row['ms']:>9.2f} "
              f"{row['rt']:>21.2f}  {row['outcomes']}")
    new_row, dup_row = rows[1], rows[2]
    print(f"\nduplicates vs new: {dup_row['per_s'] / new_row['per_s']:.1f}x the rate, "
          f"{dup_row['rt']:.0f} vs {new_row['rt']:.0f} round trips")
