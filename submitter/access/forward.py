"""Port forwarding over the SSH transport: a local TCP port to (host, port) as seen from the instance."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any


class Forward:
    """Local TCP port -> (host, port) as seen from the instance, over the SSH transport (direct-tcpip)."""

    def __init__(self, transport: Any, remote: tuple[str, int], local_port: int) -> None:
        self.transport = transport
        self.remote = remote
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.server.bind(("127.0.0.1", local_port))
        except OSError:
            self.server.bind(("127.0.0.1", 0))  # taken: any free port (the URL printed says which)
        self.server.listen(16)
        self.port = int(self.server.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, peer = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client, peer), daemon=True).start()

    def _handle(self, client: socket.socket, peer: tuple[str, int]) -> None:
        try:
            channel = self.transport.open_channel("direct-tcpip", self.remote, peer)
        except Exception:
            client.close()
            return
        _pump_pair(client, channel)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.close()


def _pump_pair(sock: socket.socket, channel: Any) -> None:
    def up() -> None:
        with contextlib.suppress(Exception):
            while data := sock.recv(65536):
                channel.sendall(data)
        with contextlib.suppress(Exception):
            channel.shutdown_write()

    thread = threading.Thread(target=up, daemon=True)
    thread.start()
    with contextlib.suppress(Exception):
        while data := channel.recv(65536):
            sock.sendall(data)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    thread.join(30)
    channel.close()
    sock.close()


def wait_port(transport: Any, remote: tuple[str, int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            channel = transport.open_channel("direct-tcpip", remote, ("127.0.0.1", 0), timeout=5)
        except Exception:
            time.sleep(1)
            continue
        channel.close()
        return True
    return False
