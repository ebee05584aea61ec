"""Chaos run (issue 11 §7): mixed concurrent traffic against the real handlers while faults
are injected on loopback, then the invariants that must survive them.

    python -m bench chaos                 # ~30 s of traffic
    python -m bench chaos --seconds=300   # a longer run
    python -m bench chaos --db-tag=NAME   # the scratch database's name carries NAME

Traffic: POST /api/generate from many orgs, in function processes served as deployed ones are
(`python -m devtools.serve`: the runtime's IPC-mode class layout); signed Stripe
events to POST /api/webhooks/stripe (its own such function process) for eight of those orgs,
with duplicates, out of order and concurrently, re-delivered until they get a 2xx
(bench._chaos_webhooks); both crons at once (purge, weekly-reminders) and GET
/api/admin/monitoring. The cron and monitoring routes are served in process the way the
runtime serves a function (devtools.serve.serve_runtime_layout: vercel_runtime's IPC-mode
Handler around the real handler class, on a ThreadingHTTPServer).
Faults: pg_terminate_backend on every app connection each second; the Upstash proxy stopped
and restarted; an OpenAI that flaps between 500s, timeouts and slow answers (Anthropic, the
fallback, is slow at times); generate and webhook function processes SIGKILLed mid-request
and restarted.
Checks afterwards: the quota invariant per org and month (used == succeeded + pending younger
than RESERVATION_TIMEOUT_S), no pending row older than the timeout once the purge swept, no
status outside the designed set (no 500), cron runs never `running` or double-succeeded;
every webhook event recorded exactly once with an outcome its kind allows and never applied
twice, once a drain after the faults re-delivered what had no 2xx; the billing state (plan,
status, trial end, subscription snapshots, customer links) equal, column by column, to a
replay of the same events in `created` order into a fresh database; and the purge's
conservation over a seeded history (bench._chaos_purge): deleted + kept = before per org, the
rollup grew by exactly the deleted rows' counts and sums. Exit status 1 when an invariant
fails.

Postgres: TEST_DATABASE_URL / DATABASE_URL (a scratch database is created and dropped), else
the embedded one. Redis: REDIS_URL, else the bundled redis-server.
"""

import argparse
import contextlib
import io
import itertools
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from http.server import ThreadingHTTPServer

import httpx
import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench import _chaos_purge as purge_history, _chaos_webhooks as webhooks
from bench.generate import _percentile, _table, _url
from devtools import dev_keys, services, upstash_proxy
from devtools.fake_llm import FakeAnthropic, FakeOpenAI
from devtools.serve import serve_runtime_layout, start_function
from lib import config, db, migrate
from lib.billing import ledger

TOKEN = "chaos-upstash-token"
SECRET = "chaos-cron-secret-0123456789"
TIMEOUT_S = 8  # RESERVATION_TIMEOUT_S for the run: above the longest request (2 x LLM_TIMEOUT_S)
GENERATE_OK = {200, 402, 429, 502, 503}
CRON_OK = {200, 503}
MONITORING_OK = {200, 503}
# 500 webhook_not_applied (Postgres failed; the event stays unrecorded for the retry) and 503
# database_busy are the designed failures; a bare 500 or a dropped connection is not.
WEBHOOK_OK = {200, "500 webhook_not_applied", "503 database_busy",
              "connection lost (process killed)"}
BILLED = 8  # of the 12 generate orgs, the ones Stripe events are sent for
TRIAL_DAYS_LEFT = 14


class _Upstash:
    """The Upstash proxy on a fixed port, stoppable and restartable (a Redis outage)."""

    def __init__(self, redis_url: str):
        self.redis_url, self.port = redis_url, services.free_port()
        self.server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port),
                                     upstash_proxy.make_handler(upstash_proxy.Proxy(self.redis_url, TOKEN)))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self.server = server

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class _Instance:
    """One function process (generate's, or the Stripe webhook's), served as a deployed
    function is (`python -m devtools.serve`: the runtime's IPC-mode class layout on a
    ThreadingHTTPServer), killable mid-request, also between an answer and its after-answer
    commit. `url` is its route; a restart moves it to a new port."""

    def __init__(self, env: dict[str, str], entrypoint: str = "api/generate.py"):
        self.env, self.entrypoint = env, entrypoint
        self.start()

    def start(self) -> None:
        self.process, self.port = start_function(self.entrypoint, {**os.environ, **self.env})
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/" + self.entrypoint.removesuffix(".py")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


