"""`health`: call /api/health (the runbook's health check) and exit non-zero when unhealthy."""

import argparse

import httpx

from lib.config import settings


def register(commands) -> None:
    p = commands.add_parser("health", help="check /api/health; exit 1 when unhealthy",
                            description=__doc__)
    p.add_argument("--url", help="base URL of the deployment (default APP_URL)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    base = (args.url or settings().app_url).rstrip("/")
    try:
        response = httpx.get(base + "/api/health", timeout=args.timeout)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"unhealthy: {base}/api/health did not answer JSON ({type(exc).__name__})")
        return 1
    checks = body.get("checks") if isinstance(body, dict) else None
    status = body.get("status") if isinstance(body, dict) else None
    parts = ", ".join(f"{name} {value}" for name, value in (checks or {}).items())
    maintenance = " (maintenance mode ON)" if isinstance(body, dict) and body.get("maintenance") else ""
    healthy = response.status_code == 200 and status == "healthy"
    print(f"{status or 'unhealthy'} [{response.status_code}]: {parts or 'no checks'}{maintenance}")
    return 0 if healthy else 1
