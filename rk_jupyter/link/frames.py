"""Frames: how packets travel on a byte stream.

A frame is a header of one to a few bytes, then the body::

    byte 0:  kind (2 bits) | channel (2 bits) | length (4 bits)
    [ext]    one byte, present when kind is 3
    [channel varint]   when the channel field is 3
    [length varint]    when the length field is 15
    [size varint]      when ext has FIRST: the whole payload's size

``kind`` 0 means the body is the payload as is, 1 that it went through the direction's SMALL
compression context, 2 through the MEDIUM one (compression.py explains the contexts); 3 says an
extension byte follows, whose low two bits name the body's encoding (0 raw, 1 SMALL, 2 MEDIUM,
3 BULK) and whose other bits are flags: ``MANY`` (the payload is a List of expressions, delivered
one by one, see ``FrameWriter.send_many``), ``CHUNK`` (the frame carries one piece of a payload
split over several frames), ``FIRST`` and ``LAST`` (its first and last piece).  The channel field
holds channels 0–2 (0 is the link itself: handshake, ping, session control; every other channel
is one kernel session), the length field bodies of 0–14 bytes; varints (little-endian base 128,
as in WXF) carry larger values.  The payload is one WXF expression.

Why so small: most frames are tiny (an In/Out name, a short result, a cell's text compress to
about 12 bytes), so the 11-byte fixed header this replaces was nearly half of the bytes on the
wire.  In ``benchmarks/bench_link.py``'s workload 891 of 1117 frames now have a 1-byte header,
190 a 2-byte one (1379 header bytes, 12287 before).  The body length of a compressed frame is all
the reader needs: it decompresses the body with the frame limit as the bound, and the WXF
decoder then checks the payload, so the raw length is not sent (about 1.5 bytes a frame).

Payloads from ``compression.BULK_FROM`` (256 KiB) on travel as chunks of ``compression.CHUNK``
bytes, each compressed or not as ``compression.BulkPolicy`` decides (from the path's rate,
which the receiver's acknowledgements on ``connection.ACK_CHANNEL`` measure); other frames, of any
channel, may go between two chunks (a pong or an interrupt's answer need not wait behind a
50 MB result), but only one chunked payload is in flight per direction.  The reader writes
chunks straight into one buffer of the declared size, reserved with ``mmap`` (pages come from
the kernel as they are written: no zero-filling) and decodes the payload in place.

Every length and the channel are checked against their limits before anything is allocated, so
a hostile header cannot make us reserve memory, and compressed bodies inflate no further than
the frame limit (or what remains of the declared payload; a MEDIUM body's filtered form, on its
way, no further than ``delta.bound`` of that).
"""

from __future__ import annotations

import mmap
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import compression, wxf
from .compression import (
    BULK,
    MEDIUM,
    SMALL,
    BulkPolicy,
    CompressionError,
    StreamCompressor,
    StreamDecompressor,
    looks_incompressible,
)
from .wxf import varint

RAW = 0
EXT = 3
#: Extension byte: bits 0-1 name the body's encoding (RAW, SMALL, MEDIUM, BULK); then flags.
MANY = 0x04
CHUNK_FLAG = 0x08
FIRST = 0x10
LAST = 0x20
KNOWN_EXT = 0x3F
COMPRESSED_BODIES = (SMALL, MEDIUM, BULK)

DEFAULT_MAX_FRAME = 1 << 30
MAX_CHANNEL = 0xFFFF
#: Once a frame has begun, the rest of it must arrive within max(timeout, BODY_TIMEOUT) s.
BODY_TIMEOUT = 30.0
#: The reader's buffer: small frames and headers are read with one recv() for several frames.
READAHEAD = 64 * 1024
#: Bodies at least this long go to the socket with sendmsg() next to their header (no copy).
_JOIN_BELOW = 64 * 1024
_MAX_VARINT = 5  # 35 bits: more than any frame limit


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
    """Bytes and packets one way; raw = WXF payloads, wire = what crossed the socket
    (headers included).  ``packets`` counts expressions, ``frames`` what carried them."""

    packets: int = 0
    raw_bytes: int = 0
    wire_bytes: int = 0
    compressed_frames: int = 0
    frames: int = 0

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
                "frames": d.frames,
                "raw_bytes": d.raw_bytes,
                "wire_bytes": d.wire_bytes,
                "compressed_frames": d.compressed_frames,
                "ratio": round(d.ratio(), 4),
            }
            for name, d in (("sent", self.sent), ("received", self.received))
        }


