"""Frames: how packets travel on a byte stream.

A frame is an 11-byte header followed by the payload::

    flags (u8) | channel (u16) | wire length (u32) | raw length (u32)

``flags & COMPRESSED`` says the payload went through the direction's compression stream;
``channel`` 0 is the link itself (handshake, ping, session control), every other channel is
one kernel session.  The payload is one WXF expression.  Both lengths are checked against
``max_frame`` before anything is allocated, so a hostile header cannot make us reserve memory.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from . import wxf
from .compression import CompressionError, StreamCompressor, StreamDecompressor

HEADER = struct.Struct(">BHII")
COMPRESSED = 0x01
KNOWN_FLAGS = COMPRESSED
DEFAULT_MAX_FRAME = 1 << 30
MAX_CHANNEL = 0xFFFF


class LinkError(ConnectionError):
    """The link is unusable: closed, timed out or fed malformed data.  The message says which."""


class LinkClosed(LinkError):
    """The peer closed the connection."""


class LinkTimeout(LinkError, TimeoutError):
    """Nothing arrived within the time the caller allowed."""


class FrameError(LinkError):
    """The peer sent something that is not a valid frame; the connection must be dropped."""


@dataclass
class DirectionStats:
    """Bytes and packets one way; raw = WXF payloads, wire = what crossed the socket."""

    packets: int = 0
    raw_bytes: int = 0
    wire_bytes: int = 0
    compressed_frames: int = 0

    def ratio(self) -> float:
        """wire/raw: below 1 means compression helps."""
        return self.wire_bytes / self.raw_bytes if self.raw_bytes else 1.0


@dataclass
class LinkStats:
    sent: DirectionStats = field(default_factory=DirectionStats)
    received: DirectionStats = field(default_factory=DirectionStats)

    def as_dict(self) -> dict[str, Any]:
        return {
            name: {
                "packets": d.packets,
                "raw_bytes": d.raw_bytes,
                "wire_bytes": d.wire_bytes,
                "compressed_frames": d.compressed_frames,
                "ratio": round(d.ratio(), 4),
            }
            for name, d in (("sent", self.sent), ("received", self.received))
        }


class SocketReader:
    """Exact reads with a deadline; select() first so a silent peer can't block forever."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def read_exact(self, n: int, deadline: float | None) -> memoryview:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                ready = remaining is None or (
                    remaining > 0 and select.select([self.sock], [], [], remaining)[0]
                )
                if remaining is None:
                    select.select([self.sock], [], [])
            except (OSError, ValueError) as exc:
                raise LinkClosed(f"connection lost: {exc}") from None
            if not ready:
                if got:
                    raise LinkTimeout(f"peer stalled in the middle of a frame ({got}/{n} B)")
                raise LinkTimeout("no data within the timeout")
            try:
                k = self.sock.recv_into(view[got:], n - got)
            except TimeoutError:
                raise LinkTimeout("socket read timed out") from None
            except OSError as exc:
                raise LinkClosed(f"connection lost: {exc}") from None
            if k == 0:
                raise LinkClosed("peer closed the connection")
            got += k
        return view


class FrameWriter:
    """Encodes, compresses and sends frames; the caller serialises calls (one lock per link)."""

    def __init__(self, sock: socket.socket, codec: str = "none") -> None:
        self.sock = sock
        self.compressor = StreamCompressor(codec)
        self.stats = DirectionStats()

    def send(self, channel: int, expr: Any) -> None:
        self.send_payload(channel, wxf.dumps(expr))

    def send_payload(self, channel: int, payload: bytes) -> None:
        flags = 0
        body: bytes | memoryview = payload
        if self.compressor.should_compress(payload):
            body = self.compressor.compress(payload)
            flags = COMPRESSED
            self.stats.compressed_frames += 1
        header = HEADER.pack(flags, channel, len(body), len(payload))
        try:
            if len(body) < 65536:
                self.sock.sendall(header + body)
            else:
                self.sock.sendall(header)
                self.sock.sendall(body)
        except TimeoutError:
            raise LinkTimeout("peer stopped reading (send timed out)") from None
        except OSError as exc:
            raise LinkClosed(f"connection lost while sending: {exc}") from None
        self.stats.packets += 1
        self.stats.raw_bytes += len(payload)
        self.stats.wire_bytes += HEADER.size + len(body)


class FrameReader:
    """Receives and decodes frames; any malformed input raises FrameError (drop the link)."""

    def __init__(
        self, sock: socket.socket, codec: str = "none", max_frame: int = DEFAULT_MAX_FRAME
    ) -> None:
        self.reader = SocketReader(sock)
        self.decompressor = StreamDecompressor(codec)
        self.max_frame = max_frame
        self.stats = DirectionStats()

    def recv(self, timeout: float | None = None) -> tuple[int, Any]:
        """Wait at most ``timeout`` s for the first byte of a frame; then the rest of the
        frame must follow within ``max(timeout, 30)`` s."""
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        header = self.reader.read_exact(HEADER.size, deadline)
        flags, channel, wire_len, raw_len = HEADER.unpack(header)
        if flags & ~KNOWN_FLAGS:
            raise FrameError(f"malformed frame: unknown flags 0x{flags:02x}")
        if wire_len > self.max_frame or raw_len > self.max_frame:
            raise FrameError(
                f"malformed frame: declares {max(wire_len, raw_len)} bytes, "
                f"more than the {self.max_frame}-byte limit"
            )
        if not flags & COMPRESSED and wire_len != raw_len:
            raise FrameError("malformed frame: uncompressed frame with two different lengths")
        body_deadline = time.monotonic() + max(timeout or 0.0, 30.0)
        body = self.reader.read_exact(wire_len, body_deadline)
        if flags & COMPRESSED:
            try:
                payload: bytes | memoryview = self.decompressor.decompress(body, raw_len)
            except CompressionError as exc:
                raise FrameError(f"malformed frame: {exc}") from None
            self.stats.compressed_frames += 1
        else:
            payload = body
        try:
            expr = wxf.loads(payload, max_size=self.max_frame)
        except wxf.WXFError as exc:
            raise FrameError(f"malformed frame payload: {exc}") from None
        self.stats.packets += 1
        self.stats.raw_bytes += raw_len
        self.stats.wire_bytes += HEADER.size + wire_len
        return channel, expr
