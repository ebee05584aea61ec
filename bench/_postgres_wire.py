"""A TCP proxy in front of Postgres that counts request/response turns (round trips), shared
by the benchmarks that report Postgres round trips per operation."""

import socket
import threading


class RoundTripCounter:
    """A TCP proxy in front of Postgres that counts request/response turns."""

    def __init__(self, upstream: dict):
        self.upstream, self.turns = upstream, 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _connect_upstream(self) -> socket.socket:
        host, port = self.upstream.get("host") or "/tmp", int(self.upstream.get("port") or 5432)
        if host.startswith("/"):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(f"{host}/.s.PGSQL.{port}")
            return sock
        return socket.create_connection((host, port))

    def _accept(self) -> None:
        while True:
            client, _ = self._server.accept()
            server = self._connect_upstream()
            state = {"last": None}
            threading.Thread(target=self._pump, args=(client, server, state, "client"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, state, "server"), daemon=True).start()

    def _pump(self, source, target, state, side) -> None:
        try:
            while data := source.recv(65536):
                if side == "client" and state["last"] != "client":
                    with self._lock:
                        self.turns += 1
                state["last"] = side
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
