"""The local LLM provider `make dev` starts when no provider key is configured.

It speaks the OpenAI chat completions API (POST /v1/chat/completions), so the app's real
OpenAI SDK path runs unchanged: answers are deterministic (the same prompt gives the same
text), labelled with the model `local-dev`, report usage, and stream in OpenAI's chunk format
(`data: {chat.completion.chunk}` lines, a usage chunk when `stream_options.include_usage`,
then `data: [DONE]`) when the request says `"stream": true`. Any bearer key is accepted.

    python -m devtools.local_llm [--port 3100]   # on its own; prints OPENAI_BASE_URL
"""

import argparse
import hashlib
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import threading

MODEL = "local-dev"
API_KEY = "sk-local-dev"  # placeholder: the server checks that a key is sent, not which
_WORDS = ("bright", "steady", "clear", "bold", "simple", "quiet", "quick", "honest", "open",
          "careful", "warm", "sharp", "fresh", "calm", "true", "light")


def tokens(text: str) -> int:
    """A stable token count: one per word, at least one."""
    return max(1, len(text.split()))


def reply_text(prompt: str, max_tokens: int) -> str:
    """The deterministic answer to `prompt`: words chosen by the prompt's hash, at most
    `max_tokens` of them."""
    digest = hashlib.sha256(prompt.encode()).digest()
    words = [_WORDS[b % len(_WORDS)] for b in digest[:8]]
    text = f"Local answer: {' '.join(words)}."
    return " ".join(text.split()[:max(1, max_tokens)])


def _prompt(body: dict) -> str:
    parts = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            content = " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
        if isinstance(content, str):
            parts.append(content)
    return "\n".join(parts)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _json(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, status: int, code: str, message: str) -> None:
        self._json(status, {"error": {"message": message, "type": code, "param": None, "code": code}})

    def do_GET(self):
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": 0, "owned_by": "local"}]})
        else:
            self._error(404, "not_found", f"no route {self.path}")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.split("?")[0].rstrip("/") != "/v1/chat/completions":
            return self._error(404, "not_found", f"no route {self.path}")
        if not (self.headers.get("Authorization") or "").startswith("Bearer "):
            return self._error(401, "invalid_api_key", "send Authorization: Bearer <any key>")
        try:
            body = json.loads(raw or b"{}")
            assert isinstance(body, dict) and isinstance(body.get("messages"), list)
        except (ValueError, AssertionError):
            return self._error(400, "invalid_request_error", "a JSON body with `messages` is required")
        prompt = _prompt(body)
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 256
        text = reply_text(prompt, int(limit) if isinstance(limit, int) else 256)
        usage = {"prompt_tokens": tokens(prompt), "completion_tokens": tokens(text),
                 "total_tokens": tokens(prompt) + tokens(text)}
        ident = "chatcmpl-local-" + hashlib.sha256(raw).hexdigest()[:16]
        created = int(time.time())
        if body.get("stream"):
            return self._stream(ident, created, text, usage,
                                bool((body.get("stream_options") or {}).get("include_usage")))
        self._json(200, {"id": ident, "object": "chat.completion", "created": created,
                         "model": MODEL, "system_fingerprint": "local-dev",
                         "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                      "message": {"role": "assistant", "content": text,
                                                  "refusal": None}}],
                         "usage": usage})

    def _stream(self, ident: str, created: int, text: str, usage: dict, include_usage: bool):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def chunk(delta: dict | None, finish: str | None = None, **extra) -> dict:
            choices = [] if delta is None else [
                {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
            return {"id": ident, "object": "chat.completion.chunk", "created": created,
                    "model": MODEL, "system_fingerprint": "local-dev", "choices": choices,
                    **({"usage": None} if include_usage else {}), **extra}

        words = text.split(" ")
        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": (" " if i else "") + word}) for i, word in enumerate(words)]
        events.append(chunk({}, "stop"))
        if include_usage:
            events.append(chunk(None, usage=usage))
        try:
            for event in events:
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


class LocalLLM:
    """The server on 127.0.0.1:`port` (0 = a free one) in a daemon thread, until `close()`."""

    def __init__(self, port: int = 0):
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True, name="local-llm").start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def settings(self) -> dict[str, str]:
        """What `make dev` writes to .env so the app's OpenAI provider points here."""
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": API_KEY, "OPENAI_MODEL": MODEL}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    llm = LocalLLM(args.port)
    print(f"OPENAI_BASE_URL={llm.base_url} OPENAI_API_KEY={API_KEY} OPENAI_MODEL={MODEL}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        llm.close()


if __name__ == "__main__":
    main()
