"""GET /api/admin/monitoring with 10,000 organizations and 100,000 vs 1,000,000 generations.

Both datasets are built in databases of their own on one Postgres server, served by the real
handler class over HTTP with a real OWNER token, and measured in alternating rounds so the
machine's noise hits both alike. Reported per dataset:
  - warm calls (the settled-day rollup filled): p50 / p95 latency;
  - cold calls (rollup dropped before each call, so the 8 weeks are aggregated from raw rows):
    what every call would cost without the rollup;
  - SQL statements and Redis commands per warm call (server-side counters: pg_stat_database
    transactions, autocommit = one per statement; Redis INFO commandstats).

    python -m bench monitoring            # 100k vs 1M (about a minute)
    python -m bench monitoring --full     # adds 5M

Postgres: BENCH_DATABASE_URL, else TEST_DATABASE_URL, else the embedded server.
"""

import importlib.util
import os
import statistics
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import redis as redis_py

from devtools import demo_data, dev_keys, services, upstash_proxy
from lib import config, db, migrate, monitoring

ROOT = Path(__file__).resolve().parent.parent
ORGS = 10_000
WARM_CALLS = 25
COLD_CALLS = 3
TOKEN = "bench-upstash-token"

# One year of history, busier recently, 5.5% fallbacks (1.5% of all failed on both
# providers), spread over every org.
_GENERATIONS = """
WITH numbered AS (SELECT id, row_number() OVER () AS k FROM organizations),
     draws AS (SELECT 1 + floor(random() * %(orgs)s)::int AS k, random() AS r,
                      random() AS t FROM generate_series(1, %(n)s))
INSERT INTO generations (organization_id, status, provider, model, input_tokens, output_tokens,
                         cost_usd, latency_ms, fallback, fallback_reason, created_at)
SELECT numbered.id,
       CASE WHEN r < 0.015 THEN 'failed' ELSE 'succeeded' END,
       CASE WHEN r < 0.055 THEN 'anthropic' ELSE 'openai' END,
       CASE WHEN r < 0.055 THEN 'claude-3-5-haiku-latest'
            WHEN r < 0.2 THEN 'gpt-4o' ELSE 'gpt-4o-mini' END,
       200 + (r * 600)::int, 300 + (t * 900)::int, r * 0.01,
       300 + ((1 - r) * 1500)::int, r < 0.055, CASE WHEN r < 0.055 THEN 'server_error' END,
       %(now)s - (t ^ 1.3) * interval '365 days' AS created_at
FROM draws JOIN numbered USING (k)
ORDER BY created_at  -- in time order, as production appends them (recent rows share pages)
"""


