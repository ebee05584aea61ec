"""The real Vercel CLI: `vercel build` offline and `vercel dev -L` (what `make dev` runs).

Both run in a copy of the project's tracked files, so they see what a fresh clone has.
"""

import json
import os
import signal
import shutil
import time
import subprocess
from pathlib import Path

import httpx
import pytest
from croniter import croniter

from devtools import wheels
from devtools.services import ROOT, free_port
from devtools.serve import wait_for_port

pytestmark = pytest.mark.slow
API_FILES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "api").rglob("*.py"))
LEAKS = ["/lib/config.py", "/lib/http.py", "/requirements.txt", "/.env", "/vercel.json",
         "/devtools/dev.py", "/package.json", "/.env.example"]
VERCEL = ROOT / "node_modules" / ".bin" / "vercel"


def _project_copy(tmp: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    copy = tmp / "app"
    for name in files:
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    for linked in ("node_modules", ".venv"):
        (copy / linked).symlink_to(ROOT / linked)
    return copy


def _cli_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
            "VERCEL_TELEMETRY_DISABLED": "1", "DO_NOT_TRACK": "1"}


@pytest.fixture(scope="module")
def build_output(tmp_path_factory) -> Path:
    copy = _project_copy(tmp_path_factory.mktemp("build"))
    wheel_dir = ROOT / ".data" / "wheels"
    wheels.fill(wheel_dir)
    (copy / ".vercel").mkdir()
    (copy / ".vercel" / "project.json").write_text(json.dumps(
        {"projectId": "prj_localbuild", "orgId": "team_localbuild", "settings": {"framework": None}}))
    env = {**_cli_env(), "UV_OFFLINE": "1", "UV_FIND_LINKS": str(wheel_dir)}
    result = subprocess.run([str(VERCEL), "build", "--yes"], cwd=copy, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return copy / ".vercel" / "output"


def test_build_has_one_function_per_api_file(build_output):
    functions = sorted(p.relative_to(build_output / "functions").as_posix().removesuffix(".func")
                       for p in (build_output / "functions").rglob("*.func"))
    assert functions == [f.removesuffix(".py") for f in API_FILES]


def test_every_cron_has_a_function_and_a_valid_schedule(build_output):
    config = json.loads((ROOT / "vercel.json").read_text())
    assert config["crons"], "vercel.json declares no crons"
    for cron in config["crons"]:
        assert (build_output / "functions" / (cron["path"].lstrip("/") + ".func")).is_dir(), cron
        assert len(cron["schedule"].split()) == 5 and croniter.is_valid(cron["schedule"]), cron
        assert (ROOT / (cron["path"].lstrip("/") + ".py")).is_file()


def test_build_serves_no_source_or_env_file(build_output):
    static = sorted(p.relative_to(build_output / "static").as_posix()
                    for p in (build_output / "static").rglob("*") if p.is_file())
    assert static == ["robots.txt"]


def test_bundles_carry_lib_but_no_dev_tooling_or_secrets(build_output):
    configs = list((build_output / "functions").rglob(".vc-config.json"))
    assert len(configs) == len(API_FILES)
    for path in configs:
        names = set(json.loads(path.read_text())["filePathMap"])
        assert "lib/http.py" in names and "lib/migrations/0001_init.sql" in names, path
        leaked = [n for n in names if n.split("/")[0] in ("devtools", "tests", "ops", "bench", ".data")
                  or n in (".env", "README.md", "requirements-dev.txt", "pytest.ini")]
        assert leaked == [], (path, leaked[:5])


def _stop(process: subprocess.Popen) -> None:
    """Stop `devtools.dev` the way Ctrl-C does: it stops `vercel dev`, which runs in a session
    of its own (a SIGKILL of dev's group alone would leave the CLI and its functions running)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_vercel_dev_serves_health_and_no_source_files(tmp_path, app_env):
    copy = _project_copy(tmp_path)
    port = free_port()
    env = {**_cli_env(), **app_env, "PORT": str(port)}
    process = subprocess.Popen([str(ROOT / ".venv" / "bin" / "python"), "-m", "devtools.dev"],
                               cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        wait_for_port(port, timeout=120, process=process)
        response = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=300)
        assert response.status_code == 200, response.text
        assert response.json()["checks"] == {"database": "ok", "redis": "ok"}
        for path in LEAKS:
            assert httpx.get(f"http://127.0.0.1:{port}{path}", timeout=60).status_code == 404, path
    finally:
        _stop(process)


def test_vercel_dev_streams_generate(tmp_path, app_env):
    """`"stream": true` through the real CLI: every event arrives, in order, ending in done.
    `vercel dev` runs a plain handler class through vc_init's buffered vc_handler (it reads the
    whole response, then answers), so here the events arrive together; the platform's IPC mode
    streams them (tests/test_stream.py composes its handler)."""
    from devtools.fake_llm import FakeAnthropic, FakeOpenAI
    from tests.support.generate_stack import stack_env
    from tests.support.tokens import mint_token

    openai, anthropic = FakeOpenAI(), FakeAnthropic()
    openai.stream_chunks, openai.chunk_interval_s = 5, 0.3
    copy = _project_copy(tmp_path)
    port = free_port()
    env = {**_cli_env(), **app_env, **stack_env(openai, anthropic), "PORT": str(port)}
    process = subprocess.Popen([str(ROOT / ".venv" / "bin" / "python"), "-m", "devtools.dev"],
                               cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        wait_for_port(port, timeout=120, process=process)
        # the first request builds the function (minutes): a token that outlives that
        token = mint_token("user_1", org_id="org_1", email="user_1@example.com",
                           exp=int(time.time()) + 3600)
        events, started = [], None
        with httpx.stream("POST", f"http://127.0.0.1:{port}/api/generate", timeout=300,
                          json={"prompt": "Say hi", "stream": True},
                          headers={"authorization": f"Bearer {token}"}) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("event: "):
                    started = started or time.monotonic()
                    events.append((line[len("event: "):], time.monotonic() - started))
        names = [name for name, _ in events]
        assert names == ["delta"] * 5 + ["done"], names
        print("vercel dev delta arrival spread (s):", round(events[4][1] - events[0][1], 2))
    finally:
        _stop(process)
        openai.close()
        anthropic.close()
