"""`make dev` on zero config: the local LLM provider, generated dev secrets, one stack at a
time, Redis state kept across restarts, and a quiet Ctrl-C that stops everything it started
(the embedded Postgres included). Each runs a real stack in a scratch copy of the repo."""

import json
import subprocess
import sys

import httpx
import openai
import pytest

from devtools import local_llm
from ops import envfile
from tests.support.dev_stack import DevStack, processes_under, scratch_repo

pytestmark = [pytest.mark.pure, pytest.mark.slow]  # embedded Postgres and Redis of its own


def ops(root, *args, env):
    return subprocess.run([sys.executable, "-m", "ops", *args], cwd=root, env=env, text=True,
                          capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = scratch_repo(tmp_path_factory.mktemp("dev"))
    yield root
    leftovers = processes_under(root)
    for line in leftovers:  # don't leave them to the next session either
        subprocess.run(["kill", "-9", line.split(":", 1)[0]], check=False)


def test_a_second_start_is_refused_and_touches_nothing_and_ctrl_c_is_quiet(repo):
    stack = DevStack(repo).start()
    try:
        env_before = (repo / ".env").read_bytes()
        settings = envfile.read_env_file(repo / ".env")
        second = DevStack(repo, port=stack.port + 1).run()
        assert second.returncode != 0
        assert f"already running (pid {stack.process.pid}) on :{stack.port}" in second.stderr
        assert (repo / ".env").read_bytes() == env_before
        assert stack.pid_file() == {"pid": stack.process.pid, "port": stack.port}
        # zero config: every generated dev value is there
        assert settings["OPENAI_MODEL"] == "local-dev" and settings["OPENAI_BASE_URL"].endswith("/v1")
        assert settings["STRIPE_WEBHOOK_SECRET"].startswith("whsec_")
        assert settings["STRIPE_PRICE_TEAM"] == "price_test_team"
        assert settings["OPERATOR_ORG_IDS"] == "org_dev_operator"
        assert httpx.get(stack.url + "/api/health", timeout=30).json()["status"] == "healthy"
        doctor = ops(repo, "doctor", env=stack.env)  # a fresh stack passes, with warnings
        assert doctor.returncode == 0 and "warn" in doctor.stdout, doctor.stdout + doctor.stderr
    finally:
        seconds = stack.interrupt()
    output = stack.output()
    assert seconds < 5, output
    assert stack.process.returncode == 0
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert processes_under(repo) == []  # vercel/functions, Redis and the embedded Postgres
    assert not (repo / ".data" / "dev.pid").exists()


def test_redis_state_survives_a_restart(repo):
    env = {**DevStack(repo).env}
    stack = DevStack(repo, env=env).start()
    try:
        blocked = ops(repo, "block-ip", "203.0.113.50", "--hours", "2", "--reason", "kept", env=env)
        assert blocked.returncode == 0, blocked.stderr
        assert "settings from .env" in blocked.stderr
        assert ops(repo, "maintenance", "on", env=env).returncode == 0
    finally:
        stack.interrupt()
    stack = DevStack(repo, env=env).start()
    try:
        listed = ops(repo, "blocked", "--json", env=env)
        assert "203.0.113.50" in listed.stdout, listed.stdout + listed.stderr
        status = ops(repo, "maintenance", "status", env=env)
        assert "ON" in status.stdout and "read from redis" in status.stdout
        assert ops(repo, "maintenance", "off", env=env).returncode == 0
    finally:
        stack.interrupt()


def test_the_local_provider_speaks_the_openai_api_deterministically():
    llm = local_llm.LocalLLM()
    try:
        client = openai.OpenAI(api_key=local_llm.API_KEY, base_url=llm.base_url, max_retries=0)
        messages = [{"role": "user", "content": "Write a tagline for a bakery"}]
        first = client.chat.completions.create(model="local-dev", messages=messages, max_tokens=64)
        again = client.chat.completions.create(model="local-dev", messages=messages, max_tokens=64)
        assert first.model == "local-dev" and first.choices[0].message.content
        assert first.choices[0].message.content == again.choices[0].message.content
        assert first.usage.prompt_tokens == 6 and first.usage.total_tokens == (
            first.usage.prompt_tokens + first.usage.completion_tokens)
        other = client.chat.completions.create(model="local-dev", max_tokens=64,
                                               messages=[{"role": "user", "content": "Other"}])
        assert other.choices[0].message.content != first.choices[0].message.content

        stream = client.chat.completions.create(model="local-dev", messages=messages, max_tokens=64,
                                                stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == first.choices[0].message.content
        assert chunks[-1].usage.completion_tokens == first.usage.completion_tokens
        assert all(c.object == "chat.completion.chunk" and c.model == "local-dev" for c in chunks)

        with httpx.stream("POST", llm.base_url + "/chat/completions", json={
                "model": "local-dev", "messages": messages, "stream": True},
                headers={"Authorization": "Bearer k"}) as raw:
            lines = [line for line in raw.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        assert json.loads(lines[0].removeprefix("data: "))["choices"][0]["delta"]["role"] == "assistant"
        assert httpx.post(llm.base_url + "/chat/completions", json={"messages": []}).status_code == 401
    finally:
        llm.close()