# -- the header ---------------------------------------------------------------------------------


def encode_header(
    body: int, channel: int, length: int, flags: int = 0, total: int | None = None
) -> bytes:
    """The header of a frame whose body (``length`` bytes) is encoded as ``body`` (RAW, SMALL,
    MEDIUM or BULK); ``flags`` (MANY, CHUNK_FLAG, FIRST, LAST) need the extension byte, and
    FIRST needs the payload's ``total`` size."""
    kind = body if not flags and body != BULK else EXT
    out = bytearray(((kind << 6) | (min(channel, 3) << 4) | min(length, 15),))
    if kind == EXT:
        out.append(body | flags)
    if channel >= 3:
        out += varint(channel)
    if length >= 15:
        out += varint(length)
    if flags & FIRST:
        out += varint(total or 0)
    return bytes(out)


@dataclass
class Header:
    body: int  # RAW, SMALL, MEDIUM or BULK
    flags: int  # MANY, CHUNK_FLAG, FIRST, LAST
    channel: int
    length: int  # of the body
    total: int | None  # the chunked payload's size, on its FIRST frame
    size: int  # of the header itself


def parse_header(first: int, next_byte: Callable[[], int], max_frame: int) -> Header:
    """Decode a header from its first byte and a source of the next ones; FrameError when it
    is malformed or declares more than ``max_frame`` bytes (checked before any allocation)."""
    size = 1

    def varint(what: str) -> int:
        nonlocal size
        n = shift = 0
        for _ in range(_MAX_VARINT):
            b = next_byte()
            size += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
        raise FrameError(f"malformed frame: overlong {what}")

    kind, channel, length = first >> 6, (first >> 4) & 3, first & 15
    body, flags = kind, 0
    if kind == EXT:
        ext = next_byte()
        size += 1
        if ext & ~KNOWN_EXT:
            raise FrameError(f"malformed frame: unknown flags 0x{ext:02x}")
        body, flags = ext & 3, ext & ~3
        if flags & (FIRST | LAST) and not flags & CHUNK_FLAG:
            raise FrameError("malformed frame: FIRST/LAST flag on a frame that is no chunk")
    if channel == 3:
        channel = varint("channel")
        if channel > MAX_CHANNEL:
            raise FrameError(f"malformed frame: channel {channel} > {MAX_CHANNEL}")
    if length == 15:
        length = varint("length")
    total = varint("payload size") if flags & FIRST else None
    declared = max(length, total or 0)
    if declared > max_frame:
        raise FrameError(
            f"malformed frame: declares {declared} bytes, more than the {max_frame}-byte limit"
        )
    if total == 0:
        raise FrameError("malformed frame: empty chunked payload")
    return Header(body, flags, channel, length, total, size)


def decode_header(data: bytes | memoryview, max_frame: int = DEFAULT_MAX_FRAME) -> Header:
    """``parse_header`` on bytes that start with a header (tests, benchmarks)."""
    it = iter(bytes(data[: 1 + 1 + 3 * _MAX_VARINT]))
    try:
        return parse_header(next(it), it.__next__, max_frame)
    except StopIteration:
        raise FrameError("malformed frame: truncated header") from None


# -- reading --------------------------------------------------------------------------------------


#: poll(2) needs no descriptor of its own (epoll would: one more to fail with EMFILE) and has
#: no FD_SETSIZE limit.
_Selector = getattr(selectors, "PollSelector", selectors.DefaultSelector)


