"""The short chaos run is part of the suite: `python -m bench chaos` (issue 11 §7) drives
mixed concurrent traffic through the real handlers (generate, Stripe webhooks with duplicates
and out of order, both crons, monitoring) while it kills Postgres backends, restarts the Redis
proxy, flaps the provider and SIGKILLs function processes, then checks the quota,
pending-row, status, cron, webhook exactly-once, billing replay and purge conservation
invariants. It exits non-zero when any invariant fails."""

import os
import subprocess
import sys

import pytest

from devtools.services import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.pure]  # its own scratch database and processes


def test_a_short_chaos_run_keeps_every_invariant(postgres_server_url, redis_url):
    env = {**os.environ, "TEST_DATABASE_URL": postgres_server_url, "REDIS_URL": redis_url}
    run = subprocess.run([sys.executable, "-m", "bench", "chaos", "--seconds=30", "--db-tag=suite"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-4000:]
    for invariant in ("quota invariant", "statuses outside the designed set",
                      "webhook events applied exactly once", "webhook events never acknowledged",
                      "billing state equals an in-order replay", "purge conservation",
                      "purge deleted exactly the expired rows", "rollup sums equal the deleted rows"):
        row = next((line for line in report.splitlines() if line.startswith(f"| {invariant}")), None)
        assert row is not None and row.rstrip().endswith("| yes |"), (invariant, report[-3000:])
