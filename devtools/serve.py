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


class _TestServer(ThreadingHTTPServer):
    # The stdlib's listen backlog is 5: a test's burst of 30 concurrent connections on a loaded
    # machine overflowed it and was reset. Vercel's proxy, not the backlog, bounds concurrency
    # in production, so the test server only needs room for the bursts the tests send.
    request_queue_size = 128
    daemon_threads = True


@contextmanager
def serve_in_process(entrypoint: str | type):
    """Serve a handler class (or the one of an api/ file) on a threading HTTP server; yields
    its base URL."""
    handler = load_handler(entrypoint) if isinstance(entrypoint, str) else entrypoint
    server = _TestServer(("127.0.0.1", 0), handler)
    # A short poll interval: shutdown() waits for it, once per test that serves a route.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _runtime_base_handler():
    """A faithful copy of vercel-runtime 0.20.0's IPC-mode `BaseHandler` and of the `Handler`
    it builds around a BaseHTTPRequestHandler subclass (vercel_runtime/vc_init.py, the block
    under `if "VERCEL_IPC_PATH" in os.environ:`, lines 844-1006 of the pinned version).
    vc_init can't be imported for this: in IPC mode it connects to the platform's socket,
    replaces sys.stdout/sys.stderr and `print`, and serves forever at import. The copy keeps
    everything that matters here (its log_message printing the request line to stdout, its
    handle_one_request, the wait-until drain and the "end" message after the response, the
    method order `class Handler(BaseHandler, handler)`); IPC messages go to `messages`.
    Built lazily: importing this module must stay standard library only."""
    import collections
    import contextlib
    import contextvars
    import http
    from typing import Any

    from vercel_runtime.cache import (SC_HEADERS_ALWAYS_STRIP, SC_HEADERS_STRIP_ON_NO_LEAK,
                                      SC_NO_HEADER_LEAK_HEADER, clear_runtime_cache_context,
                                      set_runtime_cache_from_http_headers)
    from vercel_runtime.headers import (INTERNAL_OIDC_HEADER_NAME, OIDC_HEADER_NAME,
                                        clear_vercel_headers_context, get_oidc_token_for_request,
                                        set_vercel_headers_from_http_headers)
    from vercel_runtime.routing import apply_service_route_prefix_to_target, split_request_target
    from vercel_runtime.wait_until import WaitUntilCollector, begin_wait_until, finish_wait_until

    storage: contextvars.ContextVar[dict | None] = contextvars.ContextVar("storage", default=None)
    messages: collections.deque[dict] = collections.deque(maxlen=10_000)  # bounded: a long run

    def send_message(message: dict) -> None:
        messages.append(message)

    # --- copied from vc_init.py (vercel-runtime 0.20.0); only typing comments trimmed
    class BaseHandler(BaseHTTPRequestHandler):
        # Re-implementation of BaseHTTPRequestHandler's log_message method to
        # log to stdout instead of stderr.
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            message = format % args
            addr = self.address_string()
            ts = self.log_date_time_string()
            msg = message.translate(self._control_char_table)  # type: ignore[attr-defined]
            sys.stdout.write(
                f"{addr} - - [{ts}] {msg}\n",
            )

        def _vc_fire_end_once(self) -> None:
            if getattr(self, "_vc_end_sent", False):
                return
            self._vc_end_sent = True
            try:
                wait_until = getattr(self, "_vc_wait_until", None)
                if isinstance(wait_until, WaitUntilCollector):
                    finish_wait_until(wait_until)
            finally:
                clear_runtime_cache_context()
                clear_vercel_headers_context()
                token = getattr(self, "_vc_end_token", None)
                if token is not None:
                    storage.reset(token)
                send_message({"type": "end", "payload": {"context": {
                    "invocationId": getattr(self, "_vc_invocation_id", "0"),
                    "requestId": getattr(self, "_vc_request_id", 0)}}})

        # Re-implementation of handle_one_request to send
        # the end message after the response is fully sent.
        def handle_one_request(self) -> None:
            self._vc_end_sent = False
            self._vc_end_token = None
            self._vc_wait_until = None
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return

            if split_request_target(self.path)[0] == "/_vercel/ping":
                self.send_response(200)
                self.end_headers()
                return

            (self.path, self._vc_service_root_path) = apply_service_route_prefix_to_target(self.path)
            invocation_id = self.headers.get("x-vercel-internal-invocation-id", "0")
            raw_request_id = self.headers.get("x-vercel-internal-request-id", "0")
            request_id = int(raw_request_id) if raw_request_id.isdigit() else 0
            self._vc_invocation_id = invocation_id
            self._vc_request_id = request_id
            del self.headers["x-vercel-internal-invocation-id"]
            del self.headers["x-vercel-internal-request-id"]
            del self.headers["x-vercel-internal-span-id"]
            del self.headers["x-vercel-internal-trace-id"]
            raw_internal_oidc_token = self.headers.get(INTERNAL_OIDC_HEADER_NAME)
            internal_oidc_token = (raw_internal_oidc_token
                                   if isinstance(raw_internal_oidc_token, str) else None)
            oidc_token = get_oidc_token_for_request(
                has_public_oidc=bool(self.headers.get(OIDC_HEADER_NAME)),
                internal_oidc_token=internal_oidc_token)
            if oidc_token:
                self.headers[OIDC_HEADER_NAME] = oidc_token
            with contextlib.suppress(Exception):
                del self.headers[INTERNAL_OIDC_HEADER_NAME]

            sc_no_header_leak = bool(self.headers.get(SC_NO_HEADER_LEAK_HEADER))
            set_runtime_cache_from_http_headers(self.headers)
            for sc_header in SC_HEADERS_ALWAYS_STRIP:
                with contextlib.suppress(Exception):
                    del self.headers[sc_header]
            if sc_no_header_leak:
                for sc_header in SC_HEADERS_STRIP_ON_NO_LEAK:
                    with contextlib.suppress(Exception):
                        del self.headers[sc_header]

            send_message({"type": "handler-started", "payload": {
                "handlerStartedAt": int(time.time() * 1000),
                "context": {"invocationId": invocation_id, "requestId": request_id}}})

            self._vc_end_token = storage.set({"invocationId": invocation_id,
                                              "requestId": request_id})
            set_vercel_headers_from_http_headers(self.headers)
            self._vc_wait_until = begin_wait_until()

            try:
                self.handle_request()  # type: ignore[attr-defined]
            finally:
                self._vc_fire_end_once()

    def compose(app_obj: type) -> type:
        class Handler(BaseHandler, app_obj):
            def handle_request(self) -> None:
                mname = "do_" + self.command
                if not hasattr(self, mname):
                    self.send_error(http.HTTPStatus.NOT_IMPLEMENTED,
                                    f"Unsupported method ({self.command!r})")
                    return
                method = getattr(self, mname)
                method()
                self.wfile.flush()

        Handler.ipc_messages = messages
        return Handler
    # --- end of the copy

    return compose


