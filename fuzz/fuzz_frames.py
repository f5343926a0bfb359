#!/usr/bin/env python3
"""atheris harness: arbitrary bytes as the incoming byte stream of the frame layer.

Input layout: byte 0 picks the reader's codec (``CODECS[b % 3]``: none, zlib or brotli, as the
handshake would have agreed); the rest is what the peer sends.  It goes through a socketpair
into ``FrameReader.recv`` (headers, raw/SMALL/MEDIUM/BULK bodies through the codec's
``StreamDecompressor`` contexts, MANY frames, chunked payloads assembled in an ``mmap``, the WXF
payload decoder), frame after frame until the stream ends.  ``decode_header`` also gets the
stream's first bytes.

Property: only ``LinkError`` (``FrameError``, ``LinkClosed``, ``LinkTimeout``) leaves the
reader, as its docstring promises (a ``CompressionError`` or ``WXFError`` must arrive wrapped
in a ``FrameError``); after a ``FrameError`` every further ``recv`` raises ``LinkError``; and
no input takes longer than libFuzzer's ``-timeout``.  The frame limit is 1 MiB, as in
``tests/test_link_fuzz.py`` (with the 1 GiB default a 1 kB brotli bomb may legitimately
inflate to 1 GiB, which ``-rss_limit_mb`` would report as an out-of-memory crash).
"""

from __future__ import annotations

import contextlib
import socket
import threading

import harness  # fuzz/harness.py, beside this file
import numpy  # noqa: F401  (imported before instrumentation: wxf imports it lazily)

with harness.instrumented(__name__ == "__main__"):
    from rk_jupyter.link import compression, frames

CODECS = ("none", "zlib", "brotli")
MAX_FRAME = 1 << 20
#: The first byte of every frame is awaited at most this long (the peer has closed anyway).
RECV_TIMEOUT = 1.0
#: Streams longer than this are written from a thread (a socketpair buffers ~200 kB).
_INLINE_WRITE = 64 * 1024

#: The only exceptions the reader may raise on bad input.
OWN_ERRORS = (frames.LinkError,)

if "brotli" not in compression.available_codecs():
    raise SystemExit("fuzz_frames needs the brotli package (>= 1.2), as rk_jupyter does")


def _feed(sock: socket.socket, data: bytes) -> threading.Thread | None:
    """Send ``data`` and close the sending side, so that the reader sees the end."""
    if len(data) <= _INLINE_WRITE:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return None

    def write() -> None:
        with contextlib.suppress(OSError):  # the reader may give up and close first
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    codec = CODECS[data[0] % len(CODECS)]
    stream = data[1:]
    try:
        frames.decode_header(stream, MAX_FRAME)
    except frames.FrameError:
        pass
    peer, mine = socket.socketpair()
    writer = None
    try:
        writer = _feed(peer, stream)
        reader = frames.FrameReader(mine, codec, MAX_FRAME)
        try:
            while True:
                reader.recv(RECV_TIMEOUT)
        except frames.FrameError:
            try:
                got = reader.recv(RECV_TIMEOUT)
            except OWN_ERRORS:
                pass
            else:
                raise AssertionError(f"recv after a FrameError returned {got!r}") from None
        except OWN_ERRORS:
            pass
    finally:
        mine.close()
        if writer is not None:
            writer.join()
        peer.close()


if __name__ == "__main__":
    harness.fuzz(TestOneInput)
