"""The CLI's entry point: every command has --help, usage errors exit 2, failures exit 1."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ops.cli import main, parser
from tests.support.cli import run_cli

COMMANDS = sorted(parser()._subparsers._group_actions[0].choices)


def test_every_runbook_procedure_has_a_command():
    assert {"migrate", "doctor", "health", "monitoring", "block-ip", "unblock-ip", "blocked",
            "maintenance", "dev-token", "seed-demo"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m ops") and command in out


def test_unknown_command_is_a_usage_error():
    result = run_cli("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_a_missing_env_file_is_an_error_not_a_traceback():
    result = run_cli("--env-file", "/nonexistent/.env", "doctor")
    assert result.returncode == 1
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr


def test_env_file_values_are_used(tmp_path, monkeypatch):
    env_file = tmp_path / ".env.production"
    env_file.write_text('CRON_SECRET="only-nine"\n')
    monkeypatch.delenv("CRON_SECRET", raising=False)
    result = run_cli("--env-file", str(env_file), "doctor", "--offline")
    assert "only 9 characters, needs at least 16" in result.stdout


def test_importing_the_cli_loads_no_devtools_and_no_jwt():
    """`ops health` against production must not pay for the dev key pair or the demo data."""
    probe = ("import json, sys, ops.cli; print(json.dumps(sorted(m for m in sys.modules "
             "if m.split('.')[0] in ('devtools', 'jwt', 'cryptography', 'tests'))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert json.loads(result.stdout) == []
