"""A small threaded TCP proxy for fault tests: forwards 127.0.0.1:<port> to an upstream
(PostgreSQL) and can cut the line on demand.

    proxy = TcpProxy("127.0.0.1", 5432).start()
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
    proxy.block()    # existing connections are reset, new ones are accepted and reset at once
    proxy.unblock()  # forwards again (clients must reconnect)
    proxy.stop()

`block(mode="blackhole")` instead keeps every connection open but stops moving bytes in
either direction (a peer that vanished without a FIN/RST, as behind a dead NAT or a
partitioned network); new connections are accepted and then left silent too. `unblock()`
after a blackhole resets the stalled connections, as a NAT that lost its state would.
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Literal, Self

Mode = Literal["reset", "blackhole"]


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), waking any thread blocked on the socket."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1", port: int = 0):
        self.upstream = (upstream_host, upstream_port)
        self.listen = (listen_host, port)
        self.port = port
        self._blocked: Mode | None = None
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket | None]] = set()
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._forwarding = threading.Event()
        self._forwarding.set()
        self.accepted = 0
        self.refused = 0

    # --- control ----------------------------------------------------------------------------

    def start(self) -> Self:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(self.listen)
        server.listen(64)
        server.settimeout(0.2)
        self._server = server
        self.port = server.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name=f"tcp-proxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    @property
    def blocked(self) -> bool:
        return self._blocked is not None

    def block(self, mode: Mode = "reset") -> None:
        """Cut the line: `reset` drops every connection now and refuses new ones;
        `blackhole` keeps them but moves no more bytes."""
        with self._lock:
            self._blocked = mode
            if mode == "blackhole":
                self._forwarding.clear()
                return
            pairs, self._pairs = self._pairs, set()
        for pair in pairs:
            self._close_pair(pair)

    def unblock(self) -> None:
        with self._lock:
            was, self._blocked = self._blocked, None
            pairs = set()
            if was == "blackhole":
                pairs, self._pairs = self._pairs, set()
            self._forwarding.set()
        for pair in pairs:
            self._close_pair(pair)

    def stop(self) -> None:
        self._stopping.set()
        self._forwarding.set()
        if self._server is not None:
            self._server.close()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            pairs, self._pairs = self._pairs, set()
        for pair in pairs:
            self._close_pair(pair)

    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- plumbing ---------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            mode = self._blocked
            if mode == "reset":
                self.refused += 1
                _reset(client)
                continue
            if mode == "blackhole":
                # accepted, then silence: the client's connect succeeds and its first
                # request never gets an answer
                with self._lock:
                    self._pairs.add((client, None))
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                self.refused += 1
                _reset(client)
                continue
            self.accepted += 1
            for sock in (client, upstream):  # forward each write at once, as libpq's own socket does: with
                # Nagle a pipelined client's second write waits for the first's delayed ACK (40 ms a round)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = (client, upstream)
            with self._lock:
                if self._blocked is not None:  # blocked while connecting upstream
                    self._close_pair(pair)
                    continue
                self._pairs.add(pair)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, pair), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, pair) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._forwarding.wait()  # a blackhole holds the bytes here
                if self._stopping.is_set() or pair not in self._pairs:
                    break
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._pairs.discard(pair)
        self._close_pair(pair)

    @staticmethod
    def _close_pair(pair) -> None:
        for sock in pair:
            if sock is not None:
                _reset(sock)
