"""The shared HTTP layer (lib.http): dispatch, body cap, JSON errors, IPs, request ids, Sentry."""

import json
import socket

import httpx
import pytest

from lib import config
from lib.http import Endpoint
from devtools.serve import SentryReceiver

ROUTES = ["api/health.py", "api/generate.py", "api/webhooks/stripe.py",
          "api/cron/weekly-reminders.py", "api/cron/purge.py", "api/admin/monitoring.py"]


class Probe(Endpoint):
    """A route written only for these tests, to exercise the base class itself."""

    route = "/probe"

    def post(self, request):
        return {"json": request.json(), "ip": request.client_ip, "request_id": request.request_id}

    def get(self, request):
        raise RuntimeError("boom: the unhandled path")


@pytest.fixture
def probe(serve):
    return serve(Probe)


def _raw(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_wrong_method_is_405_with_allow_header(serve):
    url = serve("api/health.py")
    response = httpx.post(url + "/api/health", json={})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_unknown_verb_gets_json_405_not_html_501(serve):
    url = serve("api/generate.py")
    response = httpx.request("BREW", url + "/api/generate")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_head_answers_headers_only(serve):
    response = httpx.head(serve("api/health.py") + "/api/health")
    assert response.status_code == 200 and response.content == b""


@pytest.mark.parametrize("entrypoint", ROUTES)
def test_every_route_answers_an_undeclared_verb_with_json_405(serve, entrypoint):
    from devtools.serve import load_handler

    allowed = load_handler(entrypoint).allowed_methods()
    response = httpx.request("DELETE", serve(entrypoint) + "/x", headers={"x-forwarded-for": "<x>"})
    assert response.status_code == 405
    assert response.headers["allow"] == ", ".join(allowed)
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_body_over_the_cap_is_413_before_it_is_read(probe, monkeypatch):
    monkeypatch.setenv("MAX_BODY_BYTES", "2048")
    config.reload()
    # Announce 10 MB but send nothing: the answer must come without waiting for the body.
    raw = _raw(probe, b"POST /probe HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split()[1] == b"413" and b"Connection: close" in head
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_default_cap_is_one_mebibyte(probe):
    ok = httpx.post(probe + "/probe", content=json.dumps({"a": "x" * (1024 * 1024 - 100)}))
    assert ok.status_code == 200
    too_big = httpx.post(probe + "/probe", content=b" " * (1024 * 1024 + 1))
    assert too_big.status_code == 413


@pytest.mark.parametrize("body,code", [
    (b"{not json", "invalid_json"), (b"[1, 2]", "invalid_json"), (b"", "invalid_json"),
    (b"\xff\xfe", "invalid_json"), (b"[" * 100000, "invalid_json"),
])
def test_bad_json_is_400(probe, body, code):
    response = httpx.post(probe + "/probe", content=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("length", ["abc", "-5"])
def test_bad_content_length_is_400(probe, length):
    raw = _raw(probe, f"POST /probe HTTP/1.0\r\nContent-Length: {length}\r\n\r\n".encode())
    assert raw.split()[1] == b"400"


def test_chunked_body_is_411(probe):
    raw = _raw(probe, b"POST /probe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert raw.split()[1] == b"411"


def test_oversized_header_gets_a_json_error(probe):
    raw = _raw(probe, b"GET /probe HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b" ")[1].startswith(b"4")
    assert json.loads(body)["error"]["code"] == "malformed_request"


def test_garbage_request_line_gets_a_json_error(probe):
    raw = _raw(probe, b"\x00\x01 garbage\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400"
    assert json.loads(body)["error"]["code"] == "malformed_request"


@pytest.mark.parametrize("headers,expected", [
    ({"x-vercel-forwarded-for": "203.0.113.7", "x-forwarded-for": "198.51.100.1"}, "203.0.113.7"),
    ({"x-forwarded-for": "198.51.100.1, 10.0.0.1"}, "198.51.100.1"),
    ({"x-forwarded-for": "not-an-ip", "x-real-ip": "2001:db8::1"}, "2001:db8::1"),
    ({"x-forwarded-for": "[2001:db8::2]:443"}, "2001:db8::2"),
    ({"x-real-ip": "192.0.2.1:8080"}, "192.0.2.1"),
    ({"x-forwarded-for": "<script>"}, "127.0.0.1"),
])
def test_client_ip_is_the_first_valid_forwarded_hop(probe, headers, expected):
    response = httpx.post(probe + "/probe", json={}, headers=headers)
    assert response.json()["ip"] == expected


def test_request_id_comes_from_x_vercel_id_and_hostile_ones_are_replaced(probe):
    given = httpx.post(probe + "/probe", json={}, headers={"x-vercel-id": "iad1::xyz-1"})
    assert given.headers["x-request-id"] == "iad1::xyz-1" == given.json()["request_id"]
    hostile = httpx.post(probe + "/probe", json={}, headers={"x-vercel-id": "a b\"<>" * 50})
    assert len(hostile.headers["x-request-id"]) == 32 and '"' not in hostile.headers["x-request-id"]


def test_every_request_logs_one_json_line(probe, capfd):
    httpx.post(probe + "/probe", json={"x": 1}, headers={"authorization": "Bearer sekret-token"})
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    request_lines = [line for line in lines if line["event"] == "request"]
    assert len(request_lines) == 1
    assert request_lines[0]["route"] == "/probe" and request_lines[0]["status"] == 200
    assert isinstance(request_lines[0]["duration_ms"], float)
    assert "sekret-token" not in json.dumps(lines)


def test_unhandled_exception_is_500_json_and_reaches_sentry_without_secrets(probe, monkeypatch):
    receiver = SentryReceiver()
    try:
        monkeypatch.setenv("SENTRY_DSN", receiver.dsn)
        config.reload()
        response = httpx.get(probe + "/probe", headers={
            "authorization": "Bearer sekret-token", "cookie": "session=sekret-cookie",
            "stripe-signature": "t=1,v1=sekret-sig"})
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["code"] == "internal_error"
        assert error["request_id"] == response.headers["x-request-id"]
        assert "boom" not in response.text and "Traceback" not in response.text
        assert receiver.wait_for(1)  # flushed after the response was written
        assert len(receiver.events) == 1
        event = receiver.events[0]
        assert event["exception"]["values"][-1]["type"] == "RuntimeError"
        assert event["tags"]["request_id"] == response.headers["x-request-id"]
        everything = b"".join(receiver.raw)
        for secret in (b"sekret-token", b"sekret-cookie", b"sekret-sig"):
            assert secret not in everything
    finally:
        receiver.close()


def test_malformed_setting_is_a_clear_500_naming_the_variable(probe, monkeypatch):
    monkeypatch.setenv("MAX_BODY_BYTES", "lots")
    config.settings.cache_clear()
    response = httpx.post(probe + "/probe", json={})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "config_error"
    assert "MAX_BODY_BYTES" in response.json()["error"]["message"]


def test_connections_are_kept_alive_unless_a_body_was_left_unread(probe):
    """HTTP/1.1 keep-alive: two requests on one connection; after a refused request whose
    body was never read, the connection is closed (its body must not be read as a request)."""
    port = int(probe.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        reader = conn.makefile("rb")
        for _ in range(2):
            conn.sendall(b"POST /probe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 2\r\n\r\n{}")
            status = reader.readline()
            headers = {}
            while (line := reader.readline()) != b"\r\n":
                name, _, value = line.decode().partition(":")
                headers[name.lower()] = value.strip()
            reader.read(int(headers["content-length"]))
            assert status.startswith(b"HTTP/1.1 ") and "connection" not in headers
        conn.sendall(b"DELETE /probe HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nGET / HTTP/")
        rest = reader.read()  # the server closes after this answer
        assert rest.split()[1] == b"405" and b"Connection: close" in rest
        assert rest.count(b"HTTP/1.") == 1
