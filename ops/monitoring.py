"""`monitoring`: the dashboard of /api/admin/monitoring as a table in the terminal.

With --url it calls the deployment with a session token (an OWNER's; locally
`python -m ops dev-token --user u --role OWNER`); without, it computes the same payload
directly from DATABASE_URL and Redis (no token needed: you hold the database credentials).
Exit codes: 0 no alert, 3 warning alerts, 4 a critical alert, 1 the call failed.
"""

import argparse
import contextlib
import json
import os
import sys
from datetime import datetime

import httpx

from lib import monitoring
from ops.arguments import int_range

_COLORS = {"critical": "\033[1;31m", "warning": "\033[33m", "ok": "\033[32m", "dim": "\033[2m"}
_RESET = "\033[0m"
_BAR = 30
WIDTH = 80  # every line of the table fits a terminal this wide


def register(commands) -> None:
    p = commands.add_parser("monitoring", help="print the monitoring dashboard",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="base URL of a deployment (default: compute locally)")
    p.add_argument("--token", default=os.environ.get("ASCENDOS_TOKEN"),
                   help="session token for --url (default $ASCENDOS_TOKEN)")
    p.add_argument("--days", type=int_range(1, monitoring.MAX_DAYS), default=monitoring.DEFAULT_DAYS,
                   help="days of daily history (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the raw JSON payload")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    p.set_defaults(run=run)


def _fetch(args: argparse.Namespace) -> dict:
    if not args.url:
        with contextlib.redirect_stdout(sys.stderr):  # the lib's JSON log lines aren't output
            return monitoring.dashboard(days=args.days)
    if not args.token:
        raise RuntimeError("--url needs --token (an OWNER session token) or $ASCENDOS_TOKEN")
    response = httpx.get(args.url.rstrip("/") + "/api/admin/monitoring", params={"days": args.days},
                         headers={"Authorization": f"Bearer {args.token}"}, timeout=30)
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
        raise RuntimeError(f"HTTP {response.status_code} {error.get('code', '')}: "
                           f"{error.get('message', response.text[:200])}")
    return body


