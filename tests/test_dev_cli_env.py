"""`python -m ops` finds the local stack by itself: it reads the `.env` that `make dev` writes,
says so on stderr, lets real environment variables and --env-file win, and names the missing
variable and the file it looked in."""

import os
import subprocess
import sys

from devtools.services import ROOT
from ops import envfile

pytestmark = __import__("pytest").mark.pure


def _ops(env_file, *args, env=None):
    """The CLI in a fresh process, with the project's .env at `env_file` (ROOT/.env when
    `make dev` runs)."""
    code = ("import sys; from pathlib import Path; from ops import envfile; "
            f"envfile.ENV_FILE = Path({str(env_file)!r}); from ops.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("CRON_SECRET", "DATABASE_URL", "UPSTASH_REDIS_REST_URL", "OPS_NO_DOTENV")}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=60, env={**clean, **(env or {})})


def test_the_project_env_is_read_and_announced(tmp_path):
    envfile.write_env_file(tmp_path / ".env", {"CRON_SECRET": "from-the-dotenv-file-1234"})
    result = _ops(tmp_path / ".env", "doctor", "--offline")
    assert "settings from" in result.stderr and ".env" in result.stderr
    assert "CRON_SECRET" in result.stdout and "only" not in result.stdout.split("CRON_SECRET")[1].splitlines()[0]


def test_real_environment_variables_win_over_the_project_env(tmp_path):
    envfile.write_env_file(tmp_path / ".env", {"CRON_SECRET": "from-the-dotenv-file-1234"})
    result = _ops(tmp_path / ".env", "doctor", "--offline", env={"CRON_SECRET": "short"})
    assert "only 5 characters" in result.stdout


def test_an_explicit_env_file_wins_and_the_project_env_is_not_read(tmp_path):
    envfile.write_env_file(tmp_path / ".env", {"CRON_SECRET": "from-the-dotenv-file-1234"})
    explicit = tmp_path / ".env.production.local"
    explicit.write_text('CRON_SECRET="nine-char"\n')
    result = _ops(tmp_path / ".env", "--env-file", str(explicit), "doctor", "--offline")
    assert "only 9 characters" in result.stdout and "settings from" not in result.stderr


def test_a_missing_variable_is_named_with_the_file_looked_in(tmp_path):
    envfile.write_env_file(tmp_path / ".env", {"CRON_SECRET": "from-the-dotenv-file-1234"})
    result = _ops(tmp_path / ".env", "migrate", "status")
    assert result.returncode == 1
    assert "DATABASE_URL is not set" in result.stderr and str(tmp_path / ".env") in result.stderr
    missing = _ops(tmp_path / "nothing-here.env", "blocked")
    assert "UPSTASH_REDIS_REST_URL is not set" in missing.stderr and "make dev" in missing.stderr


def test_maintenance_on_names_the_store_that_failed_and_why(tmp_path):
    result = _ops(tmp_path / "absent.env", "maintenance", "on")
    assert result.returncode == 1
    assert "DATABASE_URL is not set" in result.stdout and "UPSTASH_REDIS_REST_URL is not set" in result.stdout
