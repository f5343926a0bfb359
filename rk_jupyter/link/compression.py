"""Streaming compression of frame payloads: three contexts per direction, picked by frame size.

Each context lives for the whole link and is flushed after every frame, so each frame decodes on
arrival while all earlier traffic of that context serves as its dictionary: repeated packet
heads, symbol names and SVG boilerplate cost almost nothing after their first appearance.  Each
frame says which context it went through (frames.py), and the two ends keep the contexts in step.

Why three (figures from ``benchmarks/bench_link.py``: 290 Mathics3 cells, 661 frames as the
session sends them, acknowledgements included; ratio = bytes on the wire / what ``ssh -C`` would
send for the same session: 0.655 now; 1.018 with the former single brotli context and 11-byte
headers, 0.798 before the MEDIUM context's delta filter):

``SMALL`` (frames below ``SMALL_LIMIT``): zlib level 9, flushed with ``Z_PARTIAL_FLUSH`` as
    OpenSSH does.  Most frames are tiny (In/Out names, short results, cell text: 1062 of 1117
    packets below 256 B), and there the flush is what costs: brotli ends each flush with a
    meta-block header and byte alignment (17.8 B per agent → kernel frame below 200 B at
    quality 5, 17.0 B at quality 11, which also takes ~0.6 ms per call), a deflate partial
    flush with a static-Huffman block and 10 bits (11.7 B).  Everything through brotli: ratio
    0.875; SMALL_LIMIT 128–256: 0.782; 64: 0.791; 512: 0.789 (figures from before the filter).
``MEDIUM`` (``SMALL_LIMIT`` up to ``BULK_FROM``): the decimal-number delta filter (delta.py),
    then brotli, quality ``MEDIUM_QUALITY``, 4 MiB window: results such as tables, TeX and SVG,
    where brotli beats zlib, and the filter first beats both: the ten plots above 8 kB take
    28.5 kB through brotli alone, 18.6 kB with the filter (a plot's entropy is its
    coordinates, which the filter turns into small differences, for ~2 ms each way on a 37 kB
    plot).  The quality is the encoder's choice alone (the decoder does not care): a trade
    between bytes and latency.  Session ratio and the slowest frame's compression, filter
    included: quality 6: 0.655 (3 ms), 10: 0.600 (11 ms), 11: 0.577 (26–60 ms for a 37 kB
    plot); without the filter 0.798, 0.737, 0.690.  From quality 6 to 11 the session saves
    5.4 kB for ~0.24 s more CPU, worth it only on links slower than about 0.2 Mbit/s, and a
    plot's result waits for it; so quality 6 is the default and 11 the "brotli-max"
    preference for slow or metered networks.
``BULK`` (payloads from ``BULK_FROM`` on, sent in ``CHUNK``-sized frames): brotli quality 1
    (~150 MB/s, ~2.5:1 on CSV text; zlib level 1: ~80 MB/s, ~2.3:1), used only when the network
    is the bottleneck (``BulkPolicy``): on loopback or a fast LAN the chunks go uncompressed,
    since no compressor keeps up with memory speed (quality 5: 3–15 MB/s on that CSV here).

With codec ``zlib`` (hosts without brotli) every context is zlib (level 9, bulk level 1);
``none`` compresses nothing.  Frames below ``MIN_COMPRESS_SIZE`` and frames that sample as
incompressible skip compression (their context does not see them).

Decoding is bounded: a context never yields more than the caller's limit (the frame limit, or
what remains of a chunked payload), so a small frame cannot inflate into a memory bomb; a
MEDIUM frame's filtered form may take up to ``delta.bound`` of it on the way.
"""

from __future__ import annotations

import zlib
from typing import Any

from . import delta

try:
    import brotli
except ImportError:  # the agent must run on hosts without brotli
    brotli = None

if brotli is not None:
    try:  # brotli < 1.2 cannot bound a decompression's output: a bomb could exhaust memory
        brotli.Decompressor().process(b"", output_buffer_limit=1)
    except TypeError:
        brotli = None

CODEC_PREFERENCE = ("brotli", "zlib", "none")

# Stream identifiers, as frames.py writes them on the wire.
SMALL = 1
MEDIUM = 2
BULK = 3

