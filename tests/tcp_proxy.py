"""A loopback TCP proxy for fault tests: pass, drop, delay or reset the connections.

* ``pass``: bytes go through.
* ``drop``: bytes are read and thrown away in both directions (a link that went
  silent: nothing is refused, nothing answers; new connections too).
* ``drop_replies``: requests reach the server, its replies are thrown away (the
  server acts on a command whose caller never learns it did).
* ``reset_next_reply``: the next reply from the server is not forwarded; every
  connection is reset instead (once; then ``pass`` again): the server acted,
  the client sees a reset and retries.
* ``delay``: every chunk waits ``delay`` seconds before it is forwarded.
* ``reset()``: every open connection is closed with a TCP RST (SO_LINGER 0).

Threads, each bounded: they poll a stop flag every 50 ms, and ``close()`` joins them.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time


def _rst_close(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class Proxy:
    """Listens on a free loopback port and forwards to ``127.0.0.1:target_port``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "pass"
        self.delay = 0.0
        self.accepted = 0
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def url(self, password: str) -> str:
        return f"redis://:{password}@127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self._listener], [], [], 0.05)
            if not ready:
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            self.accepted += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _rst_close(client)  # the server is down: the client sees a reset
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            for src, dst, replies in ((client, upstream, False), (upstream, client, True)):
                t = threading.Thread(target=self._pump, args=(src, dst, replies), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        while not self._stop:
            try:
                ready, _, _ = select.select([src], [], [], 0.05)
                if not ready:
                    continue
                data = src.recv(65536)
            except (OSError, ValueError):
                break
            if not data:
                break
            if self.mode == "drop" or (replies and self.mode == "drop_replies"):
                continue
            if replies and self.mode == "reset_next_reply":
                self.mode = "pass"
                self.reset()
                break
            if self.delay:
                time.sleep(self.delay)
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def reset(self) -> int:
        """Close every open connection with a RST; how many there were."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _rst_close(client)
            upstream.close()
        return len(pairs)

    def close(self) -> None:
        self._stop = True
        self.reset()
        self._listener.close()
        for t in self._threads:
            t.join(timeout=5)
