"""The shared HTTP layer every `api/*.py` handler class subclasses.

`Endpoint` is a `BaseHTTPRequestHandler` (what the Vercel Python runtime requires). A subclass
declares `route` and one method per HTTP verb it answers (`get`, `post`, ...), each taking a
`Request` and returning a JSON-able dict or a `Response`. This module owns everything that is
the same for every route: method dispatch (405 + Allow), the body size cap (413 before
reading), JSON parsing, client IP and request id, the mapping of `lib.errors` to JSON errors,
`Cache-Control: no-store`, one log line per request and reporting of unhandled exceptions.

What differs per route is declared on the subclass, never imported here: `before` is a tuple
of checks the edge runs ahead of the request being read (e.g. lib.routes.hooks.maintenance),
so this module depends on nothing but errors, config and observability.
"""

import ipaddress
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from lib import errors, observability
from lib.config import settings
from lib.observability import log, report

_VERBS = ("get", "post", "put", "patch", "delete")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9:_.\-]{1,128}$")


@dataclass
class Response:
    """`after`: work the answer doesn't wait for (e.g. recording a generation's accounting).
    It runs once the response is written, while the invocation still lasts: see
    `_freezes_after_answer` for the one runtime where it runs before the response instead.
    It runs whether or not the client is still there; its failures are reported, never
    answered."""

    status: int = 200
    body: dict | list | None = None
    headers: dict[str, str] = field(default_factory=dict)
    after: Callable[[], None] | None = field(default=None, repr=False)


@dataclass
class EventStream:
    """A `200 text/event-stream` answer: each (event, data) pair from `events` is written as
    `event: <name>` / `data: <json>` and flushed on its own (no Content-Length; the
    connection closes at the end). If the client goes away, `events` is closed (its
    GeneratorExit is the route's cue to stop and settle)."""

    events: Iterator[tuple[str, dict]]
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200


def error_body(exc: errors.AppError, request_id: str | None) -> dict:
    error = {"code": exc.code, "message": exc.message}
    if exc.details:
        error.update(exc.details)
    if request_id and exc.status >= 500:
        error["request_id"] = request_id
    return {"error": error}


def _freezes_after_answer(handler: BaseHTTPRequestHandler) -> bool:
    """True under the Vercel runtime's Lambda-style adapter (vercel_runtime.vc_init's
    `vc_handler`, used where the platform has no IPC socket, and by `vercel dev`): it hands
    the response back as soon as it has read it, and the sandbox may be frozen while this
    handler is still running, so work after the answer could wait for the next invocation or
    be lost. In IPC mode (Fluid compute) the runtime mixes in its BaseHandler, whose
    handle_one_request sends its "end" message only after our do_<VERB> returned (it defines
    `_vc_fire_end_once`, vercel-runtime 0.20.0); our own servers end nothing early."""
    return "vercel_runtime.vc_init" in sys.modules and \
        not hasattr(handler, "_vc_fire_end_once")


def _first_ip(value: str | None) -> str | None:
    if not value:
        return None
    candidate = value.split(",")[0].strip()
    if candidate.startswith("[") and "]" in candidate:  # "[v6]:port"
        candidate = candidate[1:candidate.index("]")]
    elif candidate.count(":") == 1:  # "v4:port"
        candidate = candidate.split(":")[0]
    try:
        address = ipaddress.ip_address(candidate.split("%", 1)[0])  # no zone id ("fe80::1%eth0")
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # "::ffff:192.0.2.1" is 192.0.2.1
    return str(mapped or address)


