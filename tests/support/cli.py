"""Run the operator CLI as an operator does: `python -m ops ...` in a fresh process, with the
test's environment (the test Postgres and Redis)."""

import os
import subprocess
import sys

from devtools.services import ROOT


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run([sys.executable, "-m", "ops", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})
