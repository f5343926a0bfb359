"""A Link: one authenticated, compressed, framed connection between a kernel and an agent."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from typing import Any

from .compression import BulkPolicy
from .frames import (
    DEFAULT_MAX_FRAME,
    MAX_CHANNEL,
    BulkReceipt,
    FrameReader,
    FrameWriter,
    LinkError,
    LinkStats,
)
from .handshake import Negotiated, client_handshake, server_handshake

#: A peer that stops reading for this long is treated as gone (sends never block forever).
SEND_TIMEOUT = 60.0
#: The link's own channel: acknowledgements of bulk bytes received (never seen by ``recv``'s
#: callers).
ACK_CHANNEL = MAX_CHANNEL
#: Seconds between two acknowledgements of bulk bytes (one per chunk on a slow path).
ACK_INTERVAL = 0.01


class Link:
    """Frames both ways over one socket.

    ``send``/``send_many`` may be called from any thread (frames of a large payload and other
    frames interleave, see frames.py); ``recv`` from one reader thread only.
    """

    def __init__(self, sock: socket.socket, negotiated: Negotiated, max_frame: int) -> None:
        sock.settimeout(SEND_TIMEOUT)
        self.sock = sock
        self.negotiated = negotiated
        self.codec = negotiated.name
        self._writer = FrameWriter(sock, negotiated.codec, medium_quality=negotiated.medium_quality,
                                   path=negotiated.path)
        self._reader = FrameReader(sock, negotiated.codec, max_frame)
        self._reader.on_bulk = self._acknowledge
        self._acked_at = 0.0
        self.stats = LinkStats(self._writer.stats, self._reader.stats)
        self.closed = False

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        token: bytes,
        codec: str = "brotli",
        timeout: float = 10.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        path: str = "remote",
    ) -> Link:
        """Connect to an agent and authenticate; raise LinkError naming the cause.  ``path``:
        "local" when the agent runs on this machine (its bulk is then never compressed)."""
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise LinkError(f"cannot reach the agent at {host}:{port}: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            negotiated = client_handshake(sock, token, codec, timeout, path)
        except BaseException:
            sock.close()
            raise
        return cls(sock, negotiated, max_frame)

    @classmethod
    def accept(
        cls, sock: socket.socket, token: bytes, timeout: float = 10.0,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> Link:
        """Authenticate an accepted socket (the agent's side); raise LinkError on failure."""
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        negotiated = server_handshake(sock, token, timeout)
        return cls(sock, negotiated, max_frame)

    @property
    def last_bulk(self) -> BulkReceipt | None:
        """How the last large payload from the peer arrived (None: none yet)."""
        return self._reader.last_bulk

    @property
    def bulk_policy(self) -> BulkPolicy:
        """When large payloads are compressed (``.mode``: "adaptive", "always", "never")."""
        return self._writer.policy

    def send(self, channel: int, expr: Any) -> None:
        if self.closed:
            raise LinkError("link is closed")
        self._writer.send(channel, expr)

    def send_many(self, channel: int, exprs: Iterable[Any]) -> None:
        """Send several expressions in one frame; ``recv`` on the other side returns them one
        by one, in order.  For packets produced together (the end of a cell)."""
        if self.closed:
            raise LinkError("link is closed")
        self._writer.send_many(channel, exprs)

    def recv(self, timeout: float | None = None) -> tuple[int, Any]:
        """Next (channel, expression); LinkTimeout if none within ``timeout`` s.  The peer's
        acknowledgements of bulk bytes are taken here, for this side's BulkPolicy."""
        while True:
            channel, expr = self._reader.recv(timeout)
            if channel != ACK_CHANNEL:
                return channel, expr
            if type(expr) is int:
                self._writer.policy.acked(expr, time.monotonic())

    def _acknowledge(self, received: int) -> None:
        """The reader got a bulk chunk: tell the sender how many bulk bytes have arrived (at
        most every ACK_INTERVAL; skipped, never waited for, while this side is sending)."""
        now = time.monotonic()
        if now - self._acked_at >= ACK_INTERVAL and not self.closed:
            try:
                if self._writer.try_send(ACK_CHANNEL, received):
                    self._acked_at = now
            except OSError:
                pass  # the link is going down; the reader will say so

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
