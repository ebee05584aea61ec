"""Blocked client IPs: the runbook's Redis key `blocked:ip:<ip>` ("true", 24 h TTL by
default) is what requests are checked against; the `ip_blocks` table keeps who blocked an IP,
why and until when, for monitoring and audit.

IPs are normalised (`ipaddress`), so `2001:DB8::1` and `2001:db8:0::1` are one block, and
the key matches the client IP `lib.http` derives. Keys set by hand with the runbook's curl
work too (they just have no reason on record).
"""

import ipaddress
from dataclasses import dataclass
from datetime import datetime

from lib import db, redis
from lib.errors import BadRequest
from lib.observability import report_degraded

KEY_PREFIX = "blocked:ip:"
DEFAULT_HOURS = 24
_MAX_HOURS = 24 * 366
_SCAN_COUNT = 200


@dataclass(frozen=True)
class BlockedIp:
    ip: str
    ttl_s: int | None  # seconds the Redis block has left; None = no expiry
    reason: str | None
    source: str  # "auto" | "manual" (a key set outside the app counts as manual)
    blocked_at: datetime | None
    expires_at: datetime | None


def normalize_ip(ip: str) -> str:
    """The canonical text form of an IPv4/IPv6 address. Raises BadRequest otherwise."""
    try:
        return str(ipaddress.ip_address(ip.strip() if isinstance(ip, str) else ip))
    except ValueError:
        raise BadRequest("Not a valid IPv4 or IPv6 address", details={"field": "ip"}) from None


def key(ip: str) -> str:
    return KEY_PREFIX + normalize_ip(ip)


def is_ip_blocked(ip: str) -> bool:
    """Whether `ip` is blocked now. Fails open: when Redis is unreachable it reports the
    failure and answers False (a Redis outage must not take the product down)."""
    try:
        return bool(redis.call(redis.client().exists, key(ip)))
    except redis.RedisUnavailable as exc:
        report_degraded("redis", exc, part="ip_blocks")
        return False


def block_ip(ip: str, hours: float = DEFAULT_HOURS, reason: str = "manual block",
             source: str = "manual") -> BlockedIp:
    """Block `ip` for `hours`: SETEX `blocked:ip:<ip>` (the enforcement, effective
    immediately) then one `ip_blocks` row (the record). Re-blocking refreshes the TTL and adds
    a row. Raises BadRequest for an invalid IP/duration/source, RedisUnavailable when the block
    could not be set (nothing is recorded then), DatabaseUnavailable when only the record failed.
    """
    ip = normalize_ip(ip)
    if source not in ("auto", "manual"):
        raise BadRequest("source must be 'auto' or 'manual'")
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0 < hours <= _MAX_HOURS:
        raise BadRequest(f"hours must be in (0, {_MAX_HOURS}]")
    reason = (reason or "").strip()[:500] or "manual block"
    ttl = max(1, round(hours * 3600))
    redis.call(redis.client().setex, KEY_PREFIX + ip, ttl, "true")
    row = db.fetchone(
        """INSERT INTO ip_blocks (ip, reason, source, expires_at)
           VALUES (%s, %s, %s, now() + make_interval(secs => %s))
           RETURNING created_at, expires_at""", (ip, reason, source, ttl))
    return BlockedIp(ip, ttl, reason, source, row["created_at"], row["expires_at"])


def unblock_ip(ip: str) -> bool:
    """Lift the block on `ip` now: delete the key and end the open `ip_blocks` rows.
    Idempotent; returns whether a Redis block existed."""
    ip = normalize_ip(ip)
    existed = bool(redis.call(redis.client().delete, KEY_PREFIX + ip))
    db.execute("UPDATE ip_blocks SET expires_at = now() WHERE ip = %s AND expires_at > now()", (ip,))
    return existed


def list_blocked(limit: int = 100) -> list[BlockedIp]:
    """Up to `limit` IPs blocked in Redis right now, with TTL, and reason/source from their
    latest `ip_blocks` row. Uses SCAN (never KEYS, which blocks Redis on a big keyspace).
    Raises RedisUnavailable / DatabaseUnavailable."""
    client = redis.client()
    cursor, keys = 0, []
    while len(keys) < limit:
        cursor, batch = redis.call(client.scan, cursor, match=KEY_PREFIX + "*", count=_SCAN_COUNT)
        keys.extend(k for k in batch if k not in keys)
        if int(cursor) == 0:
            break
    ips = []
    for name in keys[:limit]:
        try:
            ips.append(normalize_ip(name.removeprefix(KEY_PREFIX)))
        except BadRequest:
            continue  # a stray key that isn't an IP can't block anyone; don't list it
    if not ips:
        return []
    pipeline = client.pipeline()
    for ip in ips:
        pipeline.ttl(KEY_PREFIX + ip)
    ttls = redis.call(pipeline.exec)
    rows = db.fetchall(
        """SELECT DISTINCT ON (ip) host(ip) AS ip, reason, source, created_at, expires_at
           FROM ip_blocks WHERE ip = ANY(%s::inet[]) ORDER BY ip, created_at DESC""", (ips,))
    records = {row["ip"]: row for row in rows}
    blocked = []
    for ip, ttl in zip(ips, ttls):
        if ttl == -2:  # expired between SCAN and TTL
            continue
        row = records.get(ip) or {}
        blocked.append(BlockedIp(ip, None if ttl == -1 else int(ttl), row.get("reason"),
                                 row.get("source") or "manual", row.get("created_at"),
                                 row.get("expires_at")))
    return blocked
