"""`block-ip`, `unblock-ip`, `blocked`: the runbook's "Blocking Malicious IP" without curl and
the Upstash token. Each block is the Redis key `blocked:ip:<ip>` (what requests are checked
against, with its TTL) plus an ip_blocks row (who, why, until when)."""

import argparse
import ipaddress
import json

from lib import ip_blocks
from ops.arguments import int_range


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 or IPv6 address: {value[:60]!r}") from None


def _hours(value: str) -> float:
    try:
        hours = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of hours") from None
    if not 0 < hours <= 24 * 366:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 8784 (a year)")
    return hours


def register(commands) -> None:
    p = commands.add_parser("block-ip", help="block an IP (default 24 h)", description=__doc__)
    p.add_argument("ip", type=_ip, help="IPv4 or IPv6 address")
    p.add_argument("--hours", type=_hours, default=ip_blocks.DEFAULT_HOURS,
                   help="duration (default %(default)s)")
    p.add_argument("--reason", default="manual block", help="why (kept in the ip_blocks table)")
    p.set_defaults(run=cmd_block)

    p = commands.add_parser("unblock-ip", help="lift the block on an IP now", description=__doc__)
    p.add_argument("ip", type=_ip, help="IPv4 or IPv6 address")
    p.set_defaults(run=cmd_unblock)

    p = commands.add_parser("blocked", help="list blocked IPs with TTL and reason",
                            description=__doc__)
    p.add_argument("--limit", type=int_range(1, 10000), default=100, help="at most this many (default 100)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=cmd_blocked)


def cmd_block(args: argparse.Namespace) -> int:
    block = ip_blocks.block_ip(args.ip, hours=args.hours, reason=args.reason, source="manual")
    print(f"blocked {block.ip} for {_duration(block.ttl_s)} (until {block.expires_at:%Y-%m-%d %H:%M} UTC): "
          f"{block.reason}")
    return 0


def cmd_unblock(args: argparse.Namespace) -> int:
    existed = ip_blocks.unblock_ip(args.ip)
    print(f"unblocked {args.ip}" if existed else f"{args.ip} was not blocked (records closed anyway)")
    return 0


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "no expiry"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m"


def cmd_blocked(args: argparse.Namespace) -> int:
    blocked = sorted(ip_blocks.list_blocked(limit=args.limit), key=lambda b: -(b.ttl_s or 0))
    if args.json:
        print(json.dumps([{"ip": b.ip, "ttl_seconds": b.ttl_s, "reason": b.reason,
                           "source": b.source} for b in blocked], indent=2))
        return 0
    if not blocked:
        print("no blocked IPs")
        return 0
    width = max(len(b.ip) for b in blocked)
    print(f"{'IP':<{width}}  {'LEFT':>8}  {'SOURCE':<6}  REASON")
    for b in blocked:
        print(f"{b.ip:<{width}}  {_duration(b.ttl_s):>8}  {b.source:<6}  {b.reason or '-'}")
    print(f"{len(blocked)} blocked" + (f" (first {args.limit} shown)" if len(blocked) >= args.limit else ""))
    return 0