def _with_dbname(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def _server_url() -> str:
    return (os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
            or services.embedded_postgres(services.DATA / "pg-bench"))


def _build(server: str, generations: int) -> str:
    name = f"ascendos_monbench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_dbname(server, name)
    migrate.apply(url)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        demo_data.seed(conn, organizations=ORGS, generations=0, days=1)
        # Bulk load without indexes and constraints, then rebuild them exactly as the
        # migrations define them: a sorted build is many times faster than 1M random inserts.
        constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'generations'::regclass AND contype IN ('p', 'f')").fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'generations'"
            " AND indexname NOT IN (SELECT conname FROM pg_constraint"
            "                       WHERE conrelid = 'generations'::regclass)").fetchall()
        with conn.transaction():
            for name, _ in constraints:
                conn.execute(f'ALTER TABLE generations DROP CONSTRAINT "{name}"')
            for name, _ in indexes:
                conn.execute(f'DROP INDEX "{name}"')
            conn.execute(_GENERATIONS, {"n": generations, "orgs": ORGS,
                                        "now": datetime.now(timezone.utc)})
            for _, definition in indexes:
                conn.execute(definition)
            for name, definition in constraints:
                conn.execute(f'ALTER TABLE generations ADD CONSTRAINT "{name}" {definition}')
        conn.execute("VACUUM ANALYZE")
        # No background vacuum/analyze transactions in the statement counts below.
        for (table,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall():
            conn.execute(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)')
    print(f"  built {generations:>9,} generations in {time.perf_counter() - started:5.1f} s", flush=True)
    return url


def _drop(server: str, url: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{urlsplit(url).path[1:]}" WITH (FORCE)')


def _serve():
    spec = importlib.util.spec_from_file_location("api_admin_monitoring",
                                                  ROOT / "api" / "admin" / "monitoring.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server = ThreadingHTTPServer(("127.0.0.1", 0), module.handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/api/admin/monitoring"


def _use(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    db.close_all()
    config.reload()


def _transactions(url: str) -> tuple[int, int]:
    """(transactions, sessions) of the database so far. Autocommit: one transaction per
    statement; each new connection also runs one at start-up (counted as a session)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit + xact_rollback, sessions FROM pg_stat_database"
                           " WHERE datname = current_database()").fetchone()
        return row[0], row[1]


def _redis_commands(client) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): stats["calls"]
            for name, stats in client.info("commandstats").items()}


def _call(http: httpx.Client, endpoint: str, headers: dict) -> float:
    started = time.perf_counter()
    response = http.get(endpoint, headers=headers)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.text[:300]
    return elapsed


def _flushed_transactions(url: str) -> tuple[int, int]:
    # A backend reports its counters when it exits (or after 10 s idle): close the pool first.
    db.close_all()
    time.sleep(0.5)
    return _transactions(url)


def _count_per_call(url: str, redis_client, http, endpoint, headers, calls: int = 10):
    """(SQL statements, Redis commands by name) per warm call, from server-side counters."""
    before, redis_before = _flushed_transactions(url), _redis_commands(redis_client)
    for _ in range(calls):
        _call(http, endpoint, headers)
    after, redis_after = _flushed_transactions(url), _redis_commands(redis_client)
    # Minus connection start-ups and the counter query of `before` (its own session + SELECT).
    statements = ((after[0] - before[0]) - (after[1] - before[1]) - 1) / calls
    commands = {name: (redis_after[name] - redis_before.get(name, 0)) / calls
                for name in redis_after if redis_after[name] != redis_before.get(name, 0)
                and name != "info"}
    return statements, commands


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    sizes = [100_000, 1_000_000] + ([5_000_000] if "--full" in sys.argv else [])
    server = _server_url()
    redis_url, redis_process = services.embedded_redis()
    proxy = upstash_proxy.serve(redis_url, TOKEN)
    redis_client = redis_py.Redis.from_url(redis_url, decode_responses=True)
    for index in range(60):
        redis_client.setex(f"blocked:ip:198.51.100.{index}", 3600, "true")
    os.environ.update({"UPSTASH_REDIS_REST_URL": f"http://127.0.0.1:{proxy.server_address[1]}",
                       "UPSTASH_REDIS_REST_TOKEN": TOKEN, "CLERK_JWT_KEY": dev_keys.public_pem(),
                       "APP_ENV": "bench", "SENTRY_DSN": ""})
    print(f"building datasets ({ORGS:,} organizations each) ...", flush=True)
    urls = {size: _build(server, size) for size in sizes}
    server_http, endpoint = _serve()
    headers = {"Authorization": "Bearer " + dev_keys.mint("bench_owner", "org_bench", "OWNER")}
    warm = {size: [] for size in sizes}
    cold = {size: [] for size in sizes}
    try:
        with httpx.Client(timeout=60) as http:
            for size in sizes:  # first call settles the rollup; warms connections and imports
                _use(urls[size])
                _call(http, endpoint, headers)
            for _ in range(COLD_CALLS):
                for size in sizes:
                    _use(urls[size])
                    _call(http, endpoint, headers)  # reconnect outside the measurement
                    monitoring.forget_rollup()
                    cold[size].append(_call(http, endpoint, headers))
            for _ in range(WARM_CALLS):
                for size in sizes:
                    _use(urls[size])
                    _call(http, endpoint, headers)
                    warm[size].append(_call(http, endpoint, headers))
            counted = {}
            for size in sizes:
                _use(urls[size])
                counted[size] = _count_per_call(urls[size], redis_client, http, endpoint, headers)
    finally:
        server_http.shutdown()
        db.close_all()
        for url in urls.values():
            _drop(server, url)
        proxy.shutdown()
        redis_process.kill()

    base = sizes[0]
    print()
    print(f"| generations | rows vs {base // 1000}k | warm p50 ms | warm p95 ms | warm p50 ratio "
          f"| cold (no rollup) p50 ms | cold ratio | SQL statements/call | Redis commands/call |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for size in sizes:
        w50, w95, c50 = _p(warm[size], 50), _p(warm[size], 95), statistics.median(cold[size])
        statements, commands = counted[size]
        shown = ", ".join(f"{name} {count:g}" for name, count in sorted(commands.items()))
        shown = shown.replace("ttl ", "ttl (one pipeline) ")
        print(f"| {size:,} | {size / base:.0f}x | {w50:.1f} | {w95:.1f} | "
              f"{w50 / _p(warm[base], 50):.2f}x | {c50:.1f} | {c50 / statistics.median(cold[base]):.2f}x | "
              f"{statements:.1f} | {shown} |")
    print(f"\nwarm: {WARM_CALLS} calls per dataset, alternating; cold: {COLD_CALLS} calls with the "
          "rollup dropped first. Each call = HTTP + token verification + 4 concurrent lanes.\n"
          "Redis `get` is the maintenance flag, read once per 5 s per process.")


if __name__ == "__main__":
    main()