class SocketReader:
    """Exact reads with a deadline; a readiness wait first so a silent peer can't block forever.

    The wait is a poll-based selector, not ``select.select``: select() fails for descriptors
    ≥ 1024, which a process holding many connections (an agent under a flood) hands out.

    With ``readahead`` (the default) it reads up to READAHEAD bytes at a time and serves small
    reads from that buffer; without, it never reads a byte beyond what it was asked for (the
    handshake: whatever follows belongs to the link's own reader).  Large reads go straight
    into the caller's buffer (``read_into``).
    """

    def __init__(self, sock: socket.socket, readahead: bool = True) -> None:
        self.sock = sock
        self._readahead = readahead
        self._buf = bytearray(READAHEAD)
        self._view = memoryview(self._buf)
        self._start = self._end = 0
        self._selector: selectors.BaseSelector | None = None

    def _wait(self, remaining: float | None) -> bool:
        """True once the socket is readable, False after ``remaining`` s (None: no limit)."""
        if self._selector is None:
            self._selector = _Selector()
            self._selector.register(self.sock, selectors.EVENT_READ)
        return bool(self._selector.select(remaining))

    def _recv(self, into: memoryview, deadline: float | None, midframe: bool) -> int:
        remaining = None if deadline is None else deadline - time.monotonic()
        try:
            ready = self._wait(remaining) if remaining is None or remaining > 0 else False
        except (OSError, ValueError) as exc:
            raise LinkClosed(f"connection lost: {exc}") from None
        if not ready:
            if midframe:
                raise LinkTimeout("peer stalled in the middle of a frame")
            raise LinkTimeout("no data within the timeout")
        try:
            k = self.sock.recv_into(into)
        except TimeoutError:
            raise LinkTimeout("socket read timed out") from None
        except OSError as exc:
            raise LinkClosed(f"connection lost: {exc}") from None
        if k == 0:
            raise LinkClosed("peer closed the connection")
        return k

    def _fill(self, n: int, deadline: float | None, midframe: bool) -> None:
        """Make at least ``n`` (≤ READAHEAD) bytes available in the buffer."""
        have = self._end - self._start
        if self._start + n > READAHEAD:  # move what is left to the front (a copy: no overlap)
            self._buf[:have] = bytes(self._view[self._start : self._end])
            self._start, self._end = 0, have
        while have < n:
            stop = READAHEAD if self._readahead else self._start + n
            k = self._recv(self._view[self._end : stop], deadline, midframe or have > 0)
            self._end += k
            have += k

    def byte(self, deadline: float | None, midframe: bool = True) -> int:
        if self._start == self._end:
            self._fill(1, deadline, midframe)
        b = self._buf[self._start]
        self._start += 1
        return b

    def read(self, n: int, deadline: float | None, midframe: bool = True) -> bytes | bytearray:
        """Exactly ``n`` bytes: ``bytes`` up to READAHEAD, else a fresh ``bytearray``."""
        if n <= READAHEAD:
            if self._end - self._start < n:
                self._fill(n, deadline, midframe)
            out = bytes(self._view[self._start : self._start + n])
            self._start += n
            return out
        out = bytearray(n)
        self.read_into(memoryview(out), deadline)
        return out

    def read_into(self, into: memoryview, deadline: float | None) -> None:
        """Fill ``into`` exactly: what is buffered first, then straight from the socket."""
        n = len(into)
        got = min(n, self._end - self._start)
        into[:got] = self._view[self._start : self._start + got]
        self._start += got
        while got < n:
            got += self._recv(into[got:], deadline, True)

    def read_exact(self, n: int, deadline: float | None) -> bytes:
        """``n`` bytes, where a timeout before the first one is not a stall (the preamble)."""
        return bytes(self.read(n, deadline, midframe=False))


def _release(buf: Any) -> None:
    """Unmap a receive buffer now, or, while an exception's traceback still holds a view of
    it, when the garbage collector frees it."""
    if isinstance(buf, mmap.mmap):
        try:
            buf.close()
        except BufferError:
            pass


@dataclass
class _Assembly:
    """A chunked payload being received."""

    channel: int
    many: bool
    buf: mmap.mmap
    size: int
    filled: int = 0
    started: float = 0.0
    wire: int = 0
    chunks: int = 0
    compressed: int = 0


@dataclass(frozen=True)
class BulkReceipt:
    """How the last chunked payload arrived: what ``%rkernel status`` says of large outputs
    (the path's throughput as this side saw it, and whether the sender compressed)."""

    raw_bytes: int
    wire_bytes: int
    seconds: float
    chunks: int
    compressed_chunks: int

    @property
    def wire_Bps(self) -> float:
        return self.wire_bytes / self.seconds if self.seconds > 0 else 0.0


