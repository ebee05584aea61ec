"""Local servers for tests and benches: the project's handler classes over real HTTP, a
function process through the Vercel runtime adapter, a threaded server for the fakes, and a
local Sentry receiver. Standard library only (bench/generate.py times `load_handler`)."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from devtools.services import ROOT, free_port


def load_handler(entrypoint: str):
    """Import api/<file>.py by path (some names, like weekly-reminders, aren't identifiers)."""
    path = ROOT / entrypoint
    name = "api_" + path.relative_to(ROOT / "api").with_suffix("").as_posix().replace("/", "_").replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


@contextmanager
def serve_in_process(entrypoint: str | type):
    """Serve a handler class (or the one of an api/ file) on a threading HTTP server; yields
    its base URL."""
    handler = load_handler(entrypoint) if isinstance(entrypoint, str) else entrypoint
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    # A short poll interval: shutdown() waits for it, once per test that serves a route.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def wait_for_port(port: int, timeout: float = 30, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout} s")


class LocalServer:
    """Serves `handler` on 127.0.0.1 in a daemon thread until `close()`."""

    def __init__(self, handler):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def serve_through_vercel_runtime(entrypoint: str, env: dict[str, str]):
    """Run one function in its own process behind vercel_runtime.vc_init.vc_handler."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.vc_serve", entrypoint, "--port", str(port)],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()


class SentryReceiver:
    """An HTTP server that accepts Sentry envelopes and keeps what it receives: `raw` (every
    envelope's bytes), `events` (the error events), `items` (every item: events, messages,
    check-ins, ...). `delay_s` makes each answer wait (a slow Sentry)."""

    def __init__(self, delay_s: float = 0.0):
        self.events: list[dict] = []
        self.items: list[dict] = []
        self.raw: list[bytes] = []
        self.delay_s = delay_s
        self._received = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                with receiver._received:
                    receiver.raw.append(body)
                    for line in body.splitlines():
                        try:
                            item = json.loads(line)
                        except ValueError:
                            continue
                        if isinstance(item, dict) and ("exception" in item or "message" in item
                                                       or "check_in_id" in item):
                            receiver.items.append(item)
                            if "exception" in item:
                                receiver.events.append(item)
                    receiver._received.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, envelopes: int, timeout: float = 10) -> bool:
        """Wait until at least `envelopes` envelopes arrived (events are flushed after the
        response is written, so a client can see its answer before Sentry sees the event)."""
        with self._received:
            return self._received.wait_for(lambda: len(self.raw) >= envelopes, timeout)

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