class Run:
    def __init__(self, seconds: float, app_url: str, instances: list[_Instance], upstash: _Upstash,
                 openai: FakeOpenAI, anthropic: FakeAnthropic, cron_url: str, monitoring_url: str,
                 sender: webhooks.Sender):
        self.seconds, self.app_url, self.instances, self.upstash = seconds, app_url, instances, upstash
        self.openai, self.anthropic = openai, anthropic
        self.cron_url, self.monitoring_url, self.sender = cron_url, monitoring_url, sender
        self.other_functions: list[_Instance] = []  # killable too (the webhook's)
        self.stop = threading.Event()
        self.statuses: dict[str, Counter] = {"generate": Counter(), "webhook": Counter(),
                                             "cron": Counter(), "monitoring": Counter()}
        self.faults: Counter = Counter()
        self.figures: dict[str, object] = {}  # what the checks add to the figures table
        self.latency_ms: list[float] = []
        self.lock = threading.Lock()

    def _record(self, kind: str, status, started: float | None = None) -> None:
        with self.lock:
            self.statuses[kind][status] += 1
            if started is not None:
                self.latency_ms.append((time.perf_counter() - started) * 1000)

    # --- traffic
    def generate(self, worker: int) -> None:
        rng = random.Random(worker)
        with httpx.Client(timeout=30) as client:
            for i in itertools.count():
                if self.stop.is_set():
                    return
                org = f"org_chaos_{rng.randrange(12)}"
                token = dev_keys.mint(f"user_{org}_{rng.randrange(3)}", org, ttl_s=3600)
                instance = self.instances[(worker + i) % len(self.instances)]
                started = time.perf_counter()
                try:
                    response = client.post(instance.url, json={"prompt": "hi", "max_tokens": 16},
                                           headers={"authorization": f"Bearer {token}",
                                                    "x-forwarded-for": f"198.51.100.{worker}"})
                    self._record("generate", response.status_code, started)
                except httpx.HTTPError:
                    self._record("generate", "connection lost (process killed)")
                    time.sleep(0.05)

    def crons(self) -> None:
        headers = {"authorization": f"Bearer {SECRET}"}
        with httpx.Client(timeout=60) as client:
            while not self.stop.wait(0.5):
                results: list = []
                threads = [threading.Thread(target=lambda p=p: results.append(
                    client.get(self.cron_url + p, headers=headers).status_code))
                    for p in ("/api/cron/purge", "/api/cron/weekly-reminders")]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                for status in results:
                    self._record("cron", status)

    def monitoring(self) -> None:
        token = dev_keys.mint("user_owner", "org_chaos_0", role="OWNER", ttl_s=3600)
        with httpx.Client(timeout=30) as client:
            while not self.stop.wait(0.7):
                response = client.get(self.monitoring_url + "/api/admin/monitoring",
                                      headers={"authorization": f"Bearer {token}"})
                self._record("monitoring", response.status_code)

    # --- faults
    def kill_backends(self) -> None:
        with psycopg.connect(self.app_url, autocommit=True) as admin:
            while not self.stop.wait(1.0):
                n = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                  "WHERE application_name = 'ascendos' AND datname = current_database() "
                                  "AND pid <> pg_backend_pid()"
                                  ).fetchone()[0]
                with self.lock:
                    self.faults["pg_terminate_backend"] += n

    def restart_redis(self) -> None:
        while not self.stop.wait(4.0):
            self.upstash.stop()
            with self.lock:
                self.faults["redis proxy restarts"] += 1
            time.sleep(0.5)
            self.upstash.start()

    def flap_provider(self) -> None:
        modes = itertools.cycle(["ok", "500", "timeout", "ok", "slow", "429"])
        while not self.stop.wait(1.5):
            mode = next(modes)
            self.openai.status = {"500": 500, "429": 429}.get(mode, 200)
            self.openai.delay_s = {"timeout": 1.5, "slow": 0.4}.get(mode, 0.0)
            self.anthropic.delay_s = 0.3 if mode == "slow" else 0.0
            with self.lock:
                self.faults[f"provider {mode}"] += 1

    def kill_functions(self) -> None:
        rng = random.Random(7)
        while not self.stop.wait(3.0):
            instance = rng.choice(self.instances + self.other_functions)
            instance.kill()
            with self.lock:
                self.faults["function processes killed"] += 1
                if instance.entrypoint != "api/generate.py":
                    self.faults["function processes killed: the webhook's"] += 1
            instance.start()

    def run(self) -> float:
        started = time.perf_counter()
        threads = [threading.Thread(target=self.generate, args=(w,)) for w in range(6)]
        threads += [threading.Thread(target=self.sender.worker, args=(started, self.stop, self._record))
                    for _ in range(webhooks.WORKERS)]
        threads += [threading.Thread(target=f) for f in (
            self.crons, self.monitoring, self.kill_backends, self.restart_redis,
            self.flap_provider, self.kill_functions)]
        try:
            for t in threads:
                t.start()
            time.sleep(self.seconds)
        finally:  # also on Ctrl-C: every thread loops until `stop`
            self.stop.set()
            for t in threads:
                t.join(60)
        self.openai.status, self.openai.delay_s, self.anthropic.delay_s = 200, 0.0, 0.0
        return time.perf_counter() - started


