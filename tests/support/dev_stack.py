"""A `make dev` stack in a scratch copy of the repository (its own .env, .data and pid file),
so the tests never touch a developer's running stack. Serves the api/ handlers in the dev
process (`--server python`); Postgres and Redis are embedded unless given."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from devtools.serve import wait_for_port
from devtools.services import ROOT, free_port

COPIED = ("api", "lib", "ops", "devtools", "public", "bench", "vercel.json", ".env.example",
          ".python-version",
          "Makefile", "requirements.txt", "README.md", "docs")


def scratch_repo(where: Path) -> Path:
    root = where / "repo"
    root.mkdir()
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, root / name)
    (root / ".venv").symlink_to(ROOT / ".venv")
    (root / "node_modules").symlink_to(ROOT / "node_modules")  # the pinned Vercel CLI
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(ROOT / name, root / name)
    return root


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a newcomer's shell: nothing of the project's configured."""
    names = {line.split("=", 1)[0].strip() for line in (ROOT / ".env.example").read_text().splitlines()
             if "=" in line and not line.lstrip().startswith("#")}
    env = {k: v for k, v in os.environ.items()
           if k not in names and k not in ("REDIS_URL", "OPS_NO_DOTENV", "PORT", "DEV_SERVER")}
    return {**env, **extra}


class DevStack:
    """`python -m devtools.dev --server python` in `root`, in its own process group."""

    def __init__(self, root: Path, env: dict[str, str] | None = None, port: int | None = None,
                 server: str = "python"):
        self.root, self.port, self.server = root, port or free_port(), server
        self.env = env if env is not None else clean_env()
        self.log = root / "dev.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, timeout: float = 60) -> subprocess.CompletedProcess:
        """Start it in the foreground (for the 'already running' refusal)."""
        return subprocess.run([sys.executable, "-m", "devtools.dev", "--server", self.server,
                               "--port", str(self.port)], cwd=self.root, env=self.env, text=True,
                              capture_output=True, timeout=timeout)

    def start(self, timeout: float = 120) -> "DevStack":
        out = open(self.log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devtools.dev", "--server", self.server, "--port", str(self.port)],
            cwd=self.root, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)  # a process group of its own, like make's in a terminal
        wait_for_port(self.port, timeout=timeout, process=self.process)
        if self.server == "vercel":  # listening is not ready: wait until every function is built
            deadline = time.monotonic() + 900
            while "Ready: all" not in self.output():
                assert self.process.poll() is None and time.monotonic() < deadline, self.output()[-3000:]
                time.sleep(1)
        return self

    def interrupt(self, timeout: float = 15) -> float:
        """Ctrl-C to the whole process group, as a terminal sends it; seconds until it exited."""
        assert self.process is not None
        started = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.interrupt()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def pid_file(self) -> dict:
        return json.loads((self.root / ".data" / "dev.pid").read_text())


def processes_under(root: Path) -> list[str]:
    """Command lines of live processes that mention `root` (servers it left behind)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if (proc / "stat").read_text().split(")")[-1].split()[0] == "Z":
                continue
        except OSError:
            continue
        if str(root) in cmdline:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found
