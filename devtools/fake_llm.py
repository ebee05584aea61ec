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

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = fake._answer(self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
                if fake.delay_s:
                    time.sleep(fake.delay_s)
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

    def _answer(self, path: str, headers: dict, raw: bytes) -> tuple[int, dict]:
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
        return 200, self.success_body if self.success_body is not None else self._success(body or {})


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