#: Frames shorter than this are sent as they are.  Acknowledgements (RKAck[n], 13–16 B, one
#: per cell each way) are above it: through the SMALL context they cost 7–9 B instead
#: (kernel → agent wire bytes of the benchmark's session: 0.80 × ssh -C, 1.09 with limit 20).
MIN_COMPRESS_SIZE = 12
#: Frames from MIN_COMPRESS_SIZE up to this go through the SMALL context.
SMALL_LIMIT = 256
#: Payloads from this size on are split into chunks and go through the BULK context (or not).
BULK_FROM = 256 * 1024
#: Chunk size of bulk payloads: small enough that other frames interleave quickly and that the
#: adaptive policy reacts within a few chunks, large enough that the per-chunk cost is nil.
CHUNK = 256 * 1024
#: Frames at least this long are sampled first; incompressible ones are sent uncompressed.
SAMPLE_FROM_SIZE = 16384
_SAMPLE_CHUNK = 2048

MEDIUM_QUALITY = 6
#: MEDIUM quality of the "brotli-max" preference, for slow or metered networks: 0.577 × ssh -C
#: instead of 0.655 on the benchmark's session, for ~0.6 ms more per MEDIUM frame on average
#: and up to ~25–60 ms for a large SVG plot (the encoder's choice alone, see ``MEDIUM``).
MAX_QUALITY = 11
BROTLI_WINDOW = 22
BULK_QUALITY = 1
ZLIB_LEVEL = 9
ZLIB_BULK_LEVEL = 1


class CompressionError(ValueError):
    """The peer sent a compressed payload that does not decode within its limit."""


def available_codecs() -> list[str]:
    """Codecs this process can speak, best first."""
    return [c for c in CODEC_PREFERENCE if c != "brotli" or brotli is not None]


#: What a kernelspec's ``compression`` may say (``split_preference`` reads it).
PREFERENCES = ("brotli", "brotli-max", "zlib", "none")


def split_preference(preference: str) -> tuple[str, int | None]:
    """A configured compression ("brotli", "brotli-max", "zlib", "none") as (codec, MEDIUM
    quality or None for the default)."""
    if preference == "brotli-max":
        return "brotli", MAX_QUALITY
    return preference, None


def choose_codec(preferred: str, offered: list[str]) -> str:
    """The codec both sides speak: ``preferred`` if the peer offers it, else the best common."""
    mine = available_codecs()
    if preferred in mine and preferred in offered:
        return preferred
    for codec in mine:
        if codec in offered:
            return codec
    return "none"


def sample_ratio(data: bytes | memoryview) -> float:
    """Compressed/raw size of three 2 KiB samples at zlib level 1 (≈ 20 µs)."""
    n = len(data)
    mid = n // 2
    sample = b"".join(bytes(data[a : a + _SAMPLE_CHUNK]) for a in (0, mid, n - _SAMPLE_CHUNK))
    return len(zlib.compress(sample, 1)) / len(sample)


def looks_incompressible(data: bytes | memoryview) -> bool:
    """Cheap estimate on three samples, so that random or already-compressed data
    (PNG, ByteArray of noise) skips the stream instead of costing compression time."""
    return len(data) >= SAMPLE_FROM_SIZE and sample_ratio(data) > 0.9


def _stream_params(codec: str, stream: int, medium_quality: int | None = None
                   ) -> tuple[str, int]:
    if codec == "brotli":
        return {SMALL: ("zlib", ZLIB_LEVEL), MEDIUM: ("brotli", medium_quality or MEDIUM_QUALITY),
                BULK: ("brotli", BULK_QUALITY)}[stream]
    if codec == "zlib":
        return "zlib", ZLIB_BULK_LEVEL if stream == BULK else ZLIB_LEVEL
    raise ValueError(f"unknown codec {codec!r}")