def runtime_handler(entrypoint: str | type) -> type:
    """The class production serves: `class Handler(BaseHandler, handler)` (see above)."""
    handler = load_handler(entrypoint) if isinstance(entrypoint, str) else entrypoint
    return _runtime_base_handler()(handler)


@contextmanager
def serve_runtime_layout(entrypoint: str | type):
    """Serve a handler the way a deployed function does: the runtime's IPC-mode Handler
    (its methods first) on a ThreadingHTTPServer, so requests run concurrently. Yields the
    base URL."""
    with serve_in_process(runtime_handler(entrypoint)) as url:
        yield url


def main(argv: list[str] | None = None) -> None:
    """`python -m devtools.serve api/generate.py --port 3001`: one api/ file served the way a
    deployed function is (serve_runtime_layout), until interrupted. Benches run their
    function processes this way."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0] if main.__doc__ else None)
    parser.add_argument("entrypoint", help="e.g. api/generate.py")
    parser.add_argument("--port", type=int, default=3001)
    args = parser.parse_args(argv)
    server = _TestServer(("127.0.0.1", args.port), runtime_handler(args.entrypoint))
    print(f"serving {args.entrypoint} in the runtime's IPC layout on http://127.0.0.1:{args.port}",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def start_function(entrypoint: str, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """`python -m devtools.serve <entrypoint>` in its own process on a free port, listening
    when this returns: (the process, its port). Its output goes nowhere."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "devtools.serve", entrypoint, "--port",
                                str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process=process)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, port


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
        self._gate = threading.Event()
        self._gate.set()
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
                receiver._gate.wait(timeout=30)
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
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def hold(self) -> None:
        """Keep every envelope from arriving until `release()` (a hung Sentry)."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def wait_for(self, envelopes: int, timeout: float = 10) -> bool:
        """Wait until at least `envelopes` envelopes arrived (events are flushed after the
        response is written, so a client can see its answer before Sentry sees the event)."""
        with self._received:
            return self._received.wait_for(lambda: len(self.raw) >= envelopes, timeout)

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"

    def close(self):
        self.release()
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    main()
