"""Streaming compression of frame payloads, one context per direction.

A single compressor lives for the whole link and is flushed after every frame, so each frame
is decodable on arrival while all earlier traffic serves as the dictionary: repeated packet
heads, symbol names and SVG boilerplate cost almost nothing after their first appearance.
brotli is preferred; zlib is the fallback on hosts without brotli; "none" is for debugging.
"""

from __future__ import annotations

import zlib

try:
    import brotli
except ImportError:  # the agent must run on hosts without brotli
    brotli = None

CODEC_PREFERENCE = ("brotli", "zlib", "none")

#: Frames shorter than this are sent as they are: control messages (RKPing, RKInterrupt: < 20 B)
#: skip the compressor.  Every packet with text goes through the stream, where its repeated
#: parts cost almost nothing: at 48, the In/Out names and short results (589 of 827 frames of
#: benchmarks/bench_link.py's workload) bypassed it and the session took 1.23x the bytes of
#: ssh -C; at 20, 1.01x, for about 13 us of CPU per small frame (both ends).
MIN_COMPRESS_SIZE = 20
#: Frames at least this long are sampled first; incompressible ones bypass the stream.
SAMPLE_FROM_SIZE = 16384
_SAMPLE_CHUNK = 2048

BROTLI_QUALITY = 5
BROTLI_WINDOW = 22
ZLIB_LEVEL = 6


class CompressionError(ValueError):
    """The peer sent a compressed payload that does not decode to its declared size."""


def available_codecs() -> list[str]:
    """Codecs this process can speak, best first."""
    return [c for c in CODEC_PREFERENCE if c != "brotli" or brotli is not None]


def choose_codec(preferred: str, offered: list[str]) -> str:
    """The codec both sides speak: ``preferred`` if the peer offers it, else the best common."""
    mine = available_codecs()
    if preferred in mine and preferred in offered:
        return preferred
    for codec in mine:
        if codec in offered:
            return codec
    return "none"


def looks_incompressible(data: bytes | memoryview) -> bool:
    """Cheap estimate on three samples, so that random or already-compressed data
    (PNG, ByteArray of noise) skips the stream instead of costing compression time."""
    n = len(data)
    if n < SAMPLE_FROM_SIZE:
        return False
    mid = n // 2
    sample = b"".join(
        bytes(data[a : a + _SAMPLE_CHUNK]) for a in (0, mid, n - _SAMPLE_CHUNK)
    )
    return len(zlib.compress(sample, 1)) > 0.9 * len(sample)


class StreamCompressor:
    """Compresses successive frame payloads through one context; ``compress`` flushes."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        if codec == "brotli":
            self._brotli = brotli.Compressor(quality=BROTLI_QUALITY, lgwin=BROTLI_WINDOW)
        elif codec == "zlib":
            self._zlib = zlib.compressobj(ZLIB_LEVEL, zlib.DEFLATED, -15)
        elif codec != "none":
            raise ValueError(f"unknown codec {codec!r}")

    def should_compress(self, payload: bytes | memoryview) -> bool:
        return (
            self.codec != "none"
            and len(payload) >= MIN_COMPRESS_SIZE
            and not looks_incompressible(payload)
        )

    def compress(self, payload: bytes | memoryview) -> bytes:
        if self.codec == "brotli":
            return self._brotli.process(payload) + self._brotli.flush()
        return self._zlib.compress(payload) + self._zlib.flush(zlib.Z_SYNC_FLUSH)


class StreamDecompressor:
    """Inverse of StreamCompressor; refuses output beyond the size the frame declared."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        if codec == "brotli":
            if brotli is None:
                raise ValueError("brotli is not installed")
            self._brotli = brotli.Decompressor()
        elif codec == "zlib":
            self._zlib = zlib.decompressobj(-15)
        elif codec != "none":
            raise ValueError(f"unknown codec {codec!r}")

    def decompress(self, data: bytes | memoryview, raw_size: int) -> bytes:
        try:
            if self.codec == "brotli":
                out = self._drain_brotli(data, raw_size)
                complete = self._brotli.can_accept_more_data()
            elif self.codec == "zlib":
                out = self._zlib.decompress(data, raw_size + 1)
                complete = not self._zlib.unconsumed_tail
            else:
                raise CompressionError("compressed frame on a link without compression")
        except (zlib.error, getattr(brotli, "error", zlib.error)) as exc:
            raise CompressionError(f"corrupt compressed frame: {exc}") from None
        if len(out) != raw_size or not complete:
            raise CompressionError(
                f"compressed frame decodes to {len(out)}{'+' if not complete else ''} bytes, "
                f"header declared {raw_size}"
            )
        return out

    def _drain_brotli(self, data: bytes | memoryview, raw_size: int) -> bytes:
        """brotli 1.2 hands out a frame's output in pieces (about 32 KiB per call), the rest
        only through further calls with empty input (google/brotli#1396): collect them,
        never more than the frame declared plus one byte, which reveals a lying header."""
        chunks = [self._brotli.process(data, output_buffer_limit=raw_size + 1)]
        got = len(chunks[0])
        while got <= raw_size:
            more = self._brotli.process(b"", output_buffer_limit=raw_size + 1 - got)
            if not more:
                break
            chunks.append(more)
            got += len(more)
        return b"".join(chunks)
