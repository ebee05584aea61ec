"""A local server that speaks Clerk's `GET /v1/jwks` (Bearer secret key), counting fetches.
`status` is what it answers; with `hold` cleared, each fetch waits until it is set again
(a slow Clerk), and `started` counts the fetches that arrived."""

import json
import threading
from http.server import BaseHTTPRequestHandler

from devtools.serve import LocalServer
from tests.support.tokens import JWKS

SECRET_KEY = "sk_test_local_clerk"


class FakeClerk:
    def __init__(self, jwks: dict = JWKS, status: int = 200):
        self.jwks, self.status, self.fetches, self.started = jwks, status, 0, 0
        self.hold = threading.Event()
        self.hold.set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                ok = self.headers.get("Authorization") == f"Bearer {SECRET_KEY}"
                if self.path == "/v1/jwks":
                    fake.started += 1
                    fake.hold.wait(30)
                    fake.fetches += 1
                status = (fake.status if ok else 401) if self.path == "/v1/jwks" else 404
                body = json.dumps(fake.jwks if status == 200 else {"errors": []}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._local = LocalServer(Handler)
        self.url = self._local.url

    def close(self) -> None:
        self.hold.set()
        self._local.close()