class Request:
    """One parsed request. The body is read at most once, and only after the size check."""

    def __init__(self, handler: "Endpoint", request_id: str):
        self._handler = handler
        self.method = handler.command
        self.headers = handler.headers
        self.request_id = request_id
        parts = urlsplit(handler.path)
        self.path = parts.path
        try:
            self.query = {k: v[0] for k, v in parse_qs(parts.query, max_num_fields=50).items()}
        except ValueError:
            raise errors.BadRequest("Too many query parameters") from None
        self._body: bytes | None = None

    @property
    def client_ip(self) -> str:
        """First valid hop of x-vercel-forwarded-for, x-forwarded-for, x-real-ip, else the peer."""
        for name in ("x-vercel-forwarded-for", "x-forwarded-for", "x-real-ip"):
            ip = _first_ip(self.headers.get(name))
            if ip:
                return ip
        return self._handler.client_address[0]

    def bearer_token(self) -> str | None:
        value = self.headers.get("authorization") or ""
        scheme, _, token = value.partition(" ")
        token = token.strip() or None if scheme.lower() == "bearer" else None
        observability.redact_in_request(token)
        return token

    def body(self) -> bytes:
        if self._body is None:
            self._body = self._read_body()
        return self._body

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            raise errors.LengthRequired()
        raw = self.headers.get("content-length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            raise errors.BadRequest("Content-Length must be an integer") from None
        if length < 0:
            raise errors.BadRequest("Content-Length must not be negative")
        limit = settings().max_body_bytes
        if length > limit:
            self._handler.close_connection = True  # the unread body must not be parsed as a request
            raise errors.PayloadTooLarge(f"Request body exceeds {limit} bytes")
        body = self._handler.rfile.read(length) if length else b""
        self._handler.body_read = True
        return body

    def json(self) -> dict:
        """The body as a JSON object; 400 for anything else (empty, invalid, array, ...)."""
        body = self.body()
        if not body.strip():
            raise errors.InvalidJson("Request body must be a JSON object")
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            raise errors.InvalidJson() from None
        if not isinstance(value, dict):
            raise errors.InvalidJson("Request body must be a JSON object")
        observability.redact_in_request(*_strings(value))  # a prompt never reaches a report
        return value


def _strings(value, limit: int = 64) -> list[str]:
    """The string values of a parsed JSON body (at most `limit`, depth-first)."""
    found: list[str] = []
    stack = [value]
    while stack and len(found) < limit:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


class Endpoint(BaseHTTPRequestHandler):
    """Base of the six route handlers. Subclasses set `route` and define verb methods."""

    route = "/"
    # Checks run in order after method dispatch and before the request is parsed or read; each
    # raises an AppError to refuse. Routes that must answer in maintenance mode (health, the
    # Stripe webhook) simply leave lib.routes.hooks.maintenance out.
    before: tuple[Callable[[], None], ...] = ()
    server_version = "ascendos"
    sys_version = ""
    # Headers and body go out as two writes; with Nagle on, the body waits for the client's
    # delayed ACK of the headers (~40 ms per response on loopback, measured in bench/generate).
    disable_nagle_algorithm = True
    # Keep-alive: a caller (or the platform's proxy) that reuses its connection saves a TCP
    # handshake and a server thread per request (~0.5 ms on loopback, bench/generate). Every
    # JSON answer has a Content-Length; a connection whose request body was left unread, and
    # every event stream, is closed after the response.
    protocol_version = "HTTP/1.1"
    body_read = False  # set by Request once the body was read off the connection

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):
            pass  # the client dropped a kept-alive connection between two requests

    def __getattr__(self, name: str):
        # BaseHTTPRequestHandler looks up do_<VERB>; answering every verb here means an
        # unknown one gets our JSON 405 instead of the stdlib's HTML 501.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    @classmethod
    def allowed_methods(cls) -> list[str]:
        allowed = [verb.upper() for verb in _VERBS if callable(getattr(cls, verb, None))]
        return allowed + ["HEAD"] if "GET" in allowed else allowed

    def _dispatch(self) -> None:
        started = time.perf_counter()
        request_id = self._request_id()
        token = observability.request_id.set(request_id)
        redacted = observability.redacted_request_scope()
        deferred = observability.defer_flush()
        response: Response | EventStream = Response(500)
        self.body_read = False
        try:
            try:
                response = self._respond(request_id)
                if not self.body_read and (self.headers.get("content-length") or "0") != "0" or \
                        self.headers.get("transfer-encoding"):
                    self.close_connection = True  # its unread body must not be read as a request
            finally:
                # Logged before the response leaves: once the client has it, the function may
                # be frozen, and a line written after that could be lost (or seen late).
                log("request", route=self.route, method=self.command[:16], status=response.status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 1))
            if isinstance(response, Response) and _freezes_after_answer(self):
                self._run_after(response)
            self._send(response, request_id)
        finally:
            if isinstance(response, Response):
                self._run_after(response)
            # The response is written: now wait for any report of this request to reach
            # Sentry, before the handler returns and the runtime may freeze the instance.
            observability.flush_deferred(deferred)
            observability.redacted_request_values_reset(redacted)
            observability.request_id.reset(token)

    def _run_after(self, response: Response) -> None:
        after, response.after = response.after, None  # at most once
        if after is None:
            return
        try:
            after()
        except Exception as exc:  # noqa: BLE001 - the answer is out; say it, don't raise it
            report(exc, route=self.route, part="after_response")

    def _respond(self, request_id: str) -> Response | EventStream:
        try:
            verb = "get" if self.command == "HEAD" else self.command.lower()
            method = getattr(type(self), verb, None) if verb in _VERBS else None
            if not callable(method):
                raise errors.MethodNotAllowed(
                    f"{self.command[:16]} is not allowed here",
                    headers={"Allow": ", ".join(self.allowed_methods())})
            for check in self.before:
                check()
            request = Request(self, request_id)
            request.body()  # size cap (413) and framing checks before any route logic
            result = method(self, request)
            return result if isinstance(result, (Response, EventStream)) else Response(200, result)
        except errors.AppError as exc:
            if exc.status == 500:
                report(exc, route=self.route)
            return Response(exc.status, error_body(exc, request_id), exc.headers)
        except Exception as exc:  # noqa: BLE001 - any bug becomes a reported JSON 500
            report(exc, route=self.route)
            return Response(500, error_body(errors.AppError(), request_id))

    def _send(self, response: Response | EventStream, request_id: str) -> None:
        if isinstance(response, EventStream):
            self._send_events(response, request_id)
            return
        payload = b"" if response.body is None else json.dumps(response.body, default=str).encode()
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Request-Id", request_id)
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if getattr(self, "command", None) != "HEAD":
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            log("client_disconnected", level="warning")

    def _send_events(self, stream: EventStream, request_id: str) -> None:
        events = stream.events
        self.close_connection = True  # the end of the body is the end of the connection
        try:
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Accel-Buffering", "no")  # proxies: don't hold events back
                self.send_header("X-Request-Id", request_id)
                self.send_header("X-Content-Type-Options", "nosniff")
                for name, value in stream.headers.items():
                    self.send_header(name, value)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.flush()
                for name, data in events:
                    self.wfile.write(f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n"
                                     .encode())
                    self.wfile.flush()
            except OSError:  # BrokenPipe, ConnectionReset, a socket timeout: the client left
                log("client_disconnected", level="warning", route=self.route)
                return
            except Exception as exc:  # noqa: BLE001 - a bug mid-stream: reported, then said
                report(exc, route=self.route)
                body = error_body(errors.AppError(), request_id)
                try:
                    self.wfile.write(f"event: error\ndata: {json.dumps(body)}\n\n".encode())
                    self.wfile.flush()
                except OSError:
                    pass
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    def _request_id(self) -> str:
        given = (self.headers.get("x-vercel-id") or "") if self.headers else ""
        return given if _REQUEST_ID.match(given) else uuid.uuid4().hex

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests rejected by http.server itself also get a JSON body."""
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # else http.server writes a body without a status line
        exc = errors.MalformedRequest(code, message)
        self._send(Response(code, error_body(exc, None)), uuid.uuid4().hex)

    # http.server's own logging. The access line (`"POST /api/cron/purge?secret=..." 200`)
    # must never be written: it carries the full URL. Vercel's runtime mixes its BaseHandler in
    # first (`class Handler(BaseHandler, handler)`), and its log_message, printing to stdout,
    # wins over ours; it defines neither log_request nor log_error, so those two are ours.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one structured line per request is written by _dispatch instead

    def log_error(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        try:
            message = format % args
        except (TypeError, ValueError):
            message = format
        log("http_server_error", level="warning", message=message[:300])  # redacted by log()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass  # see log_request: only reached when no runtime class comes first
