"""Issue 14 §2: Sentry the way a Vercel deploy needs it. Events carry the deploy's release and
environment; degraded-mode reports are rate-limited per component; the flush happens after the
response is written and before the handler returns (what the runtime waits for)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from devtools.serve import SentryReceiver, runtime_handler, serve_in_process
from devtools.services import free_port
from lib import config
from lib.http import Endpoint
from lib.observability import report_degraded
from tests.support.generate_stack import GenerateStack

SHA = "3f1c2a9e8b7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b"


class Broken(Endpoint):
    route = "/broken"

    def get(self, request):
        raise RuntimeError("an unhandled bug")


@pytest.fixture
def receiver(monkeypatch):
    receiver = SentryReceiver()
    monkeypatch.setenv("SENTRY_DSN", receiver.dsn)
    config.reload()
    yield receiver
    receiver.close()


@pytest.mark.pure
def test_events_carry_release_and_environment(receiver, serve, monkeypatch):
    monkeypatch.setenv("VERCEL_GIT_COMMIT_SHA", SHA)
    monkeypatch.setenv("VERCEL_ENV", "preview")
    config.reload()
    url = serve(Broken)
    assert httpx.get(url + "/broken", timeout=30).status_code == 500
    assert receiver.wait_for(1)
    event = receiver.events[0]
    assert (event["release"], event["environment"]) == (SHA, "preview")


def test_fifty_requests_during_a_redis_outage_send_one_event(stack, receiver):
    stack.configure(UPSTASH_REDIS_REST_URL=f"http://127.0.0.1:{free_port()}",
                    QUOTA_TRIAL="100")
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(lambda i: stack.post(user=f"user_{i % 5}").status_code, range(50)))
    assert statuses == [200] * 50  # fail open
    assert receiver.wait_for(1)
    time.sleep(1)  # anything else that was queued would have arrived by now
    assert len(receiver.events) == 1
    event = receiver.events[0]
    assert event["tags"]["component"] == "redis" and event["tags"]["degraded"] in (True, "True", "true")


def _ended(handler) -> bool:
    return any(message["type"] == "end" for message in handler.ipc_messages)


def test_the_response_does_not_wait_for_a_hung_sentry(stack, receiver, monkeypatch):
    """Sentry holds every envelope. The answer arrives anyway, while the handler is still
    flushing (the runtime hasn't been told the invocation ended); once Sentry answers, the
    event arrives and only then does the invocation end."""
    stack.configure(UPSTASH_REDIS_REST_URL=f"http://127.0.0.1:{free_port()}")
    handler = runtime_handler("api/generate.py")
    with serve_in_process(handler) as url:
        route = GenerateStack(url + "/api/generate", stack.openai, stack.anthropic, monkeypatch)
        receiver.hold()
        response = route.post()
        assert response.status_code == 200
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # the handler is still waiting on Sentry
            assert not _ended(handler) and receiver.raw == []
            time.sleep(0.02)
        receiver.release()
        assert receiver.wait_for(1)
        deadline = time.monotonic() + 10
        while not _ended(handler):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        route.client.close()
    assert receiver.events[0]["tags"]["component"] == "redis"


@pytest.mark.pure
def test_a_500_reaches_sentry_before_the_runtime_ends_the_invocation(receiver):
    """The runtime sends its IPC "end" (after which the instance may be frozen) once the
    handler returns; the event must be delivered by then, even from a slow Sentry."""
    receiver.delay_s = 0.5
    handler = runtime_handler(Broken)
    with serve_in_process(handler) as url:
        assert httpx.get(url + "/broken", timeout=30).status_code == 500
        deadline = time.monotonic() + 10
        while not _ended(handler):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert len(receiver.events) == 1


@pytest.mark.pure
def test_degraded_reports_from_many_threads_send_one_event_per_component(receiver):
    start = threading.Barrier(40)

    def degrade(i: int) -> None:
        start.wait()
        report_degraded("redis" if i % 2 else "auto_block", ConnectionError("down"))

    with ThreadPoolExecutor(max_workers=40) as pool:
        list(pool.map(degrade, range(40)))
    assert receiver.wait_for(2)
    time.sleep(0.5)
    assert sorted(e["tags"]["component"] for e in receiver.events) == ["auto_block", "redis"]