def _final_purge(cron_url: str) -> dict:
    """Purge runs until one completes (the sweep of abandoned reservations comes with each);
    the last run's answer, with `reclaimed` summed over the runs. Bounded: 20 runs."""
    answer: dict = {}
    reclaimed = 0
    for _ in range(20):
        response = httpx.get(cron_url + "/api/cron/purge", timeout=60,
                             headers={"authorization": f"Bearer {SECRET}"})
        answer = response.json() if response.status_code == 200 else {}
        reclaimed += answer.get("reclaimed") or 0
        if answer.get("complete") is True:
            break
        time.sleep(0.5)
    return {**answer, "reclaimed": reclaimed}


def _checks(url: str, run: Run, cron_url: str) -> list[tuple[str, str, bool]]:
    time.sleep(TIMEOUT_S + 1)  # every reservation still pending is now past the timeout
    swept = _final_purge(cron_url)
    # The purge history's orgs hold synthetic old rows written without reservations: not
    # part of the quota or generate accounting (bench._chaos_purge checks them).
    skip = [org_id for org_id, _ in purge_history.organizations()]
    with psycopg.connect(url, autocommit=True) as conn:
        violations = conn.execute("""
            WITH per AS (
                SELECT organization_id,
                       date_trunc('month', created_at AT TIME ZONE 'UTC')::date AS month,
                       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                       count(*) FILTER (WHERE status = 'pending' AND created_at >=
                                        now() - make_interval(secs => %s)) AS young
                FROM generations WHERE organization_id <> ALL(%s) GROUP BY 1, 2)
            SELECT count(*) FROM generation_usage u FULL JOIN per USING (organization_id, month)
            WHERE coalesce(u.used, 0) <> coalesce(per.succeeded, 0) + coalesce(per.young, 0)""",
            (TIMEOUT_S, skip)).fetchone()[0]
        orgs = conn.execute("SELECT count(*) FROM generation_usage").fetchone()[0]
        stale = conn.execute("SELECT count(*) FROM generations WHERE status = 'pending' AND "
                             "created_at < now() - make_interval(secs => %s)",
                             (TIMEOUT_S,)).fetchone()[0]
        rows: dict = dict(conn.execute("SELECT status, count(*) FROM generations "
                                       "WHERE organization_id <> ALL(%s) GROUP BY 1", (skip,)).fetchall())
        running = conn.execute("SELECT count(*) FROM cron_runs WHERE status = 'running'").fetchone()[0]
        runs: dict = dict(conn.execute("SELECT status, count(*) FROM cron_runs GROUP BY 1").fetchall())
        overlapping = conn.execute("""
            SELECT count(*) FROM cron_runs a JOIN cron_runs b ON a.job = b.job AND a.id < b.id
            WHERE a.status = 'succeeded' AND b.status = 'succeeded'
              AND b.started_at < a.finished_at AND a.started_at < b.finished_at""").fetchone()[0]
    unexpected = {kind: {s: n for s, n in run.statuses[kind].items()
                         if (isinstance(s, int) or kind == "webhook") and s not in allowed}
                  for kind, allowed in (("generate", GENERATE_OK), ("webhook", WEBHOOK_OK),
                                        ("cron", CRON_OK), ("monitoring", MONITORING_OK))}
    return [
        ("quota invariant (org-months violating)", f"{violations} of {orgs}", violations == 0),
        ("pending rows older than the timeout", f"{stale} (sweep reclaimed {swept['reclaimed']})",
         stale == 0),
        ("generation rows by status", ", ".join(f"{k} {v}" for k, v in sorted(rows.items())), True),
        # A 200 whose row was never closed succeeded: its settle failed on both tries (the
        # backend killed twice within one request), or its process was killed between the
        # answer and the after-answer commit (lib.http Response.after). The answer is kept; the
        # row is reclaimed as abandoned, and the quota invariant above counts it so.
        ("200s without a succeeded row", f"{max(0, run.statuses['generate'][200] - rows.get('succeeded', 0))}"
         f" of {run.statuses['generate'][200]}", True),
        ("statuses outside the designed set", str({k: v for k, v in unexpected.items() if v} or "none"),
         not any(unexpected.values())),
        ("cron runs left running", str(running), running == 0),
        ("overlapping successful cron runs", str(overlapping), overlapping == 0),
        ("cron runs by status", ", ".join(f"{k} {v}" for k, v in sorted(runs.items())), True),
    ]


