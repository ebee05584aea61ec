"""Local HTTP servers that speak the OpenAI chat completions API and the Anthropic messages
API, for the real SDKs to talk to (tests and bench/generate.py).

    openai = FakeOpenAI()           # base URL for the SDK: openai.base_url (ends in /v1)
    openai.script(500, 429)         # the next two calls fail like that, then 200s again
    openai.delay_s = 3              # every answer waits (a hung provider)
    anthropic = FakeAnthropic(input_tokens=11, output_tokens=7)

    openai.error_body = {...}       # the JSON of the next scripted errors (default: by status)
    openai.success_body = {...}     # a 200 whose JSON is not a completion
    openai.models = ["gpt-5.4-mini"]  # what GET /v1/models lists (None: any requested model)

Each keeps the JSON bodies and headers it received (`requests`), thread-safe, and answers
with the provider's request-id header (`last_request_id`).

A request with `"stream": true` is answered in the provider's streaming wire format
(server-sent events over chunked transfer encoding): OpenAI `chat.completion.chunk` objects
ending in `data: [DONE]` (plus the usage chunk when `stream_options.include_usage`), Anthropic
message_start / content_block_* / message_delta / message_stop events. The text is sent in
`stream_chunks` pieces, the first after `first_token_s`, the others `chunk_interval_s` apart;
`stream_error_after = n` sends the provider's in-stream error event after n pieces.
`stream_disconnects` counts the streams the client closed before the end.
"""

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler

from devtools.serve import LocalServer

_OPENAI_ERRORS = {400: "invalid_request_error", 401: "invalid_api_key", 403: "permission_denied",
                  404: "model_not_found", 408: "timeout", 429: "rate_limit_exceeded",
                  500: "server_error", 503: "service_unavailable"}
_ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error",
                     403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
                     500: "api_error", 529: "overloaded_error"}


