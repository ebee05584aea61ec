"""Purge of expired generations: rows/s, the longest single batch, and how long a concurrent
INSERT into generations waited while the purge ran (it must never wait for more than one batch).

    python -m bench purge            # 200,000 expired rows per batch size (about a minute)
    python -m bench purge --full     # 1,000,000 expired rows

Each measurement runs in a fresh database on the server of BENCH_DATABASE_URL, else
TEST_DATABASE_URL, else the embedded Postgres; the rows are seeded with generate_series
(plus 10% inside their retention window, which must survive), then `lib.jobs.purge.purge` runs
while another connection inserts generations rows back to back.
"""

import os
import statistics
import sys
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg

from devtools import services
from lib import config, db, migrate
from lib.jobs import cron, purge

ORGS = 200
BATCH_SIZES = (1000, 5000, 20000)

_SEED = """
WITH o AS (SELECT array_agg(id ORDER BY id) AS ids FROM organizations)
INSERT INTO generations (organization_id, status, provider, model, input_tokens, output_tokens,
                         cost_usd, created_at, completed_at)
SELECT o.ids[1 + i %% %(orgs)s],
       CASE WHEN i %% 10 = 0 THEN 'failed' WHEN i %% 97 = 0 THEN 'pending' ELSE 'succeeded' END,
       CASE WHEN i %% 3 = 0 THEN 'anthropic' ELSE 'openai' END,
       CASE WHEN i %% 3 = 0 THEN 'claude-3-5-haiku-latest' ELSE 'gpt-4o-mini' END,
       i %% 700, i %% 900, (i %% 1000) / 1e6,
       now() - interval '31 days' - i * interval '2 seconds', NULL
FROM o, generate_series(1, %(expired)s) AS i
"""
_SEED_KEPT = """
WITH o AS (SELECT array_agg(id ORDER BY id) AS ids FROM organizations)
INSERT INTO generations (organization_id, status, input_tokens, created_at)
SELECT o.ids[1 + i %% %(orgs)s], 'succeeded', 1, now() - interval '29 days' + i * interval '1 second'
FROM o, generate_series(1, %(kept)s) AS i
"""
_EXPECTED = """
SELECT count(*) FILTER (WHERE status <> 'pending') AS requests, sum(input_tokens) AS input_tokens,
       sum(cost_usd) AS cost_usd
FROM generations WHERE created_at < now() - interval '30 days'
"""
_ROLLED_UP = ("SELECT sum(requests) AS requests, sum(input_tokens) AS input_tokens, sum(cost_usd) AS cost_usd "
              "FROM usage_daily")


def _server_url() -> str:
    return (os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
            or services.embedded_postgres(services.DATA / "pg-bench"))


def _database(server: str) -> tuple[str, str]:
    name = f"ascendos_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(server)
    url = urlunsplit(parts._replace(path="/" + name))
    migrate.apply(url)
    return name, url


def _drop(server: str, name: str) -> None:
    db.close_all()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _seed(url: str, expired: int) -> tuple[float, dict]:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO organizations (external_id, plan, trial_ends_at) "
                     "SELECT 'org_' || i, 'TRIAL', now() + interval '5 days' FROM generate_series(1, %s) i",
                     (ORGS,))
        conn.execute(_SEED, {"orgs": ORGS, "expired": expired})
        conn.execute(_SEED_KEPT, {"orgs": ORGS, "kept": expired // 10})
        conn.execute("VACUUM ANALYZE")  # the statistics autovacuum keeps in production
        expected = conn.execute(_EXPECTED).fetchone()
    return time.perf_counter() - started, expected


class Inserter(threading.Thread):
    """Inserts one generations row at a time, as the generate route would, timing each."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.waits, self.stop = url, [], threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            org = conn.execute("SELECT id FROM organizations LIMIT 1").fetchone()[0]
            while not self.stop.is_set():
                started = time.perf_counter()
                conn.execute("INSERT INTO generations (organization_id, status, input_tokens) "
                             "VALUES (%s, 'succeeded', 1)", (org,))
                self.waits.append(time.perf_counter() - started)


def _inserts_during(url: str, seconds: float | None = None, work=None) -> tuple[list[float], object]:
    inserter = Inserter(url)
    inserter.start()
    try:
        result = work() if work else time.sleep(seconds)
    finally:
        inserter.stop.set()
        inserter.join()
    return inserter.waits, result


def measure(server: str, expired: int, batch_size: int) -> dict:
    name, url = _database(server)
    try:
        seed_s, expected = _seed(url, expired)
        os.environ.update({"DATABASE_URL": url, "PURGE_BATCH_SIZE": str(batch_size),
                           "CRON_TIME_BUDGET_S": "800"})
        config.reload()
        baseline, _ = _inserts_during(url, seconds=1.0)
        started = time.perf_counter()
        waits, result = _inserts_during(url, work=lambda: purge.purge(cron.Budget(800)))
        elapsed = time.perf_counter() - started
        with psycopg.connect(url) as conn:
            rolled = conn.execute(_ROLLED_UP).fetchone()
            kept = conn.execute("SELECT count(*) FROM generations WHERE input_tokens = 1").fetchone()[0]
        deleted = result["deleted"]["generations"]
        return {
            "batch": batch_size, "expired": expired, "deleted": deleted, "seed_s": seed_s,
            "purge_s": elapsed, "rows_per_s": deleted / elapsed, "batches": result["batches"],
            "longest_batch_ms": result["longest_batch_ms"],
            "insert_p50_base_ms": statistics.median(baseline) * 1000,
            "insert_p50_ms": statistics.median(waits) * 1000,
            "insert_max_ms": max(waits) * 1000, "inserts": len(waits),
            "rollup_ok": tuple(rolled) == tuple(expected) and result["complete"],
            "kept_ok": kept >= expired // 10,
        }
    finally:
        _drop(server, name)


def main() -> None:
    full = "--full" in sys.argv
    expired = 1_000_000 if full else 200_000
    sizes = BATCH_SIZES if full or "--sizes" in sys.argv else (5000,) if "--quick" in sys.argv else (1000, 5000)
    server = _server_url()
    saved = {k: os.environ.get(k) for k in ("DATABASE_URL", "PURGE_BATCH_SIZE", "CRON_TIME_BUDGET_S")}
    try:
        results = [measure(server, expired, size) for size in sizes]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        config.reload()
    budget = 45.0
    print(f"purge of {expired:,} expired generations (+{expired // 10:,} inside retention), "
          f"{ORGS} orgs, one concurrent inserter\n")
    header = ("batch", "rows/s", "purge s", "batches", "longest batch ms", "insert p50 ms (idle)",
              "insert p50 ms", "insert max ms", "max insert / longest batch", "runs of 45 s", "rollup = deleted")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        print(f"| {r['batch']:,} | {r['rows_per_s']:,.0f} | {r['purge_s']:.1f} | {r['batches']} | "
              f"{r['longest_batch_ms']:.0f} | {r['insert_p50_base_ms']:.2f} | {r['insert_p50_ms']:.2f} | "
              f"{r['insert_max_ms']:.1f} | {r['insert_max_ms'] / r['longest_batch_ms']:.2f} | "
              f"{max(1, -(-r['purge_s'] // budget)):.0f} | "
              f"{'yes' if r['rollup_ok'] and r['kept_ok'] else 'NO'} |")
    print("\nmax insert / longest batch < 1 means no INSERT ever waited as long as one batch: the "
          "purge's row locks are on rows being deleted, never on new rows or the organizations.")
