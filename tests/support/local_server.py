"""A threaded HTTP server on an ephemeral loopback port, for the test-side fakes."""

import threading
from http.server import ThreadingHTTPServer


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