def _scratch(server_url: str, name: str) -> str:
    """A fresh, migrated database `name` on the server; its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = conninfo_to_dict(server_url)
    info["dbname"] = name
    url = _url(info)
    migrate.apply(url)
    return url


def _billing_checks(app_url: str, replay_url: str, run: Run) -> list[tuple[str, str, bool]]:
    """Exactly once, then the replay: every event again, in order, into the fresh database.
    Runs after the in-process routes stopped (the replay points this process's lib.db at
    `replay_url` while it runs)."""
    deliveries = run.sender.deliveries
    observed, once, outcomes = webhooks.exactly_once(app_url, deliveries)
    run.figures.update({f"webhook events recorded {k}": v for k, v in sorted(outcomes.items())})
    webhooks.replay(replay_url, deliveries.events)
    billed = [external_id for _, external_id in webhooks.organizations(BILLED)]
    differences = webhooks.compare_with_replay(app_url, replay_url, billed)
    conflicts = outcomes.get(ledger.CONFLICT, 0)
    return [
        ("webhook events applied exactly once", observed, once),
        ("webhook events never acknowledged (drain)",
         f"{len(deliveries.events) - len(deliveries.acknowledged)} of {len(deliveries.events)}",
         len(deliveries.acknowledged) == len(deliveries.events)),
        ("billing conflicts recorded", str(conflicts), conflicts == 0),
        (f"billing state equals an in-order replay ({BILLED} orgs)",
         "equal" if not differences else f"{len(differences)} differ: {'; '.join(differences[:4])}",
         not differences),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench chaos")
    parser.add_argument("names", nargs="*")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--db-tag", default="bench")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    server_url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL") or \
        services.embedded_postgres(services.DATA / "pg-test")
    name = f"ascendos_chaos_{args.db_tag}_{uuid.uuid4().hex[:8]}"
    names = [name, name + "_replay"]
    redis_process, instances_to_stop = None, []
    openai, anthropic = FakeOpenAI(text="ok"), FakeAnthropic(text="ok")
    upstash = None
    failed: list = []
    try:
        app_url, replay_url = _scratch(server_url, names[0]), _scratch(server_url, names[1])
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            redis_url, redis_process = services.embedded_redis()
        upstash = _Upstash(redis_url)
        env = {
            "DATABASE_URL": app_url, "UPSTASH_REDIS_REST_URL": f"http://127.0.0.1:{upstash.port}",
            "UPSTASH_REDIS_REST_TOKEN": TOKEN, "CLERK_JWT_KEY": dev_keys.public_pem(),
            "CLERK_SECRET_KEY": "", "CLERK_AUTHORIZED_PARTIES": "", "SENTRY_DSN": "",
            "APP_ENV": "development", "OPENAI_API_KEY": "sk-chaos",
            "OPENAI_BASE_URL": openai.base_url, "ANTHROPIC_API_KEY": "sk-ant-chaos",
            "ANTHROPIC_BASE_URL": anthropic.base_url, "LLM_TIMEOUT_S": "1",
            "QUOTA_TRIAL": "40", "RATE_LIMIT_IP": "1000000/60s", "RATE_LIMIT_USER": "1000000/60s",
            "AUTO_BLOCK_THRESHOLD": "1000000", "REDIS_TIMEOUT_S": "0.5", "CRON_SECRET": SECRET,
            "RESERVATION_TIMEOUT_S": str(TIMEOUT_S), "CRON_TIME_BUDGET_S": "5", "SMTP_URL": "",
            "EMAIL_FROM": "", "PURGE_BATCH_SIZE": str(purge_history.BATCH_SIZE), **webhooks.ENV}
        os.environ.update(env)
        config.reload()
        retention = {plan: config.settings().retention_days[plan] for plan in config.PLANS}
        # The generate orgs exist before the first event names them (as after a first
        # generate), the same rows in both databases; the purge history has orgs of its own.
        orgs = webhooks.organizations(12)
        trial_ends_at = datetime.now(timezone.utc) + timedelta(days=TRIAL_DAYS_LEFT)
        for url in (app_url, replay_url):
            webhooks.create_organizations(url, orgs, trial_ends_at)
        expected = purge_history.seed(app_url, retention)
        history_before = purge_history.snapshot(app_url)
        # As many webhook deliveries per second in a long run as in the short one.
        events = webhooks.scenario(11, [external_id for _, external_id in orgs[:BILLED]],
                                   int(time.time()) - 100_000,
                                   subscriptions=max(2, round(args.seconds / 15)))
        instances = [_Instance(env) for _ in range(3)]
        instances_to_stop.extend(instances)
        webhook_function = _Instance(env, "api/webhooks/stripe.py")
        instances_to_stop.append(webhook_function)
        with serve_runtime_layout("api/cron/purge.py") as purge_url, \
                serve_runtime_layout("api/admin/monitoring.py") as monitoring_url:
            # Both crons on one in-process server each; purge and reminders share the edge.
            with serve_runtime_layout("api/cron/weekly-reminders.py") as reminders_url:
                cron_url = _Router(purge_url, reminders_url)
                run = Run(args.seconds, app_url, instances, upstash, openai, anthropic,
                          cron_url.url, monitoring_url,
                          webhooks.Sender(lambda: webhook_function.base, events, args.seconds,
                                          seed=12))
                run.other_functions.append(webhook_function)
                # the in-process routes' logs, and the servers' tracebacks of killed clients
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    elapsed = run.run()
                    run.figures["webhook drain (s)"] = round(run.sender.drain(run._record), 1)
                    checks = _checks(app_url, run, cron_url.url)
                    checks += purge_history.check(app_url, history_before, expected, retention)
                    _purge_figures(app_url, run, expected)
                cron_url.close()
        with contextlib.redirect_stdout(io.StringIO()):
            checks += _billing_checks(app_url, replay_url, run)
        _report(run, elapsed, checks)
        failed = [c for c in checks if not c[2]]
    finally:
        for instance in instances_to_stop:
            instance.kill()
        db.close_all()
        openai.close()
        anthropic.close()
        if upstash is not None:
            upstash.stop()
        if redis_process:
            redis_process.kill()
        with psycopg.connect(server_url, autocommit=True) as conn:
            for dbname in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    if failed:
        print(f"\nFAILED: {', '.join(c[0] for c in failed)}")
        sys.exit(1)


def _purge_figures(url: str, run: Run, expected: dict) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        runs: dict = dict(conn.execute("SELECT status, count(*) FROM cron_runs WHERE job = 'purge' "
                                 "GROUP BY 1").fetchall())
        batches = conn.execute("SELECT coalesce(sum((counts->>'batches')::int), 0) FROM cron_runs "
                               "WHERE job = 'purge' AND counts ? 'batches'").fetchone()[0]
    run.figures["purge history rows seeded"] = sum(seeded for seeded, _ in expected.values())
    run.figures["purge batches (completed runs)"] = batches
    run.figures["purge runs"] = ", ".join(f"{k} {v}" for k, v in sorted(runs.items()))


class _Router:
    """One base URL for both cron routes (each is its own function)."""

    def __init__(self, purge_url: str, reminders_url: str):
        import http.server

        routes = {"/api/cron/purge": purge_url, "/api/cron/weekly-reminders": reminders_url}

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                target = routes.get(self.path.split("?")[0])
                if target is None:
                    self.send_error(404)
                    return
                response = httpx.get(target + self.path, headers=dict(self.headers), timeout=60)
                self.send_response(response.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _report(run: Run, elapsed: float, checks: list[tuple[str, str, bool]]) -> None:
    total = sum(sum(c.values()) for c in run.statuses.values())
    lat = run.latency_ms or [0.0]
    print(f"{total} requests in {elapsed:.0f} s; generate p50 {_percentile(lat, 50):.0f} ms, "
          f"p99 {_percentile(lat, 99):.0f} ms\n")
    _table(["traffic", "status", "count"],
           [[kind, str(status), n] for kind, counts in run.statuses.items()
            for status, n in sorted(counts.items(), key=lambda kv: str(kv[0]))])
    print()
    _table(["fault injected", "count"], [[k, v] for k, v in sorted(run.faults.items())])
    print()
    webhook = run.sender.deliveries
    figures = {"webhook events (distinct)": len(webhook.events),
               **{f"webhook {k}": v for k, v in sorted(webhook.figures.items())}, **run.figures}
    _table(["figure", "value"], [[k, v] for k, v in sorted(figures.items())])
    print()
    _table(["invariant", "observed", "ok"], [[n, o, "yes" if ok else "NO"] for n, o, ok in checks])
