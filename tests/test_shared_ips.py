"""POST /api/generate and shared IPs (issue 10 §4): an office behind one NAT is limited per
user, not locked out; anonymous floods are limited then blocked; IPv6 is one client per /64
and an IPv4-mapped address is its IPv4; a refused client costs one Redis round trip."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from devtools.serve import LocalServer
from lib import ip_blocks, maintenance

OFFICE = "203.0.113.40"


def _wait_clear_of_window_edge(window_s: int) -> None:
    # A sliding window weighs the previous window's count; start well inside a window.
    if time.time() % window_s > window_s - 25:
        time.sleep(window_s - time.time() % window_s + 0.1)


def test_eight_colleagues_behind_one_nat_are_all_served_and_nothing_is_blocked(stack, sql,
                                                                                redis_direct):
    stack.configure(RATE_LIMIT_IP="20/60s", RATE_LIMIT_USER="10/60s", AUTO_BLOCK_THRESHOLD="50",
                    QUOTA_TRIAL="200")
    _wait_clear_of_window_edge(60)

    def colleague(n: int) -> list[int]:
        return [stack.post(user=f"user_nat_{n}", org="org_office", ip=OFFICE).status_code
                for _ in range(10)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = [status for batch in pool.map(colleague, range(8)) for status in batch]
    assert statuses == [200] * 80
    assert stack.post(user="user_nat_9", org="org_office", ip=OFFICE).status_code == 200
    assert not redis_direct.exists(f"blocked:ip:{OFFICE}")
    assert sql("SELECT count(*) FROM ip_blocks") == [(0,)]
    # Each colleague still has their own limit.
    limited = stack.post(user="user_nat_0", org="org_office", ip=OFFICE)
    assert limited.status_code == 429 and limited.json()["error"]["scope"] == "user"


def test_an_anonymous_flood_is_limited_then_blocked_for_everyone_on_the_ip(stack, sql):
    stack.configure(RATE_LIMIT_IP="20/60s", AUTO_BLOCK_THRESHOLD="50")
    _wait_clear_of_window_edge(60)
    ip = "198.51.100.66"
    statuses = [stack.post(token="", ip=ip).status_code for _ in range(80)]
    assert statuses == [401] * 20 + [429] * 51 + [403] * 9
    assert sql("SELECT host(ip), source FROM ip_blocks") == [(ip, "auto")]
    assert stack.post(ip=ip).json()["error"]["code"] == "ip_blocked"  # valid token too


def test_blocking_one_ipv6_address_refuses_its_64(stack):
    ip_blocks.block_ip("2001:db8::1", reason="test")
    for ip in ("2001:db8::2", "2001:db8::dead:beef", "2001:db8::3%eth0"):
        response = stack.post(ip=ip)
        assert response.status_code == 403 and response.json()["error"]["code"] == "ip_blocked"
    assert stack.post(ip="2001:db8:0:1::2").status_code == 200
    assert stack.openai.calls == 1


def test_blocking_an_ipv4_address_refuses_it_mapped_into_ipv6(stack):
    ip_blocks.block_ip("192.0.2.1", reason="test")
    for ip in ("::ffff:192.0.2.1", "[::ffff:192.0.2.1]:443", "192.0.2.1:5555"):
        assert stack.post(ip=ip).status_code == 403
    assert stack.openai.calls == 0


def test_an_anonymous_ipv6_flood_is_limited_across_its_64(stack):
    stack.configure(RATE_LIMIT_IP="5/60s")
    _wait_clear_of_window_edge(60)
    statuses = [stack.post(token="", ip=f"2001:db8:7:7::{i:x}").status_code for i in range(1, 9)]
    assert statuses == [401] * 5 + [429] * 3


class _CountingUpstash:
    """Forwards Upstash REST requests to the real proxy, counting them (one per round trip).
    The maintenance flag's read is left out: it is cached for seconds per process
    (lib.maintenance.CACHE_S), not paid per request."""

    def __init__(self, target: str):
        self.requests = 0
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if json.loads(body or b"[]") != ["GET", maintenance.KEY]:
                    counter.requests += 1
                upstream = httpx.post(target + self.path, content=body, headers={
                    "authorization": self.headers.get("authorization") or "",
                    "content-type": "application/json"})
                self.send_response(upstream.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

        self._server = LocalServer(Handler)
        self.url, self.close = self._server.url, self._server.close


@pytest.fixture
def counted(stack, upstash):
    counter = _CountingUpstash(upstash)
    stack.configure(UPSTASH_REDIS_REST_URL=counter.url)
    yield counter
    counter.close()


def test_a_blocked_or_limited_client_costs_one_redis_round_trip(stack, counted):
    stack.configure(RATE_LIMIT_IP="2/60s", RATE_LIMIT_USER="1/60s", AUTO_BLOCK_THRESHOLD="50")
    _wait_clear_of_window_edge(60)

    def round_trips(**post) -> tuple[int, int]:
        before = counted.requests
        status = stack.post(**post).status_code
        return status, counted.requests - before

    assert [round_trips(token="", ip="198.51.100.5") for _ in range(5)] == \
        [(401, 1)] * 2 + [(429, 1)] * 3
    assert round_trips(user="user_rt")[0] == 200
    assert [round_trips(user="user_rt") for _ in range(3)] == [(429, 1)] * 3
    ip_blocks.block_ip("198.51.100.6")
    assert [round_trips(ip="198.51.100.6") for _ in range(2)] == [(403, 1)] * 2
    assert round_trips(token="", ip="198.51.100.6") == (403, 1)