class StreamCompressor:
    """Compresses successive payloads through one context; ``compress`` flushes each.
    ``medium_quality`` overrides MEDIUM_QUALITY for a brotli MEDIUM context.  A MEDIUM
    context's payloads go through the decimal-number delta filter first (delta.py)."""

    def __init__(self, codec: str, stream: int = MEDIUM, medium_quality: int | None = None
                 ) -> None:
        self.codec = codec
        self.filtered = stream == MEDIUM
        self.algorithm, level = _stream_params(codec, stream, medium_quality)
        if self.algorithm == "brotli":
            self._brotli = brotli.Compressor(quality=level, lgwin=BROTLI_WINDOW)
        else:
            self._zlib = zlib.compressobj(level, zlib.DEFLATED, -15, 9)

    def compress(self, payload: bytes | memoryview) -> bytes:
        if self.filtered:
            payload = delta.encode(payload)
        if self.algorithm == "brotli":
            return self._brotli.process(payload) + self._brotli.flush()
        # Z_PARTIAL_FLUSH: everything so far becomes decodable, without the 4-byte marker of
        # Z_SYNC_FLUSH; up to 7 bits of the closing empty block travel with the next frame.
        return self._zlib.compress(payload) + self._zlib.flush(zlib.Z_PARTIAL_FLUSH)


