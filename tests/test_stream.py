"""POST /api/generate with "stream": true, over real HTTP into the real handler (and into the
handler composed the way the Vercel runtime's IPC mode composes it), with the real SDKs
reading the fake providers' real streaming wire formats, real Postgres and Redis."""

import json
import socket
import time
from typing import Any

import httpx
import pytest

from devtools.serve import runtime_handler, serve_in_process
from devtools.vercel_config import MAX_DURATION_S
from lib.generation.llm.streaming import STREAM_DEADLINE_S
from tests.support.tokens import mint_token


def _events(response: httpx.Response) -> list[tuple[str, Any, float]]:
    """(event, data, seconds since the request) per server-sent event, as they arrive."""
    events, name, started = [], None, time.monotonic()
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[len("data: "):]), time.monotonic() - started))
    return events


def _stream(stack, body: dict | None = None, url: str | None = None):
    token = mint_token("user_1", org_id="org_1", email="user_1@example.com")
    return stack.client.stream(
        "POST", url or stack.url, json={"prompt": "Say hi", "stream": True, **(body or {})},
        headers={"authorization": f"Bearer {token}", "x-forwarded-for": "198.51.100.10"})


def _wait_for(sql, query: str, expected, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        rows = sql(query)
        if rows == expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_stream_is_deltas_then_done_with_exactly_the_json_body(stack, sql):
    with _stream(stack) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert "content-length" not in response.headers
        assert response.headers["x-ratelimit-limit"]
        events = _events(response)
    names = [name for name, _, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"delta"} and len(names) == 5
    text = "".join(data["text"] for name, data, _ in events if name == "delta")
    assert text == "Hello from the fake provider."
    done = events[-1][1]
    plain = stack.post({"prompt": "Say hi"}).json()
    assert set(done) == set(plain) == {"id", "text", "provider", "model", "fallback", "usage",
                                        "cost_usd", "quota", "provider_request_id"}
    assert done["text"] == text and done["provider"] == "openai" and done["fallback"] is False
    # usage from the include_usage chunk, not an estimate
    assert done["usage"] == {"input_tokens": 12, "output_tokens": 8, "total_tokens": 20}
    assert done["cost_usd"] == plain["cost_usd"] and done["quota"]["used"] == 1
    sent = stack.openai.requests[0]["json"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sql("SELECT status, input_tokens, output_tokens FROM generations WHERE id = %s",
               done["id"]) == [("succeeded", 12, 8)]


def test_fallback_to_anthropic_happens_before_the_first_delta(stack, sql):
    stack.openai.script(503)
    stack.anthropic.input_tokens, stack.anthropic.output_tokens = 21, 9
    with _stream(stack) as response:
        events = _events(response)
    done = events[-1][1]
    assert events[-1][0] == "done" and done["provider"] == "anthropic" and done["fallback"]
    assert done["usage"] == {"input_tokens": 21, "output_tokens": 9, "total_tokens": 30}
    assert stack.anthropic.requests[0]["json"]["stream"] is True
    [(status, primary, attempts)] = sql("SELECT status, primary_outcome, attempts FROM generations")
    assert status == "succeeded" and primary == "failed"
    assert [a["outcome"] for a in attempts] == ["failed", "succeeded"]


def test_an_in_stream_error_before_any_text_still_falls_back(stack):
    stack.openai.stream_error_after = 0
    with _stream(stack) as response:
        events = _events(response)
    assert events[-1][0] == "done" and events[-1][1]["provider"] == "anthropic"


def test_errors_before_the_first_delta_keep_their_json_status(stack, sql):
    stack.openai.script(500)
    stack.anthropic.script(529)
    with _stream(stack) as response:
        response.read()
    assert response.status_code == 502 and response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "provider_unavailable"
    assert response.json()["error"]["quota"]["used"] == 0
    stack.openai.script(400)
    with _stream(stack) as response:
        response.read()
    assert response.status_code == 400 and response.json()["error"]["code"] == "provider_rejected"
    with _stream(stack, {"stream": "yes"}) as response:
        response.read()
    assert response.status_code == 400 and response.json()["error"]["field"] == "stream"
    assert sql("SELECT status FROM generations") == [("failed",), ("failed",)]


def test_an_error_after_the_first_delta_is_an_error_event_and_settles_the_tokens(stack, sql):
    stack.openai.stream_error_after = 2
    with _stream(stack) as response:
        assert response.status_code == 200
        events = _events(response)
    assert [name for name, _, _ in events] == ["delta", "delta", "error"]
    error = events[-1][1]["error"]
    assert error["code"] == "provider_unavailable" and error["quota"]["used"] == 0
    assert stack.anthropic.calls == 0  # no fallback once text was sent
    [(gid, status, input_tokens, output_tokens, cost, attempts)] = sql(
        "SELECT id::text, status, input_tokens, output_tokens, cost_usd, attempts FROM generations")
    assert gid == error["generation_id"] and status == "failed"
    sent_text = "".join(data["text"] for name, data, _ in events if name == "delta")
    # OpenAI reports usage only at the end: both counts come from the text
    assert input_tokens == 2 and output_tokens == -(-len(sent_text) // 4) and cost > 0
    assert [a["outcome"] for a in attempts] == ["failed"]


def test_client_disconnect_closes_the_provider_stream_and_cancels_the_row(stack, sql):
    stack.openai.text = "word " * 200
    stack.openai.stream_chunks, stack.openai.chunk_interval_s = 100, 0.05
    with _stream(stack) as response:
        lines = response.iter_lines()
        assert next(lines) == "event: delta"
        next(lines)
    # the client has hung up after one delta
    rows = _wait_for(sql, "SELECT status FROM generations", [("cancelled",)])
    assert rows == [("cancelled",)]
    deadline = time.monotonic() + 5
    while stack.openai.stream_disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stack.openai.stream_disconnects == 1  # the provider saw the stream closed
    [(output_tokens, cost, used)] = sql(
        "SELECT g.output_tokens, g.cost_usd, u.used FROM generations g "
        "JOIN generation_usage u USING (organization_id)")
    assert 0 < output_tokens < 250 and cost > 0
    assert used == 1  # the provider was paid for what it sent: the unit stays used


def test_deltas_arrive_spread_over_time_not_buffered(stack):
    stack.openai.stream_chunks, stack.openai.chunk_interval_s = 5, 0.15
    with _stream(stack) as response:
        events = _events(response)
    arrivals = [at for name, _, at in events if name == "delta"]
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] >= 0.5  # 4 gaps of 0.15 s, seen by the client as such
    assert all(b - a >= 0.1 for a, b in zip(arrivals, arrivals[1:]))


# --- the Vercel runtime's IPC mode ----------------------------------------------------------

# devtools.serve.runtime_handler is vc_init's own IPC-mode composition, copied from the pinned
# runtime: `class Handler(BaseHandler, app)`, its handle_one_request first.


def test_streams_through_the_runtime_ipc_handler_composition(stack, sql):
    stack.openai.stream_chunks, stack.openai.chunk_interval_s = 4, 0.15
    with serve_in_process(runtime_handler("api/generate.py")) as base:
        with _stream(stack, url=base + "/api/generate") as response:
            assert response.headers["content-type"] == "text/event-stream"
            events = _events(response)
        arrivals = [at for name, _, at in events if name == "delta"]
        assert events[-1][0] == "done" and len(arrivals) == 4
        assert arrivals[-1] - arrivals[0] >= 0.4
        assert events[-1][1]["text"] == "Hello from the fake provider."
        # a disconnect there is seen too
        stack.openai.stream_chunks, stack.openai.chunk_interval_s = 29, 0.05
        port = int(base.rsplit(":", 1)[1])
        body = json.dumps({"prompt": "Say hi", "stream": True}).encode()
        token = mint_token("user_1", org_id="org_1", email="user_1@example.com")
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                        b"\r\nAuthorization: Bearer " + token.encode() +
                        b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            assert b"event: delta" in raw.recv(65536) or b"event: delta" in raw.recv(65536)
        rows = _wait_for(sql, "SELECT status FROM generations ORDER BY created_at",
                         [("succeeded",), ("cancelled",)])
        assert rows == [("succeeded",), ("cancelled",)]


@pytest.mark.pure
def test_max_duration_leaves_room_for_the_stream_deadline():
    # 4096 tokens at 20 tokens/s must fit the deadline, and the deadline the function's time
    assert STREAM_DEADLINE_S >= 4096 / 20
    assert MAX_DURATION_S["api/generate.py"] >= STREAM_DEADLINE_S + 15
