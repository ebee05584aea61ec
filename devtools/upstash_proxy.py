"""A small Upstash-REST-compatible proxy in front of a real redis-server (dev and tests only).

Speaks what upstash-redis and upstash-ratelimit use: POST / with a JSON command array,
POST /pipeline and /multi-exec with an array of them, GET/POST /cmd/arg/... path commands
(the runbook's curl examples), bearer-token auth, and `Upstash-Encoding: base64` replies.
Real Redis rejects the `#!lua flags=...` shebang upstash-ratelimit puts on its scripts, so
the proxy strips that first line.

    python -m devtools.upstash_proxy --redis redis://127.0.0.1:6379/0 --port 8079 --token dev
"""

import argparse
import base64
import hmac
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError


def _strip_shebang(args: list[bytes]) -> list[bytes]:
    if args and args[0].upper() in (b"EVAL", b"SCRIPT") and len(args) > 1:
        index = 1 if args[0].upper() == b"EVAL" else 2
        if len(args) > index and args[index].startswith(b"#!"):
            args[index] = args[index].split(b"\n", 1)[1] if b"\n" in args[index] else b""
    return args


def _encode(value, b64: bool):
    if isinstance(value, list):
        return [_encode(item, b64) for item in value]
    if isinstance(value, bytes):
        if b64 and value != b"OK":
            return base64.b64encode(value).decode()
        return value.decode("utf-8", "replace")
    return value


def _arg(value) -> bytes:
    if isinstance(value, bool) or value is None:
        raise ValueError("command arguments must be strings or numbers")
    if isinstance(value, (int, float)):
        return repr(value).encode() if isinstance(value, float) else str(value).encode()
    if isinstance(value, str):
        return value.encode()
    raise ValueError("command arguments must be strings or numbers")


class Proxy:
    def __init__(self, redis_url: str, token: str):
        self.pool = redis.ConnectionPool.from_url(redis_url, socket_timeout=5)
        self.token = token

    def run(self, commands: list[list[bytes]], transaction: bool) -> list[dict]:
        conn = self.pool.get_connection()
        try:
            if transaction:
                commands = [[b"MULTI"], *commands, [b"EXEC"]]
            replies = []
            for command in commands:
                conn.send_command(*_strip_shebang(command))
            for _ in commands:
                try:
                    replies.append({"result": conn.read_response()})
                except ResponseError as exc:
                    replies.append({"error": str(exc)})
            if transaction:
                results = replies[-1].get("result")
                if not isinstance(results, list):
                    return [replies[-1]] * (len(commands) - 2)
                return [{"error": str(r)} if isinstance(r, ResponseError) else {"result": r}
                        for r in results]
            return replies
        except BaseException:
            conn.disconnect()
            raise
        finally:
            self.pool.release(conn)


def make_handler(proxy: Proxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args):
            pass

        def _reply(self, status: int, payload) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            given = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            return hmac.compare_digest(given.encode(), proxy.token.encode())

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not self._authorized():
                return self._reply(401, {"error": "Unauthorized"})
            b64 = (self.headers.get("Upstash-Encoding") or "").lower() == "base64"
            path = self.path.split("?", 1)[0].strip("/")
            try:
                if path in ("pipeline", "multi-exec"):
                    commands = [[_arg(a) for a in cmd] for cmd in json.loads(raw)]
                    replies = proxy.run(commands, transaction=path == "multi-exec")
                    return self._reply(200, [{k: _encode(v, b64) for k, v in r.items()}
                                             for r in replies])
                if path:
                    command = [unquote(part).encode() for part in path.split("/")]
                    if raw:
                        command.append(raw)
                else:
                    command = [_arg(a) for a in json.loads(raw)]
                reply = proxy.run([command], transaction=False)[0]
            except (ValueError, TypeError) as exc:
                return self._reply(400, {"error": f"ERR {exc}"})
            except RedisConnectionError as exc:
                return self._reply(503, {"error": f"ERR redis unavailable: {exc}"})
            status = 400 if "error" in reply else 200
            self._reply(status, {k: _encode(v, b64) for k, v in reply.items()})

        do_POST = do_GET = _handle

    return Handler


def serve(redis_url: str, token: str, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Start the proxy on a daemon thread; returns the server (its port is server_address[1])."""
    server = ThreadingHTTPServer((host, port), make_handler(Proxy(redis_url, token)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="upstash-proxy").start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--port", type=int, default=8079)
    parser.add_argument("--token", default="dev-upstash-token")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(Proxy(args.redis, args.token)))
    print(f"upstash proxy on http://127.0.0.1:{args.port} -> {args.redis}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