class StreamDecompressor:
    """Inverse of StreamCompressor; refuses output beyond the caller's limit."""

    def __init__(self, codec: str, stream: int = MEDIUM) -> None:
        self.codec = codec
        if codec not in ("brotli", "zlib"):
            raise ValueError(f"unknown codec {codec!r}")
        self.filtered = stream == MEDIUM
        self.algorithm, _ = _stream_params(codec, stream)
        if self.algorithm == "brotli":
            if brotli is None:
                raise ValueError("brotli is not installed")
            self._brotli = brotli.Decompressor()
        else:
            self._zlib = zlib.decompressobj(-15)

    def decompress(self, data: bytes | memoryview, limit: int) -> bytes:
        """All the output of one compressed frame, which must be at most ``limit`` bytes."""
        if self.filtered:
            try:
                return delta.decode(self._inflate(data, delta.bound(limit)), limit)
            except delta.DeltaError as exc:
                raise CompressionError(str(exc)) from None
        return self._inflate(data, limit)

    def _inflate(self, data: bytes | memoryview, limit: int) -> bytes:
        try:
            if self.algorithm == "brotli":
                out = self._drain_brotli(data, limit)
            else:
                out = self._zlib.decompress(data, limit + 1)
                if self._zlib.eof:
                    raise CompressionError("corrupt compressed frame: the stream ended")
        except (zlib.error, getattr(brotli, "error", zlib.error)) as exc:
            raise CompressionError(f"corrupt compressed frame: {exc}") from None
        if len(out) > limit:
            raise CompressionError(f"compressed frame decodes to more than {limit} bytes")
        return out

    def _drain_brotli(self, data: bytes | memoryview, limit: int) -> bytes:
        """brotli 1.2 hands out a frame's output in pieces (about 32 KiB per call), the rest
        only through further calls with empty input (google/brotli#1396): collect them,
        never more than the limit plus one byte, which reveals an oversized frame."""
        chunks = [self._brotli.process(data, output_buffer_limit=limit + 1)]
        got = len(chunks[0])
        while got <= limit:
            more = self._brotli.process(b"", output_buffer_limit=limit + 1 - got)
            if not more:
                break
            chunks.append(more)
            got += len(more)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class BulkPolicy:
    """Decides, chunk by chunk, whether compressing a bulk payload pays, from the path's
    throughput measured end to end.

    Sending a payload raw goes at the path's rate B (wire bytes/s); compressed, at
    min(C, B/r) raw bytes/s (C: the compressor's raw bytes/s, r: compressed/raw, both
    measured here).  So compression pays exactly when C > B.  B is measured from the
    receiver's acknowledgements (``acked``: the bulk wire bytes it has received so far, sent
    as chunks arrive), never from local sends: between the agent and a slow network sit the
    loopback socket buffers, sshd's channel buffer and the SSH window, several MB that swallow
    a payload without blocking.

    - Until B is measured, a remote path is assumed slow (compress): the first megabytes of a
      payload are in flight before the first acknowledgement could say otherwise, and on a
      slow path those are what matters.  ``path`` "local" never compresses bulk.
    - While compressing, acknowledgements arriving slower than the compressor's output
      (A < SATURATED × C·r) mean the network is the bottleneck: B = A.  Arriving as fast
      mean the compressor is: B ≥ A is unknown, so the next chunks go raw to measure it.
    - While sending raw, the sender is never the bottleneck: B = A.
    Estimates are exponential moving averages that persist across payloads (they describe the
    link); a path that slows down mid-payload is seen within a few acknowledgements.

    ``mode``: ``"adaptive"`` (the default), ``"always"`` (compress every compressible chunk) or
    ``"never"``.
    """

    ALPHA = 0.5
    #: Acknowledgements arriving at least this fraction of the compressor's output rate mean
    #: the compressor, not the path, limits the transfer.
    SATURATED = 0.8
    #: Compress only when the compressor beats the path by this factor (no flapping at par).
    MARGIN = 1.1
    #: Acknowledgements closer together than this (seconds) are merged into one rate sample.
    MIN_SAMPLE = 0.01
    #: Rate samples taken raw when measuring the path behind a saturated compressor (the
    #: first may still carry compressed chunks that were in flight).
    PROBE_SAMPLES = 3

    def __init__(self, mode: str = "adaptive", path: str = "remote") -> None:
        if mode not in ("adaptive", "always", "never"):
            raise ValueError(f"unknown bulk compression mode {mode!r}")
        if path not in ("local", "remote"):
            raise ValueError(f"unknown path {path!r}")
        self.mode = "never" if path == "local" else mode
        self.path = path
        self.path_Bps: float | None = None  # wire bytes/s the path delivers, as acknowledged
        self.compress_Bps = 50e6  # raw bytes/s; pessimistic until measured (brotli q1 ~150)
        self.ratio = 0.5
        self.compressing = True  # what the last compressible chunk was sent as
        self._probe = 0  # samples still to take raw: the compressor was the bottleneck
        self._incompressible = False  # the last sample's verdict
        self._last_ack: tuple[float, int] | None = None  # (time, bytes) of the last sample

    def should_compress(self, chunk: bytes | memoryview) -> bool:
        if self.mode == "never":
            return False
        if len(chunk) >= SAMPLE_FROM_SIZE:  # else: a payload's tail, like the chunk before
            self._incompressible = sample_ratio(chunk) > 0.9
        if self._incompressible:
            return False
        if self.mode == "adaptive":
            if self._probe:
                self.compressing = False
            elif self.path_Bps is not None:
                self.compressing = self.compress_Bps > self.MARGIN * self.path_Bps
        else:
            self.compressing = True
        return self.compressing

    def compressed(self, raw: int, out: int, seconds: float) -> None:
        if raw and seconds > 0:
            self.compress_Bps += self.ALPHA * (raw / seconds - self.compress_Bps)
        if raw:
            self.ratio += self.ALPHA * (min(out / raw, 1.0) - self.ratio)

    def acked(self, received: int, now: float) -> None:
        """The receiver has ``received`` bulk wire bytes in all (at ``now``, monotonic)."""
        last = self._last_ack
        if last is None or received < last[1]:
            self._last_ack = (now, received)
            return
        elapsed = now - last[0]
        if elapsed < self.MIN_SAMPLE:
            return
        self._last_ack = (now, received)
        rate = (received - last[1]) / elapsed
        if rate <= 0:
            return  # nothing arrived: an idle gap between payloads, not a path rate
        if self._probe:
            self._probe -= 1
            if self._probe == self.PROBE_SAMPLES - 1:
                return  # chunks compressed before the switch may still be arriving
            self.path_Bps = rate if self.path_Bps is None else max(self.path_Bps, rate)
            return
        if self.compressing and rate >= self.SATURATED * self.compress_Bps * self.ratio:
            # The compressor limits the transfer: how fast is the path itself?
            self._probe, self.path_Bps = self.PROBE_SAMPLES, None
            return
        if self.path_Bps is None or rate < self.path_Bps / 2:
            self.path_Bps = rate  # a path that slows down is believed at once
        else:
            self.path_Bps += self.ALPHA * (rate - self.path_Bps)

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "path": self.path,
                "path_MBps": round(self.path_Bps / 1e6, 3) if self.path_Bps else None,
                "compress_MBps": round(self.compress_Bps / 1e6, 1),
                "ratio": round(self.ratio, 3), "compressing": self.compressing}
