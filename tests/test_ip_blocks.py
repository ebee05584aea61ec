"""lib.ip_blocks: the runbook's Redis key plus the ip_blocks record."""

import httpx
import psycopg
import pytest

from lib import config, errors, ip_blocks


def test_block_sets_the_runbook_key_with_24h_ttl_and_records_a_row(redis_direct, database_url):
    blocked = ip_blocks.block_ip("203.0.113.9", reason="scraping", source="manual")
    assert redis_direct.get("blocked:ip:203.0.113.9") == "true"
    assert 86390 <= redis_direct.ttl("blocked:ip:203.0.113.9") <= 86400
    assert blocked.ttl_s == 86400
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT host(ip), reason, source, expires_at - created_at FROM ip_blocks").fetchone()
    assert row[:3] == ("203.0.113.9", "scraping", "manual") and row[3].total_seconds() == 86400
    assert ip_blocks.is_ip_blocked("203.0.113.9") and not ip_blocks.is_ip_blocked("203.0.113.10")


def test_ipv6_is_blocked_by_its_64_whatever_the_spelling(redis_direct):
    ip_blocks.block_ip("2001:DB8:0:0::1", hours=1)
    assert redis_direct.exists("blocked:ip:2001:db8::/64")
    assert ip_blocks.is_ip_blocked("2001:db8::1") and ip_blocks.is_ip_blocked("2001:db8::2")
    assert ip_blocks.is_ip_blocked("2001:db8::ffff:1:2%eth0")
    assert not ip_blocks.is_ip_blocked("2001:db8:0:1::1")
    assert [b.ip for b in ip_blocks.list_blocked()] == ["2001:db8::/64"]
    assert ip_blocks.unblock_ip("2001:db8::77") is True
    assert not ip_blocks.is_ip_blocked("2001:db8::1")


def test_ipv4_mapped_ipv6_is_the_ipv4(redis_direct):
    ip_blocks.block_ip("192.0.2.1")
    assert ip_blocks.is_ip_blocked("::ffff:192.0.2.1") and ip_blocks.is_ip_blocked("::ffff:c000:201")
    ip_blocks.block_ip("::ffff:198.51.100.4")
    assert redis_direct.exists("blocked:ip:198.51.100.4")


def test_a_hand_set_key_for_one_ipv6_address_still_blocks_it(redis_direct):
    redis_direct.setex("blocked:ip:2001:db8::7", 600, "true")
    assert ip_blocks.is_ip_blocked("2001:db8:0::7") and not ip_blocks.is_ip_blocked("2001:db8::8")
    assert ip_blocks.unblock_ip("2001:db8::7") is True and not redis_direct.exists("blocked:ip:2001:db8::7")


@pytest.mark.parametrize("ip", ["1.2.3", "999.1.1.1", "example.com", "", "1.2.3.4/24", None])
def test_invalid_ips_are_refused(ip):
    with pytest.raises(errors.BadRequest):
        ip_blocks.block_ip(ip)


@pytest.mark.parametrize("hours", [0, -1, 10**6, "5", True])
def test_invalid_durations_are_refused(hours):
    with pytest.raises(errors.BadRequest):
        ip_blocks.block_ip("192.0.2.1", hours=hours)


def test_unblock_removes_key_and_closes_the_record(redis_direct, database_url):
    ip_blocks.block_ip("192.0.2.5")
    assert ip_blocks.unblock_ip("192.0.2.5") is True
    assert not redis_direct.exists("blocked:ip:192.0.2.5")
    assert ip_blocks.unblock_ip("192.0.2.5") is False
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM ip_blocks WHERE expires_at > now()").fetchone()[0] == 0


def test_list_blocked_scans_keys_with_ttl_and_reason(redis_direct, upstash):
    ip_blocks.block_ip("198.51.100.1", hours=2, reason="abuse", source="auto")
    ip_blocks.block_ip("198.51.100.2", reason="manual check")
    # The runbook's own curl: a key with no record in the table.
    response = httpx.post(f"{upstash}/setex/blocked:ip:198.51.100.3/86400/true",
                          headers={"Authorization": "Bearer test-upstash-token"})
    assert response.status_code == 200
    redis_direct.set("unrelated:key", "x")
    listed = {b.ip: b for b in ip_blocks.list_blocked()}
    assert set(listed) == {"198.51.100.1", "198.51.100.2", "198.51.100.3"}
    assert listed["198.51.100.1"].reason == "abuse" and listed["198.51.100.1"].source == "auto"
    assert 7190 <= listed["198.51.100.1"].ttl_s <= 7200
    assert listed["198.51.100.3"].reason is None and listed["198.51.100.3"].source == "manual"
    assert ip_blocks.is_ip_blocked("198.51.100.3")


def test_list_blocked_respects_the_limit_over_many_keys(redis_direct):
    for i in range(250):
        redis_direct.setex(f"blocked:ip:10.0.{i // 250}.{i % 250}", 600, "true")
    assert len(ip_blocks.list_blocked(limit=100)) == 100
    assert len(ip_blocks.list_blocked(limit=1000)) == 250


def test_is_ip_blocked_fails_open_when_redis_is_down(monkeypatch):
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:9")
    config.reload()
    assert ip_blocks.is_ip_blocked("192.0.2.1") is False