class _FakeProvider:
    path = "/"
    request_id_header = "request-id"

    def __init__(self, text: str = "Hello from the fake provider.", input_tokens: int = 12,
                 output_tokens: int = 8, status: int = 200, delay_s: float = 0.0):
        self.text, self.input_tokens, self.output_tokens = text, input_tokens, output_tokens
        self.status, self.delay_s = status, delay_s
        self.stream_chunks, self.first_token_s, self.chunk_interval_s = 4, 0.0, 0.0
        self.stream_error_after: int | None = None
        self.stream_disconnects = 0
        self.requests: list[dict] = []
        self.error_body: dict | None = None
        self.success_body: dict | None = None  # a 200 that is not a completion
        self.models: list[str] | None = None
        self.last_request_id: str | None = None
        self._script: list[int] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall

            def log_message(self, *args):
                pass

            def do_GET(self):  # the models endpoint (`ops doctor --live`)
                with fake._lock:
                    fake.requests.append({"path": self.path, "method": "GET", "json": None,
                                          "headers": {k.lower(): v for k, v in self.headers.items()}})
                    status = fake._script.pop(0) if fake._script else fake.status
                if self.path.split("?")[0].rstrip("/") != "/v1/models":
                    return self._send(404, fake._error(404, f"no route {self.path}"))
                if status != 200:
                    return self._send(status, fake.error_body or fake._error(status, f"fake {status}"))
                self._send(200, fake._models_page(fake.models or []))

            def handle(self):
                try:
                    super().handle()
                except (ConnectionResetError, BrokenPipeError):
                    pass  # a client closed a kept-alive connection (e.g. a stream it left)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = fake._answer(self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
                if fake.delay_s:
                    time.sleep(fake.delay_s)
                if status == 200 and isinstance(body, list):  # a stream: a list of SSE events
                    self._stream(body)
                    return
                self._send(status, body)

            def _send(self, status, body):
                payload = json.dumps(body).encode()
                request_id = f"req_{uuid.uuid4().hex[:16]}"
                with fake._lock:
                    fake.last_request_id = request_id
                try:
                    self.send_response(status)
                    self.send_header(fake.request_id_header, request_id)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): that is the point of a delay

            def _stream(self, events: list):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for event in events:
                        if isinstance(event, float):  # a pause between events
                            time.sleep(event)
                            continue
                        data = event.encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    with fake._lock:
                        fake.stream_disconnects += 1
                    self.close_connection = True

        self._local = LocalServer(Handler)
        self.url, self.close = self._local.url, self._local.close

    def script(self, *statuses: int) -> None:
        """Answer the next calls with these statuses, in order, then with `status` again."""
        with self._lock:
            self._script.extend(statuses)

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    def _answer(self, path: str, headers: dict, raw: bytes) -> tuple[int, dict | list]:
        with self._lock:
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            self.requests.append({"path": path, "headers": headers, "json": body})
            status = self._script.pop(0) if self._script else self.status
        if path.rstrip("/") != self.path:
            return 404, self._error(404, f"no route {path}")
        if status != 200:
            return status, self.error_body or self._error(status, f"fake {status}")
        model = (body or {}).get("model")
        if self.models is not None and model not in self.models:
            return 404, self._model_not_found(str(model))
        if isinstance(body, dict) and body.get("stream") is True:
            return 200, self._timed(self._stream_events(body))
        return 200, self.success_body if self.success_body is not None else self._success(body or {})

    def pieces(self) -> list[str]:
        """The text cut into `stream_chunks` pieces (what a stream sends, in order)."""
        count = max(1, min(self.stream_chunks, len(self.text)))
        size = -(-len(self.text) // count)
        return [self.text[i:i + size] for i in range(0, len(self.text), size)]

    def _timed(self, events: list) -> list:
        """Pauses (floats) put before the first text piece and between the later ones."""
        timed, pieces_seen = [], 0
        for event in events:
            if isinstance(event, tuple):  # ("piece", sse text)
                timed.append(float(self.first_token_s if pieces_seen == 0 else self.chunk_interval_s))
                pieces_seen += 1
                event = event[1]
            timed.append(event)
        return [e for e in timed if not isinstance(e, float) or e > 0]

    @staticmethod
    def _sse(data: dict | str, event: str | None = None) -> str:
        text = data if isinstance(data, str) else json.dumps(data)
        return (f"event: {event}\n" if event else "") + f"data: {text}\n\n"


class FakeOpenAI(_FakeProvider):
    path = "/v1/chat/completions"
    request_id_header = "x-request-id"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def _error(self, status: int, message: str) -> dict:
        code = _OPENAI_ERRORS.get(status, "error")
        return {"error": {"message": message, "type": code, "param": None, "code": code}}

    def _model_not_found(self, model: str) -> dict:
        return {"error": {"message": f"The model `{model}` does not exist or you do not have "
                          "access to it.", "type": "invalid_request_error", "param": None,
                          "code": "model_not_found"}}

    def _models_page(self, ids: list[str]) -> dict:
        return {"object": "list", "data": [{"id": model, "object": "model", "created": 0,
                                            "owned_by": "system"} for model in ids]}

    def _success(self, body: dict) -> dict:
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
                "created": int(time.time()), "model": body.get("model", "gpt-5.4-mini"),
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": self.text}}],
                "usage": {"prompt_tokens": self.input_tokens,
                          "completion_tokens": self.output_tokens,
                          "total_tokens": self.input_tokens + self.output_tokens}}

    def _stream_events(self, body: dict) -> list:
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model", "gpt-4o-mini"),
                "system_fingerprint": None}
        usage = (body.get("stream_options") or {}).get("include_usage") is True
        extra = {"usage": None} if usage else {}

        def chunk(delta: dict, finish: str | None = None) -> str:
            return self._sse({**base, **extra, "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

        events: list = [chunk({"role": "assistant", "content": "", "refusal": None})]
        for index, piece in enumerate(self.pieces()):
            if self.stream_error_after is not None and index == self.stream_error_after:
                return events + [self._sse({"error": {"message": "fake mid-stream error",
                                                      "type": "server_error", "param": None,
                                                      "code": "server_error"}})]
            events.append(("piece", chunk({"content": piece})))
        events.append(chunk({}, "stop"))
        if usage:
            events.append(self._sse({**base, "choices": [], "usage": {
                "prompt_tokens": self.input_tokens, "completion_tokens": self.output_tokens,
                "total_tokens": self.input_tokens + self.output_tokens}}))
        return events + [self._sse("[DONE]")]


class FakeAnthropic(_FakeProvider):
    path = "/v1/messages"
    request_id_header = "request-id"

    @property
    def base_url(self) -> str:
        return self.url

    def _error(self, status: int, message: str) -> dict:
        return {"type": "error", "error": {"type": _ANTHROPIC_ERRORS.get(status, "api_error"),
                                           "message": message}}

    def _model_not_found(self, model: str) -> dict:
        return {"type": "error", "error": {"type": "not_found_error", "message": f"model: {model}"}}

    def _models_page(self, ids: list[str]) -> dict:
        data = [{"type": "model", "id": model, "display_name": model,
                 "created_at": "2026-01-01T00:00:00Z"} for model in ids]
        return {"data": data, "has_more": False, "first_id": ids[0] if ids else None,
                "last_id": ids[-1] if ids else None}

    def _success(self, body: dict) -> dict:
        return {"id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant",
                "model": body.get("model", "claude-haiku-5-5"),
                "content": [{"type": "text", "text": self.text}],
                "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}}

    def _stream_events(self, body: dict) -> list:
        message = {"id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant",
                   "model": body.get("model", "claude-3-5-haiku-latest"), "content": [],
                   "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": self.input_tokens, "output_tokens": 1}}
        events: list = [
            self._sse({"type": "message_start", "message": message}, "message_start"),
            self._sse({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}, "content_block_start"),
            self._sse({"type": "ping"}, "ping")]
        for index, piece in enumerate(self.pieces()):
            if self.stream_error_after is not None and index == self.stream_error_after:
                return events + [self._sse({"type": "error", "error": {
                    "type": "overloaded_error", "message": "fake mid-stream error"}}, "error")]
            events.append(("piece", self._sse({"type": "content_block_delta", "index": 0, "delta": {
                "type": "text_delta", "text": piece}}, "content_block_delta")))
        return events + [
            self._sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            self._sse({"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                          "stop_sequence": None},
                       "usage": {"output_tokens": self.output_tokens}}, "message_delta"),
            self._sse({"type": "message_stop"}, "message_stop")]
