"""Serve one api/ file through the Vercel Python runtime's own adapter (vercel_runtime.vc_init).

vc_init reads the function's entrypoint from __VC_HANDLER_* variables and exposes
`vc_handler(event, context)`, the exact code path a deployed function takes. This wraps it in a
plain HTTP server (one request at a time, like one function instance) so tests and developers
can call a function over HTTP without `vercel dev`.

    python -m devtools.vc_serve api/health.py --port 3001
"""

import argparse
import base64
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load(entrypoint: str):
    path = (ROOT / entrypoint).resolve()
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    os.environ.update({
        "__VC_HANDLER_ENTRYPOINT": str(path.relative_to(ROOT)),
        "__VC_HANDLER_ENTRYPOINT_ABS": str(path),
        "__VC_HANDLER_MODULE_NAME": module,
        "__VC_HANDLER_VARIABLE_NAME": "handler",
    })
    sys.path.insert(0, str(ROOT))
    from vercel_runtime.vc_init import vc_handler

    return vc_handler


def make_front(vc_handler):
    class Front(BaseHTTPRequestHandler):
        def __getattr__(self, name):
            if name.startswith("do_"):
                return self._forward
            raise AttributeError(name)

        def log_message(self, *args):
            pass

        def _forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            payload = {"path": self.path, "method": self.command,
                       "headers": {k.lower(): v for k, v in self.headers.items()},
                       "body": base64.b64encode(body).decode(), "encoding": "base64"}
            result = vc_handler({"body": json.dumps(payload)}, None)
            data = result.get("body") or ""
            data = base64.b64decode(data) if result.get("encoding") == "base64" else data.encode()
            self.send_response(result["statusCode"])
            for name, value in result.get("headers", {}).items():
                if name.lower() in ("content-length", "transfer-encoding", "connection", "date", "server"):
                    continue
                for item in value if isinstance(value, list) else [value]:
                    self.send_header(name, item)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Front


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entrypoint", help="e.g. api/health.py")
    parser.add_argument("--port", type=int, default=3001)
    args = parser.parse_args()
    server = HTTPServer(("127.0.0.1", args.port), make_front(load(args.entrypoint)))
    print(f"serving {args.entrypoint} through vc_handler on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
