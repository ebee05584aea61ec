"""A local HTTP server that speaks the part of the Stripe API the reconciliation uses, for the
real stripe SDK to talk to (STRIPE_API_BASE=fake.url):

    GET /v1/subscriptions?status=all&limit=N&starting_after=sub_...

with Stripe's list envelope (`object: list`, `data`, `has_more`, `url`), newest first as
Stripe lists them, Bearer authentication (401 `invalid_request_error` otherwise) and 404 for
anything else. Objects are the shape ops.stripe_events renders for its API version.

    stripe = FakeStripe(api_key="sk_test_fake")
    stripe.put(subscription_object(...))   # add or replace by id
    stripe.requests                        # (path, query) of each request, thread-safe
"""

import json
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from devtools.serve import LocalServer

ENDED = ("canceled", "incomplete_expired")


class FakeStripe:
    def __init__(self, api_key: str = "sk_test_fake"):
        self.api_key = api_key
        self.requests: list[tuple[str, dict]] = []
        self.status = 200  # set to 500 to make every request fail like Stripe's api_error
        self._subscriptions: dict[str, dict] = {}
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_GET(self):
                status, body = fake._answer(self.path, self.headers.get("Authorization", ""))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Request-Id", "req_fake")
                self.end_headers()
                self.wfile.write(payload)

        self._server = LocalServer(Handler)

    @property
    def url(self) -> str:
        return self._server.url

    def put(self, *subscriptions: dict) -> None:
        with self._lock:
            for sub in subscriptions:
                self._subscriptions[sub["id"]] = sub

    def close(self) -> None:
        self._server.close()

    @staticmethod
    def _error(status: int, kind: str, message: str) -> tuple[int, dict]:
        return status, {"error": {"type": kind, "message": message}}

    def _answer(self, path: str, authorization: str) -> tuple[int, dict]:
        parts = urlsplit(path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append((parts.path, query))
            subscriptions = sorted(self._subscriptions.values(),
                                   key=lambda s: (s.get("created", 0), s["id"]), reverse=True)
        if authorization != f"Bearer {self.api_key}":
            return self._error(401, "invalid_request_error", "Invalid API Key provided")
        if self.status != 200:
            return self._error(self.status, "api_error", "Something went wrong on Stripe's end")
        if parts.path != "/v1/subscriptions":
            return self._error(404, "invalid_request_error", f"Unrecognized request URL (GET: {parts.path})")
        status = query.get("status")
        if status == "all":
            pass
        elif status:
            subscriptions = [s for s in subscriptions if s["status"] == status]
        else:  # Stripe's default: every subscription that has not ended
            subscriptions = [s for s in subscriptions if s["status"] not in ENDED]
        try:
            limit = int(query.get("limit", 10))
        except ValueError:
            return self._error(400, "invalid_request_error", "Invalid integer: limit")
        if not 1 <= limit <= 100:
            return self._error(400, "invalid_request_error", "limit must be between 1 and 100")
        after = query.get("starting_after")
        if after:
            ids = [s["id"] for s in subscriptions]
            if after not in ids:
                return self._error(400, "invalid_request_error", f"No such subscription: '{after}'")
            subscriptions = subscriptions[ids.index(after) + 1:]
        page = subscriptions[:limit]
        return 200, {"object": "list", "data": page, "has_more": len(subscriptions) > limit,
                     "url": "/v1/subscriptions"}
