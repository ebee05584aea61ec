"""POST /api/generate against a local instant-answer OpenAI server, side by side with the
bare SDK call to the same server (p50 added ms, also without the local Upstash proxy's own
server time, which production's Upstash doesn't spend in this machine's CPU); streaming:
time to the first delta through the route against the bare SDK's streaming call, with a
provider whose first token comes after 100 ms, and how the deltas spread over time; Redis
and Postgres round trips per warm request; the cold first request per route (import, first
connections, first provider call, first request) in a fresh interpreter; import time of every
api module.

    python -m bench generate          # ~1 minute
    python -m bench generate --full   # more requests

Postgres: TEST_DATABASE_URL / DATABASE_URL when set (a scratch database is created on that
server and dropped), else the embedded one. Redis: REDIS_URL, else the bundled redis-server,
behind the local Upstash proxy. Round trips are counted on the wire: Redis as HTTP requests
reaching the proxy, Postgres by bench._postgres_wire's TCP proxy (a round trip = the client
speaking again after the server answered).
"""

import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import quote
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import psycopg
import psycopg.sql
from psycopg.types.json import Jsonb
from psycopg.conninfo import conninfo_to_dict

from devtools import dev_keys, services, upstash_proxy
from lib import config, db, migrate
from devtools.fake_llm import FakeOpenAI
from devtools.serve import serve_runtime_layout, start_function

from bench._postgres_wire import RoundTripCounter

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-upstash-token"


class CountingUpstash(upstash_proxy.Proxy):
    """The Upstash proxy, counting REST requests (each is one Redis round trip) and the time
    its handler spends per request (`server_ms`, summed)."""

    requests = 0
    server_ms = 0.0

    def run(self, commands, transaction):
        CountingUpstash.requests += 1
        return super().run(commands, transaction)


def _timed_upstash_handler(proxy: CountingUpstash):
    base = upstash_proxy.make_handler(proxy)

    class Timed(base):  # type: ignore[valid-type,misc]
        def do_POST(self):
            started = time.perf_counter()
            try:
                base.do_POST(self)
            finally:
                CountingUpstash.server_ms += (time.perf_counter() - started) * 1000

        do_GET = do_POST

    return Timed