def _use_color(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def run(args: argparse.Namespace) -> int:
    try:
        payload = _fetch(args)
    except (RuntimeError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(render(payload, color=_use_color(args.color)))
    levels = {alert["level"] for alert in payload.get("alerts", [])}
    return 4 if "critical" in levels else 3 if levels else 0


def _bar(value: int, top: int) -> str:
    if top <= 0 or value <= 0:
        return ""
    return "█" * max(1, round(_BAR * value / top))


def _pct(value) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _num(value) -> str:
    return f"{value:,}"


def _when(value) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _duration(started, finished) -> str:
    """`1.2 s`, `3m05s`, or `running`/`-` without an end."""
    start, end = _when(started), _when(finished) if finished else None
    if start is None or end is None:
        return "-"
    seconds = max(0.0, (end - start).total_seconds())
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


_NOT_COUNTS = {"job", "complete", "demo", "dry_run", "email"}
_FIRST = ("sent", "failed", "skipped", "deleted")  # then the rest, in the stored order


def _counts(counts: dict, prefix: str = "") -> list[str]:
    """A run's counts as ["sent 3", "failed 0", "deleted.generations 12", ...]."""
    parts: list[str] = []
    keys = [k for k in _FIRST if k in counts] + [k for k in counts if k not in _FIRST]
    for key in keys:
        value = counts[key]
        if key in _NOT_COUNTS and not prefix:
            continue
        if isinstance(value, dict):
            parts += _counts(value, f"{prefix}{key}.")
        elif isinstance(value, float):
            parts.append(f"{prefix}{key} {value:g}")
        elif value is not None and not isinstance(value, (list, bool)):
            parts.append(f"{prefix}{key} {value}")
    return parts


def _wrap(parts: list[str], width: int) -> list[str]:
    """`parts` joined with ' · ' into lines of at most `width` (a longer part is cut)."""
    rows = [""]
    for part in parts:
        part = _fit(part, width)
        if rows[-1] and len(rows[-1]) + 3 + len(part) > width:
            rows.append("")
        rows[-1] += (" · " if rows[-1] else "") + part
    return rows


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(0, width - 1)] + "…"


def render(payload: dict, color: bool = False) -> str:
    """The payload as plain-text tables; alerts coloured with ANSI codes when `color`."""
    def paint(text: str, kind: str) -> str:
        return f"{_COLORS[kind]}{text}{_RESET}" if color else text

    org = payload.get("organization")
    scope = f"organization {org['id']}" if org else payload.get("scope", "platform")
    out = [f"Ascendos monitoring · {scope} · generated {payload['generated_at']}", ""]
    if org:  # an OWNER's own organization: no alerts, tenants, blocked IPs or crons
        quota = org["quota"]
        trial = f" · trial ends {org['trial_ends_at']}" if org["trial_ends_at"] else ""
        out += [f"ORGANIZATION  {org['plan']} · subscription {org['subscription_status'] or 'none'}"
                f"{trial}",
                f"  quota: {_num(quota['used'])} of {_num(quota['limit'])} used this month, "
                f"{_num(quota['remaining'])} left (resets {quota['resets_at']})"]
        return "\n".join(out + _usage(payload))
    return "\n".join(out + _platform(payload, paint))


def _platform(payload: dict, paint) -> list[str]:
    out = ["ALERTS"]
    for alert in payload["alerts"]:
        value, unit = alert["value"], alert["unit"]
        shown = _pct(value) if unit == "ratio" else f"{value:g} ms" if unit == "ms" else f"{value}"
        limit = _pct(alert["threshold"]) if unit == "ratio" else f"{alert['threshold']:g}"
        out.append("  " + paint(f"{alert['level'].upper():<9}", alert["level"])
                   + f"{alert['metric']:<22} {shown:>10}  (> {limit}, last {alert['window']})")
    if not payload["alerts"]:
        out.append("  " + paint("none: every metric is below its warning threshold", "ok"))

    orgs = payload["organizations"]
    out += ["", f"ORGANIZATIONS  total {_num(orgs['total'])} · trials ending within 7 days: "
                f"{orgs['trials_ending_7d']}"]
    top = max(orgs["by_plan"].values(), default=0)
    for plan, count in orgs["by_plan"].items():
        out.append(f"  {plan:<8}{_num(count):>8}  {_bar(count, top)}")
    subs = [f"{status} {count}" for status, count in orgs["subscriptions"].items() if count]
    out.append("  subscriptions: " + (" · ".join(subs) or "none"))
    out += _usage(payload)
    out += _blocked_and_crons(payload, paint)
    return out


def _usage(payload: dict) -> list[str]:
    """Generations, tokens and LLM rates: the sections both scopes have."""
    out: list[str] = []
    daily = payload["generations"]["daily"]
    out += ["", f"{f'GENERATIONS PER DAY (last {len(daily)}, UTC)':<46}{'count':>7}  {'failed':>6}"]
    top = max((d["count"] for d in daily), default=0)
    for day in daily:
        out.append(f"  {day['date']}  {_bar(day['count'], top):<{_BAR}}  {_num(day['count']):>7}"
                   f"  {day['failed']:>6}")
    weekly = payload["generations"]["weekly"]
    out += ["", "GENERATIONS PER ISO WEEK"]
    top = max((w["count"] for w in weekly), default=0)
    for week in weekly:
        out.append(f"  {week['week']}  {_bar(week['count'], top):<{_BAR}}  {_num(week['count']):>9}")

    tokens = payload["tokens"]
    out += ["", f"TOKENS     {'requests':>10} {'input':>13} {'output':>13} {'total':>13} {'cost USD':>12}"]
    for name in ("24h", "7d", "30d"):
        t = tokens[name]
        out.append(f"  {name:<8} {_num(t['requests']):>10} {_num(t['input_tokens']):>13} "
                   f"{_num(t['output_tokens']):>13} {_num(t['total_tokens']):>13} {t['cost_usd']:>12.4f}")
    out += ["", f"TOP MODELS BY COST (30 days)          {'requests':>10} {'tokens':>13} {'cost USD':>12}"]
    for model in tokens["by_model"][:10]:
        name = f"{model['provider'] or '?'}/{model['model'] or '?'}"
        out.append(f"  {name[:36]:<36} {_num(model['requests']):>10} {_num(model['total_tokens']):>13} "
                   f"{model['cost_usd']:>12.4f}")
    if not tokens["by_model"]:
        out.append("  no generations in the last 30 days")

    out += ["", f"LLM        {'requests':>10} {'errors':>8} {'openai err':>11} {'fallback':>9} {'p95 ms':>9}"]
    for name, m in payload["llm"].items():
        p95 = "-" if m["p95_latency_ms"] is None else f"{m['p95_latency_ms']:.0f}"
        out.append(f"  {name:<8} {_num(m['requests']):>10} {_pct(m['error_rate']):>8} "
                   f"{_pct(m['openai_error_rate']):>11} {_pct(m['fallback_rate']):>9} {p95:>9}")
    return out


def _blocked_and_crons(payload: dict, paint) -> list[str]:
    blocked = payload["blocked_ips"]
    out = [""]
    if "error" in blocked:
        out.append("BLOCKED IPS  " + paint(f"Redis {blocked['error']}", "warning")
                   + f" · blocked in the last hour: {blocked.get('last_hour', '-')}")
    else:
        out.append(f"BLOCKED IPS  {blocked['count']} now · {blocked['last_hour']} in the last hour")
        for entry in blocked["ips"][:20]:
            ttl = entry["ttl_seconds"]
            left = "no expiry" if ttl is None else f"{ttl // 3600}h{ttl % 3600 // 60:02d}m"
            line = f"  {entry['ip'][:39]:<39} {left:>9}  {entry['source'] or '-':<6} "
            out.append(line + _fit(entry["reason"] or "-", WIDTH - len(line)))
        if blocked["count"] > 20:
            out.append(paint(f"  ... {blocked['count'] - 20} more (python -m ops blocked)", "dim"))

    out += ["", f"CRONS (last run)  {'started':<11} {'status':<10} {'duration':>8}  counts"]
    for job in payload["crons"]:
        if not job["started_at"]:
            out.append(f"  {job['job'][:16]:<16} " + paint("never ran", "warning"))
            continue
        status = job["status"] or "-"
        if status == "succeeded" and job.get("complete") is False:
            status = "incomplete"
        kind = "critical" if status == "failed" else "warning" if status == "incomplete" else "ok"
        counts = _counts(job.get("counts") or {}) or [job.get("error") or "-"]
        started = str(job["started_at"]).replace("T", " ")[5:16]  # MM-DD HH:MM, UTC
        head = f"  {job['job'][:16]:<16} {started:<11} "
        tail = f" {_duration(job['started_at'], job.get('finished_at')):>8}  "
        rows = _wrap(counts, WIDTH - len(head) - 10 - len(tail))
        out.append(head + paint(f"{status:<10}", kind) + tail + rows[0])
        out += [" " * (len(head) + 10 + len(tail)) + row for row in rows[1:]]
    return out
