"""Blocked client IPs: the runbook's Redis key `blocked:ip:<ip>` ("true", 24 h TTL by
default) is what requests are checked against; the `ip_blocks` table keeps who blocked an IP,
why and until when, for monitoring and audit.

What is blocked (and rate limited, lib.generation.rate_limits) is a client's `subject`: an
IPv4 address, or the /64 network of an IPv6 address (one subscriber's allocation: a client
can pick any address in it, so blocking one address would block nothing). An IPv4-mapped
IPv6 address (`::ffff:192.0.2.1`) is its IPv4 address, and a zone id (`fe80::1%eth0`) is
dropped. So `blocked:ip:192.0.2.1` and `blocked:ip:2001:db8::/64` are the keys written.
Keys set by hand with the runbook's curl work too (they just have no reason on record),
including one for a single IPv6 address: the check looks for both keys in one EXISTS.
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


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(ip, str):
        raise BadRequest("Not a valid IPv4 or IPv6 address", details={"field": "ip"})
    try:
        address = ipaddress.ip_address(ip.strip().split("%", 1)[0])
    except ValueError:
        raise BadRequest("Not a valid IPv4 or IPv6 address", details={"field": "ip"}) from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normalize_ip(ip: str) -> str:
    """The canonical text form of an IPv4/IPv6 address (IPv4-mapped -> IPv4, zone id
    dropped). Raises BadRequest otherwise."""
    return str(_address(ip))


def subject(ip: str) -> str:
    """What blocks and IP rate limits apply to: the IPv4 address, or the IPv6 /64 network
    (`2001:db8::/64`). Raises BadRequest for anything but an address."""
    address = _address(ip)
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


def key(ip: str) -> str:
    """The Redis key a block of `ip` is written to (its subject's)."""
    return KEY_PREFIX + subject(ip)


def keys(ip: str) -> list[str]:
    """Every key that blocks `ip`: its subject's, and for IPv6 also a hand-set key for the
    exact address. One EXISTS over them is the whole check."""
    address, own = normalize_ip(ip), key(ip)
    return [own] if own == KEY_PREFIX + address else [own, KEY_PREFIX + address]


def _parse_key(name: str) -> str | None:
    """The subject a listed key blocks, or None for a stray key."""
    text = name.removeprefix(KEY_PREFIX)
    try:
        if "/" in text:
            network = ipaddress.IPv6Network(text)
            return str(network) if network.prefixlen == 64 else None
        return normalize_ip(text)
    except (ValueError, BadRequest):
        return None


def is_ip_blocked(ip: str) -> bool:
    """Whether `ip` is blocked now. Fails open: when Redis is unreachable it reports the
    failure and answers False (a Redis outage must not take the product down)."""
    try:
        return bool(redis.call(redis.client().exists, *keys(ip)))
    except redis.RedisUnavailable as exc:
        report_degraded("redis", exc, part="ip_blocks")
        return False


def block_ip(ip: str, hours: float = DEFAULT_HOURS, reason: str = "manual block",
             source: str = "manual") -> BlockedIp:
    """Block `ip` for `hours`: SETEX `blocked:ip:<ip>` (the enforcement, effective
    immediately) then one `ip_blocks` row (the record). Re-blocking refreshes the TTL and adds
    a row. An IPv6 address blocks its /64. Raises BadRequest for an invalid IP/duration/source,
    RedisUnavailable when the block could not be set (nothing is recorded then),
    DatabaseUnavailable when only the record failed.
    """
    ip = subject(ip)
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
    """Lift the block on `ip` now (its subject's key and a hand-set one for the exact address)
    and end the open `ip_blocks` rows. Idempotent; returns whether a Redis block existed."""
    names = keys(ip)
    existed = bool(redis.call(redis.client().delete, *names))
    db.execute("UPDATE ip_blocks SET expires_at = now() WHERE ip = ANY(%s::inet[])"
               " AND expires_at > now()", ([name.removeprefix(KEY_PREFIX) for name in names],))
    return existed


def list_blocked(limit: int = 100) -> list[BlockedIp]:
    """Up to `limit` IPs blocked in Redis right now, with TTL, and reason/source from their
    latest `ip_blocks` row. Uses SCAN (never KEYS, which blocks Redis on a big keyspace).
    Raises RedisUnavailable / DatabaseUnavailable."""
    client = redis.client()
    cursor, names = 0, []
    while len(names) < limit:
        cursor, batch = redis.call(client.scan, cursor, match=KEY_PREFIX + "*", count=_SCAN_COUNT)
        names.extend(k for k in batch if k not in names)
        if int(cursor) == 0:
            break
    ips = [ip for ip in map(_parse_key, names[:limit]) if ip]  # a stray key blocks no one
    if not ips:
        return []
    pipeline = client.pipeline()
    for ip in ips:
        pipeline.ttl(KEY_PREFIX + ip)
    ttls = redis.call(pipeline.exec)
    rows = db.fetchall(
        """SELECT DISTINCT ON (ip) abbrev(ip) AS ip, reason, source, created_at, expires_at
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