def _url(info: dict) -> str:
    """A postgresql:// URL (what lib.config accepts) from libpq connection parameters."""
    info = dict(info)
    user, password = quote(info.pop("user", "postgres")), quote(info.pop("password", "") or "")
    host, port, dbname = info.pop("host", ""), info.pop("port", ""), info.pop("dbname", "")
    auth = f"{user}:{password}@" if password else f"{user}@"
    if host.startswith("/"):
        info["host"], host = host, ""
    netloc = f"{auth}{host}" + (f":{port}" if port and host else "")
    if port and not host:
        info["port"] = port
    query = "&".join(f"{k}={quote(str(v))}" for k, v in info.items())
    return f"postgresql://{netloc}/{dbname}" + (f"?{query}" if query else "")


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def _time_calls(call, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _import_times(repeats: int) -> list[tuple[str, float]]:
    probe = ("import time, sys; t = time.perf_counter(); "
             "from devtools.serve import load_handler; load_handler(sys.argv[1]); "
             "print((time.perf_counter() - t) * 1000)")
    sdk_probe = "import time, sys; t = time.perf_counter(); __import__(sys.argv[1]); " \
                "print((time.perf_counter() - t) * 1000)"
    rows = []
    targets = [(p.relative_to(ROOT).as_posix(), probe) for p in sorted((ROOT / "api").rglob("*.py"))]
    targets += [("(sdk) openai", sdk_probe), ("(sdk) anthropic", sdk_probe)]
    for name, code in targets:
        arg = name.removeprefix("(sdk) ")
        runs = [float(subprocess.run([sys.executable, "-c", code, arg], cwd=ROOT, check=True,
                                     capture_output=True, text=True).stdout.strip().splitlines()[-1])
                for _ in range(repeats)]
        rows.append((name, statistics.median(runs)))
    return rows


_COLD_PROBE = r"""
import http.client, json, os, sys, time
t0 = time.perf_counter()
from devtools.serve import load_handler, serve_in_process
handler = load_handler(sys.argv[1])
t1 = time.perf_counter()
from lib import db, redis
db.fetchone("SELECT 1")
redis.ping()
t2 = time.perf_counter()
if sys.argv[1] == "api/generate.py":
    from lib.generation import llm
    for provider in llm.providers()[:1]:
        provider.prepare()
t3 = time.perf_counter()
method, path, headers, body = json.loads(sys.argv[2])
timings = []
with serve_in_process(handler) as url:
    for _ in range(2):
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)
        started = time.perf_counter()
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        timings.append((time.perf_counter() - started) * 1000)
        conn.close()
ms = lambda a, b: (b - a) * 1000
print(json.dumps([ms(t0, t1), ms(t1, t2), ms(t2, t3), *timings, response.status]))
"""


def _cold_requests() -> list[tuple[str, str, list]]:
    user = dev_keys.mint("user_bench", "org_bench", ttl_s=3600)
    owner = dev_keys.mint("user_bench", "org_bench", role="OWNER", ttl_s=3600)
    cron = os.environ["CRON_SECRET"]
    generate = {"authorization": f"Bearer {user}", "content-type": "application/json"}
    return [
        ("GET /api/health", "api/health.py", ["GET", "/api/health", {}, None]),
        ("POST /api/generate", "api/generate.py",
         ["POST", "/api/generate", generate, '{"prompt": "hi", "max_tokens": 16}']),
        ("POST /api/generate (stream)", "api/generate.py",
         ["POST", "/api/generate", generate, '{"prompt": "hi", "max_tokens": 16, "stream": true}']),
        ("GET /api/admin/monitoring", "api/admin/monitoring.py",
         ["GET", "/api/admin/monitoring", {"authorization": f"Bearer {owner}"}, None]),
        ("GET /api/cron/purge", "api/cron/purge.py",
         ["GET", "/api/cron/purge", {"authorization": f"Bearer {cron}"}, None]),
        ("GET /api/cron/weekly-reminders", "api/cron/weekly-reminders.py",
         ["GET", "/api/cron/weekly-reminders", {"authorization": f"Bearer {cron}"}, None]),
        ("POST /api/webhooks/stripe (unsigned: 400)", "api/webhooks/stripe.py",
         ["POST", "/api/webhooks/stripe", {"content-type": "application/json"}, "{}"]),
    ]


def _cold_starts(repeats: int) -> None:
    rows = []
    for label, entrypoint, request in _cold_requests():
        runs = []
        for _ in range(repeats):
            out = subprocess.run([sys.executable, "-c", _COLD_PROBE, entrypoint, json.dumps(request)],
                                 cwd=ROOT, check=True, capture_output=True, text=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        median = [statistics.median(r[i] for r in runs) for i in range(5)]
        rows.append([label, *(f"{v:.0f}" for v in median), f"{sum(median[:4]):.0f}",
                     str(runs[-1][5])])
    print(f"\ncold first request per route, fresh interpreter (median of {repeats}): ms\n")
    _table(["route", "import", "first connections (Postgres, Redis)", "SDK import + client",
            "first request", "warm request", "cold total", "status"], rows)


def _table(headers: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(row, widths)) + " |")


def main(argv: list[str] | None = None) -> None:
    full = "--full" in (sys.argv[1:] if argv is None else argv)
    requests, repeats = (3000, 5) if full else (400, 3)

    server_url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL") or \
        services.embedded_postgres(services.DATA / "pg-test")
    name = f"ascendos_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = conninfo_to_dict(server_url)
    info["dbname"] = name
    bench_db = _url(info)
    redis_process = None
    fake = FakeOpenAI(text="ok", input_tokens=20, output_tokens=5)
    try:
        migrate.apply(bench_db)
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            redis_url, redis_process = services.embedded_redis()
        upstash = ThreadingHTTPServer(("127.0.0.1", 0),
                                      _timed_upstash_handler(CountingUpstash(redis_url, TOKEN)))
        upstash.daemon_threads = True
        threading.Thread(target=upstash.serve_forever, daemon=True).start()
        counter = RoundTripCounter(conninfo_to_dict(bench_db))
        relay_url = _url({**conninfo_to_dict(bench_db), "host": "127.0.0.1", "port": str(counter.port)})
        os.environ.update({
            "UPSTASH_REDIS_REST_URL": f"http://127.0.0.1:{upstash.server_address[1]}",
            "UPSTASH_REDIS_REST_TOKEN": TOKEN, "CLERK_JWT_KEY": dev_keys.public_pem(), "SENTRY_DSN": "",
            "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": fake.base_url,
            "ANTHROPIC_API_KEY": "sk-ant-bench", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
            "CRON_SECRET": "bench-cron-secret-" + uuid.uuid4().hex,
            "STRIPE_WEBHOOK_SECRET": "whsec_bench", "QUOTA_TRIAL": "1000000",
            "RATE_LIMIT_IP": "1000000/60s", "RATE_LIMIT_USER": "1000000/60s"})
        config.reload()
        _run(fake, counter, relay_url, bench_db, requests)
        _cold_starts(repeats)
    finally:
        db.close_all()
        fake.close()
        if redis_process:
            redis_process.kill()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print("\nimport time of each api module in a fresh interpreter (median of "
          f"{repeats}; SDKs alone for comparison):\n")
    _table(["module", "import ms"], [[n, f"{ms:.0f}"] for n, ms in _import_times(repeats)])


def _stats(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), _percentile(samples, 99)


def _commit_ms(url: str) -> float:
    """What one durable single-row INSERT (its commit: WAL flush) costs on this Postgres."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE commit_probe (v int)")  # logged (a temp table is not)
        conn.execute("SET synchronous_commit = on")
        try:
            return statistics.median(_time_calls(
                lambda: conn.execute("INSERT INTO commit_probe VALUES (1)"), 200))
        finally:
            conn.execute("DROP TABLE commit_probe")


def _step_times(token: str, bare, count: int) -> list[list[str]]:
    """The route's steps one by one (the same lib calls lib.routes.generate makes), each
    timed alone, in process: where the added milliseconds go."""
    from lib import auth
    from lib.generation import generation, llm, quota

    cfg = config.settings()
    identity = auth.authenticate(token)
    params = generation.parse_generation_request({"prompt": "hi", "max_tokens": 16})
    samples: dict[str, list[float]] = {}

    def timed(name: str, call):
        started = time.perf_counter()
        value = call()
        samples.setdefault(name, []).append((time.perf_counter() - started) * 1000)
        return value

    for _ in range(count):
        timed("token check, first sight (RS256)", lambda: auth._verify(token, cfg))
        timed("token check, seen before", lambda: auth.authenticate(token))
        timed("Redis: blocked IP, user limit, breaker (1 round trip)",
              lambda: generation.admit("198.51.100.8", identity))
        timed("body checks", lambda: generation.parse_generation_request(
            {"prompt": "hi", "max_tokens": 16}))
        reservation = timed("Postgres: provision + reserve (1 statement, commit)",
                            lambda: quota.reserve(identity))
        timed("bare SDK call (for scale)", bare)
        outcome = timed("provider call through lib.generation.llm",
                        lambda: llm.complete(params.messages, None, 16, None))
        record = {"latency_ms": 1, "fallback": False, "fallback_reason": None,
                  "primary_outcome": "succeeded", "attempts": Jsonb([]), "provider": "openai",
                  "model": outcome.reply.model, "input_tokens": 20, "output_tokens": 5,
                  "cost_usd": 0, "price_version": "bench", "provider_request_id": None}
        timed("Postgres: record the row (after the answer)",
              lambda: quota.record_success(reservation, record))
    path = {"token check, first sight (RS256)": "once per token",
            "bare SDK call (for scale)": "-", "Postgres: record the row (after the answer)": "no"}
    return [[name, f"{statistics.median(values):.2f}", path.get(name, "yes")]
            for name, values in samples.items()]


def _synchronous_commit(url: str, on: bool) -> None:
    """Set (or reset) synchronous_commit for the bench role's new connections to `url`."""
    with psycopg.connect(url, autocommit=True) as conn:
        name = psycopg.sql.Identifier(conninfo_to_dict(url)["dbname"]).as_string(conn)
        conn.execute(f"ALTER ROLE CURRENT_USER IN DATABASE {name} " +
                     ("RESET synchronous_commit" if on else "SET synchronous_commit = off"))


@contextlib.contextmanager
def _function_process(entrypoint: str, env: dict):
    """`entrypoint` served in its own process as a deployed function is (devtools.serve:
    the runtime's IPC-mode layout on a ThreadingHTTPServer); yields its base URL."""
    process, port = start_function(entrypoint, env)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _use_database(url: str) -> None:
    db.close_all()
    os.environ["DATABASE_URL"] = url
    config.reload()


def _run(fake: FakeOpenAI, counter: RoundTripCounter, relay_url: str, direct_url: str,
         count: int) -> None:
    import openai

    sdk = openai.OpenAI(api_key="sk-bench", base_url=fake.base_url, max_retries=0)

    def bare():
        sdk.chat.completions.create(model="gpt-4o-mini", max_tokens=16,
                                    messages=[{"role": "user", "content": "hi"}])

    def bare_first_delta() -> float:
        started = time.perf_counter()
        stream = sdk.chat.completions.create(
            model="gpt-4o-mini", max_tokens=16, messages=[{"role": "user", "content": "hi"}],
            stream=True, stream_options={"include_usage": True})
        try:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    return (time.perf_counter() - started) * 1000
        finally:
            stream.close()
        raise AssertionError("no delta")

    # Two kept-alive connections, used in turn: consecutive requests are two callers, as the
    # platform's independent invocations are; on one connection a request would wait for the
    # previous one's after-answer work (its own row in the table).
    with serve_runtime_layout("api/generate.py") as url, httpx.Client() as client, \
            httpx.Client() as other:
        target = {"url": url}  # the in-process route (round trips), then a function process
        clients = itertools.cycle([client, other])
        token = dev_keys.mint("user_bench", "org_bench", ttl_s=3600)
        headers = {"authorization": f"Bearer {token}",
                   "x-forwarded-for": "198.51.100.7"}
        proxy_ms: list[float] = []

        def route(one_connection: bool = False):
            before = CountingUpstash.server_ms
            response = (client if one_connection else next(clients)).post(
                target["url"] + "/api/generate", headers=headers,
                                   json={"prompt": "hi", "max_tokens": 16})
            assert response.status_code == 200, response.text
            proxy_ms.append(CountingUpstash.server_ms - before)

        def route_stream(arrivals: list[float] | None = None) -> float:
            """ms to the first `event: delta`; reads the stream to its end."""
            started, first = time.perf_counter(), None
            with client.stream("POST", target["url"] + "/api/generate", headers=headers,
                               json={"prompt": "hi", "max_tokens": 16, "stream": True}) as response:
                assert response.status_code == 200, response.read()
                for line in response.iter_lines():
                    if line == "event: delta":
                        now = (time.perf_counter() - started) * 1000
                        first = now if first is None else first
                        if arrivals is not None:
                            arrivals.append(now)
            assert first is not None
            return first

        def side_by_side(n: int, a, b) -> tuple[list[float], list[float]]:
            # Interleaved in blocks so drift (CPU frequency, other load) hits both alike.
            a_ms, b_ms = [], []
            block = min(50, n)
            for _ in range(max(1, n // block)):
                a_ms += a(block)
                b_ms += b(block)
            return a_ms, b_ms

        def timed(call):
            return lambda n: _time_calls(call, n)

        def first_delta(call):
            return lambda n: [call() for _ in range(n)]

        _use_database(relay_url)
        for _ in range(20):  # warm: SDK import, pooled connections, provisioning
            bare()
            route()
        redis_before, pg_before = CountingUpstash.requests, counter.turns
        probe = 50
        for _ in range(probe):
            route()
        redis_rt = (CountingUpstash.requests - redis_before) / probe
        pg_rt = (counter.turns - pg_before) / probe
        _use_database(direct_url)
        steps = _step_times(token, bare, count)

        # The timed passes: the route in its own function process (as deployed: the client's
        # and the function's Python don't share a GIL), without the counting relay.
        def function(sync_commit: bool = True):
            _synchronous_commit(direct_url, sync_commit)
            return _function_process("api/generate.py", {**os.environ, "DATABASE_URL": direct_url})

        def served(function_url: str):
            target["url"] = function_url
            route()  # its pooled connections, provisioning, SDK import
            proxy_ms.clear()

        with function() as function_url:
            served(function_url)
            passes = [("instant provider", *side_by_side(count, timed(bare), timed(route)),
                       list(proxy_ms))]
            proxy_ms.clear()
            passes.append(("instant provider, every request on one connection",
                           *side_by_side(count, timed(bare), timed(lambda: route(True))),
                           list(proxy_ms)))
            fake.delay_s = 0.1
            proxy_ms.clear()
            n = min(count, 100)
            passes.append(("provider answering in 100 ms",
                           *side_by_side(n, timed(bare), timed(route)), list(proxy_ms)))
            fake.delay_s = 0
        with function(sync_commit=False) as function_url:
            served(function_url)
            passes.insert(2, ("instant provider, Postgres synchronous_commit=off",
                              *side_by_side(count, timed(bare), timed(route)), list(proxy_ms)))

        # Streaming: the first token after 100 ms, then 19 more 2 ms apart.
        fake.text, fake.stream_chunks = "token " * 20, 20
        fake.first_token_s, fake.chunk_interval_s = 0.1, 0.002
        streams = []
        for label, sync_commit in (("durable commits", True), ("Postgres synchronous_commit=off", False)):
            with function(sync_commit) as function_url:
                served(function_url)
                bare_first_delta()
                route_stream()
                streams.append((label, *side_by_side(min(count, 100), first_delta(bare_first_delta),
                                                     first_delta(route_stream))))
                if sync_commit:
                    fake.chunk_interval_s = 0.05  # 10 pieces over 450 ms: do they arrive so?
                    fake.stream_chunks = 10
                    arrivals: list[float] = []
                    route_stream(arrivals)
                    fake.stream_chunks, fake.chunk_interval_s = 20, 0.002
        _synchronous_commit(direct_url, True)
        fake.text, fake.stream_chunks, fake.first_token_s, fake.chunk_interval_s = "ok", 4, 0, 0

    print(f"loopback, the route in its own function process; {count} requests per instant pass, "
          "interleaved blocks of 50\n")
    rows = []
    for label, bare_ms, route_ms, upstash_ms in passes:
        (b50, b99), (r50, r99) = _stats(bare_ms), _stats(route_ms)
        own = statistics.median([r - u for r, u in zip(route_ms, upstash_ms)]) if \
            len(upstash_ms) == len(route_ms) else float("nan")
        rows.append([label, f"{b50:.2f}", f"{b99:.2f}", f"{r50:.2f}", f"{r99:.2f}",
                     f"{r50 / b50:.2f}x", f"{r50 - b50:.2f}", f"{own - b50:.2f}"])
    _table(["pass", "SDK p50", "SDK p99", "route p50", "route p99", "p50 ratio",
            "p50 added ms", "p50 added ms without the Upstash proxy (target <= 3)"], rows)
    print("\nstreaming, provider's first token after 100 ms: time to the first delta, "
          f"{len(streams[0][2])} streams per pass\n")
    stream_rows = []
    for label, stream_bare, stream_route in streams:
        (b50, b99), (r50, r99) = _stats(stream_bare), _stats(stream_route)
        stream_rows.append([label, f"{b50:.1f}", f"{b99:.1f}", f"{r50:.1f}", f"{r99:.1f}",
                            f"{r50 / b50:.3f}x", f"{r50 - b50:.1f}"])
    _table(["pass", "SDK stream p50", "SDK p99", "route p50", "route p99",
            "p50 ratio (target <= 1.1)", "p50 added ms"], stream_rows)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    print(f"\n10 pieces sent 50 ms apart arrived at the client over "
          f"{arrivals[-1] - arrivals[0]:.0f} ms (provider: 450 ms); gaps between deltas "
          f"min {min(gaps):.0f} / median {statistics.median(gaps):.0f} / max {max(gaps):.0f} ms")
    print(f"\none durable INSERT commit on this Postgres: {_commit_ms(direct_url):.2f} ms "
          "(the route makes two: reserve, record)\n")
    print("\nwhere a warm request's time goes: each step called alone, in process, "
          f"{count} times (p50 ms)\n")
    _table(["step", "p50 ms", "on the answer's path"], steps)
    print()
    _table(["round trips per warm request", "measured", "target"],
           [["Redis (Upstash REST requests)", f"{redis_rt:.2f}", "<= 3"],
            ["Postgres (request/response exchanges)", f"{pg_rt:.2f}", "<= 3"]])