class FrameReader:
    """Receives and decodes frames; any malformed input raises FrameError (drop the link).
    One thread reads; after a FrameError or a stall in the middle of a frame every further
    ``recv`` raises LinkError."""

    def __init__(
        self,
        sock: socket.socket,
        codec: str = "none",
        max_frame: int = DEFAULT_MAX_FRAME,
        *,
        readahead: bool = True,
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        self.reader = SocketReader(sock, readahead)
        self.body_timeout = body_timeout
        self.codec = codec
        self._decompressors: dict[int, StreamDecompressor] = (
            {} if codec == "none" else {s: StreamDecompressor(codec, s) for s in COMPRESSED_BODIES}
        )
        self.max_frame = max_frame
        self.stats = DirectionStats()
        self._pending: deque[tuple[int, Any]] = deque()
        self._assembly: _Assembly | None = None
        self._broken: str | None = None
        #: Called with the bulk wire bytes received so far, after each chunk (the Link
        #: acknowledges them to the sender, whose BulkPolicy measures the path by them).
        self.on_bulk: Callable[[int], None] | None = None
        self.bulk_wire_bytes = 0
        self.last_bulk: BulkReceipt | None = None

    def recv(self, timeout: float | None = None) -> tuple[int, Any]:
        """Wait at most ``timeout`` s for the first byte of a frame; then the rest of the
        frame must follow within ``max(timeout, body_timeout)`` s (30 unless given), and so
        must each further frame of a chunked payload."""
        if self._pending:
            return self._pending.popleft()
        if self._broken:
            raise LinkError(f"link unusable after an earlier error: {self._broken}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            first = self.reader.byte(deadline, midframe=False)
            try:
                got = self._frame(first,
                                  time.monotonic() + max(timeout or 0.0, self.body_timeout))
            except LinkError as exc:
                self._broken = str(exc)
                if self._assembly is not None:
                    _release(self._assembly.buf)
                    self._assembly = None
                raise
            if got is not None:
                return got
            if timeout is not None:
                deadline = time.monotonic() + max(timeout, self.body_timeout)

    def _frame(self, first: int, deadline: float) -> tuple[int, Any] | None:
        reader = self.reader
        header = parse_header(first, lambda: reader.byte(deadline), self.max_frame)
        n = header.length
        self.stats.frames += 1
        self.stats.wire_bytes += header.size + n
        if header.flags & CHUNK_FLAG:
            return self._chunk(header, deadline)
        if header.body == RAW:
            if n <= READAHEAD:
                payload: Any = reader.read(n, deadline)
            else:
                payload = mmap.mmap(-1, n)
                try:
                    with memoryview(payload) as view:
                        reader.read_into(view, deadline)
                except BaseException:
                    _release(payload)
                    raise
        else:
            payload = self._decompress(header.body, reader.read(n, deadline), self.max_frame)
        try:
            return self._deliver(header.channel, payload, bool(header.flags & MANY))
        finally:
            _release(payload)

    def _decompress(self, body: int, data: bytes | bytearray, limit: int) -> bytes:
        decompressor = self._decompressors.get(body)
        if decompressor is None:
            raise FrameError("malformed frame: compressed frame on a link without compression")
        try:
            out = decompressor.decompress(data, limit)
        except CompressionError as exc:
            raise FrameError(f"malformed frame: {exc}") from None
        self.stats.compressed_frames += 1
        return out

    def _chunk(self, header: Header, deadline: float) -> tuple[int, Any] | None:
        many = bool(header.flags & MANY)
        asm = self._assembly
        if header.flags & FIRST:
            if asm is not None:
                raise FrameError("malformed frame: a chunked payload began inside another")
            assert header.total is not None
            asm = self._assembly = _Assembly(
                header.channel, many, mmap.mmap(-1, header.total), header.total,
                started=time.monotonic()
            )
        elif asm is None:
            raise FrameError("malformed frame: a chunk outside any chunked payload")
        elif (asm.channel, asm.many) != (header.channel, many):
            raise FrameError("malformed frame: a chunk that belongs to no payload in progress")
        left = asm.size - asm.filled
        if header.body == RAW:
            if header.length > left:
                raise FrameError("malformed frame: chunks exceed the declared payload size")
            with memoryview(asm.buf) as view:
                self.reader.read_into(view[asm.filled : asm.filled + header.length], deadline)
            asm.filled += header.length
        else:
            out = self._decompress(header.body, self.reader.read(header.length, deadline), left)
            asm.buf[asm.filled : asm.filled + len(out)] = out
            asm.filled += len(out)
        self.bulk_wire_bytes += header.size + header.length
        asm.wire += header.size + header.length
        asm.chunks += 1
        asm.compressed += header.body != RAW
        if self.on_bulk is not None:
            self.on_bulk(self.bulk_wire_bytes)
        if not header.flags & LAST:
            return None
        self._assembly = None
        self.last_bulk = BulkReceipt(asm.size, asm.wire, time.monotonic() - asm.started,
                                     asm.chunks, asm.compressed)
        try:
            if asm.filled != asm.size:
                raise FrameError("malformed frame: the chunked payload is shorter than declared")
            return self._deliver(asm.channel, asm.buf, asm.many)
        finally:
            _release(asm.buf)

    def _deliver(self, channel: int, payload: Any, many: bool) -> tuple[int, Any]:
        try:
            expr = wxf._loads_buffer(payload, max_size=self.max_frame)
        except wxf.WXFError as exc:
            raise FrameError(f"malformed frame payload: {exc}") from None
        self.stats.raw_bytes += len(payload)
        if not many:
            self.stats.packets += 1
            return channel, expr
        if not isinstance(expr, list) or not expr:
            raise FrameError("malformed frame: a MANY frame must hold a non-empty List")
        self.stats.packets += len(expr)
        self._pending.extend((channel, e) for e in expr[1:])
        return channel, expr[0]


# -- writing --------------------------------------------------------------------------------------


def _chunks(parts: list[bytes | memoryview], size: int) -> Iterator[bytes | memoryview]:
    """The concatenation of ``parts`` in pieces of ``size`` bytes (the last may be shorter):
    slices of the parts where a piece lies within one, joined copies where it spans several."""
    pending: list[bytes | memoryview] = []
    have = 0
    for part in parts:
        view = memoryview(part)
        pos, n = 0, len(view)
        while pos < n:
            take = min(size - have, n - pos)
            piece = view[pos : pos + take]
            pos += take
            if not pending and take == size:
                yield piece
                continue
            pending.append(piece)
            have += take
            if have == size:
                yield b"".join(pending)
                pending, have = [], 0
    if pending:
        yield pending[0] if len(pending) == 1 else b"".join(pending)


class FrameWriter:
    """Encodes, compresses and sends frames; safe to call from several threads.

    A frame is compressed and sent under one lock (each context's frames must reach the socket
    in the order they were compressed); chunked payloads take a second lock for their whole
    length and the first one per chunk only, so other frames go between their chunks.
    ``bulk`` is the BulkPolicy mode ("adaptive", "always", "never"); ``medium_quality``
    overrides compression.MEDIUM_QUALITY (the "brotli-max" preference).
    """

    def __init__(self, sock: socket.socket, codec: str = "none", bulk: str = "adaptive",
                 medium_quality: int | None = None, path: str = "remote") -> None:
        self.sock = sock
        self.codec = codec
        self._streams: dict[int, StreamCompressor] = (
            {} if codec == "none"
            else {s: StreamCompressor(codec, s, medium_quality) for s in COMPRESSED_BODIES}
        )
        self.policy = BulkPolicy(bulk if self._streams else "never", path)
        self.stats = DirectionStats()
        self._lock = threading.Lock()
        self._bulk_lock = threading.Lock()

    def send(self, channel: int, expr: Any) -> None:
        self._send(channel, wxf._dump_parts(expr), 1, False)

    def send_many(self, channel: int, exprs: Iterable[Any]) -> None:
        """Send several expressions in one frame (payload: the WXF List of them, flag MANY);
        the reader delivers them one by one, in order.  One frame costs one header and one
        compression flush instead of one per expression: the packets that end a cell
        (OutputNamePacket, ReturnPacket, InputNamePacket) take ~25 % fewer bytes together."""
        exprs = list(exprs)
        if len(exprs) == 1:
            self.send(channel, exprs[0])
        elif exprs:
            self._send(channel, wxf._dump_parts(exprs), len(exprs), True)

    def try_send(self, channel: int, expr: Any) -> bool:
        """Send a small frame now if that cannot wait on this writer: not while a chunked
        payload of ours is in flight, nor while another frame is being written (then False,
        and nothing is sent).  For acknowledgements from a reader thread, which must never
        block behind its own side's sends (two readers each waiting to acknowledge while
        both sides send a large payload would wait for each other)."""
        if self._bulk_lock.locked() or not self._lock.acquire(blocking=False):
            return False
        try:
            payload = b"".join(wxf._dump_parts(expr))
            body, stream = self._encode(payload)
            self._frame(encode_header(stream, channel, len(body), 0), body, stream)
        finally:
            self._lock.release()
        return True

    def send_payload(self, channel: int, payload: bytes | memoryview) -> None:
        """Send an already encoded WXF expression."""
        self._send(channel, [payload], 1, False)

    def _send(self, channel: int, parts: list[bytes | memoryview], count: int, many: bool) -> None:
        if not 0 <= channel <= MAX_CHANNEL:
            raise ValueError(f"channel {channel} is not in 0..{MAX_CHANNEL}")
        size = sum(len(p) for p in parts)  # the views are byte-format
        if size >= compression.BULK_FROM:  # the size limits are read where they are tuned
            self._send_chunked(channel, parts, size, count, many)
            return
        payload = parts[0] if len(parts) == 1 else b"".join(parts)
        flags = MANY if many else 0
        with self._lock:
            body, stream = self._encode(payload)
            self._frame(encode_header(stream, channel, len(body), flags), body, stream)
            self.stats.packets += count
            self.stats.raw_bytes += size

    def _encode(self, payload: bytes | memoryview) -> tuple[bytes | memoryview, int]:
        n = len(payload)
        if not self._streams or n < compression.MIN_COMPRESS_SIZE:
            return payload, RAW
        stream = SMALL if n < compression.SMALL_LIMIT else MEDIUM
        if stream == MEDIUM and looks_incompressible(payload):
            return payload, RAW
        return self._streams[stream].compress(payload), stream

    def _send_chunked(
        self, channel: int, parts: list[bytes | memoryview], size: int, count: int, many: bool
    ) -> None:
        policy = self.policy
        with self._bulk_lock:
            sent = 0
            for chunk in _chunks(parts, compression.CHUNK):
                n = len(chunk)
                flags = CHUNK_FLAG | (MANY if many else 0)
                flags |= (FIRST if not sent else 0) | (LAST if sent + n == size else 0)
                body: bytes | memoryview = chunk
                stream = RAW
                if policy.should_compress(chunk):
                    started = time.perf_counter()
                    body = self._streams[BULK].compress(chunk)
                    policy.compressed(n, len(body), time.perf_counter() - started)
                    stream = BULK
                header = encode_header(stream, channel, len(body), flags, size)
                with self._lock:
                    self._frame(header, body, stream)
                sent += n
            with self._lock:
                self.stats.packets += count
                self.stats.raw_bytes += size

    def _frame(self, header: bytes, body: bytes | memoryview, stream: int) -> None:
        """Write one frame and count it (the caller holds ``_lock``)."""
        self._write(header, body)
        stats = self.stats
        stats.frames += 1
        stats.wire_bytes += len(header) + len(body)
        stats.compressed_frames += stream != RAW

    def _write(self, header: bytes, body: bytes | memoryview) -> None:
        try:
            if len(body) < _JOIN_BELOW:
                self.sock.sendall(header + body)
                return
            sendmsg = getattr(self.sock, "sendmsg", None)
            if sendmsg is None:
                self.sock.sendall(header)
                self.sock.sendall(body)
                return
            views = [memoryview(header), memoryview(body)]
            while views:
                k = sendmsg(views)
                while k and views:
                    if k >= len(views[0]):
                        k -= len(views.pop(0))
                    else:
                        views[0] = views[0][k:]
                        k = 0
        except TimeoutError:
            raise LinkTimeout("peer stopped reading (send timed out)") from None
        except OSError as exc:
            raise LinkClosed(f"connection lost while sending: {exc}") from None
