"""A Link: one authenticated, compressed, framed connection between a kernel and an agent."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

from .compression import BulkPolicy
from .frames import DEFAULT_MAX_FRAME, FrameReader, FrameWriter, LinkError, LinkStats
from .handshake import Negotiated, client_handshake, server_handshake

#: A peer that stops reading for this long is treated as gone (sends never block forever).
SEND_TIMEOUT = 60.0


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
        self._writer = FrameWriter(sock, negotiated.codec, medium_quality=negotiated.medium_quality)
        self._reader = FrameReader(sock, negotiated.codec, max_frame)
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
    ) -> Link:
        """Connect to an agent and authenticate; raise LinkError naming the cause."""
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise LinkError(f"cannot reach the agent at {host}:{port}: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            negotiated = client_handshake(sock, token, codec, timeout)
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
        """Next (channel, expression); LinkTimeout if none within ``timeout`` s."""
        return self._reader.recv(timeout)

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
