#!/usr/bin/env python3
"""atheris harness: arbitrary bytes as what the peer sends during (and after) the handshake.

Input layout: byte 0 says what the rest is.  Its bit 0 picks the side under test: 0 is the
agent (``server_handshake``, fed what a kernel would send: PREAMBLE, Auth), 1 the kernel
(``client_handshake``, fed what an agent would send: PREAMBLE, Hello, Welcome), whose
preferred codec is ``CODECS[((b >> 1) & 0x3F) % 4]``.  Without bit 7 the rest of the input is
the peer's byte stream as is; with bit 7 ("structured") it is two WXF payloads (a 2-byte
little-endian length, the first payload, then the second), which the harness frames itself
(PREAMBLE, then each payload as a raw channel-0 frame): the fuzzer then mutates the messages'
contents without having to keep the frame lengths right (Auth and a first link frame for the
agent, Hello and Welcome for the kernel).

The peer's stream goes through a socketpair whose peer end then stops writing (it keeps
reading, so our side's answers never fail).  When the handshake succeeds, the bytes after it
go to a ``Link`` with the agreed codec, frame after frame, as in a real session.

Nonces are fixed (``handshake.os`` is replaced with a deterministic ``urandom``) and the token
is ``TOKEN``, so that a recorded handshake (``make_corpus.py``) stays valid and the fuzzer can
reach the paths after authentication; the HMAC itself is not under test.

Property: only ``LinkError`` (``HandshakeError``, ``FrameError``, ``LinkClosed``,
``LinkTimeout``) leaves the handshake and the link; what the agent's accept loop catches is
``LinkError`` and ``OSError`` (``agent/server.py``), and the harness gives no cause for an
``OSError``.  Every wait is bounded by ``TIMEOUT`` (1 s).
"""

from __future__ import annotations

import socket
import types

import harness  # fuzz/harness.py, beside this file
import numpy  # noqa: F401  (imported before instrumentation: wxf imports it lazily)

with harness.instrumented(__name__ == "__main__"):
    from rk_jupyter.link import handshake
    from rk_jupyter.link.connection import Link
    from rk_jupyter.link.frames import RAW, LinkError, encode_header

TOKEN = b"fuzz-token-0123456789abcdef"
NONCE = bytes(range(32))
#: The kernel's configured compression (``client_handshake``'s preference).
CODECS = ("brotli", "zlib", "none", "brotli-max")
TIMEOUT = 1.0
MAX_FRAME = 1 << 20
SERVER, CLIENT = 0, 1
STRUCTURED = 0x80

# Deterministic nonces for both sides (handshake.py uses os.urandom for nothing else).
handshake.os = types.SimpleNamespace(urandom=lambda n: NONCE[:n])

#: The only exceptions the handshake and the link may raise on bad input.
OWN_ERRORS = (LinkError,)

def peer_stream(data: bytes) -> bytes:
    """What the peer sends for input ``data`` (see the layout above)."""
    rest = data[1:]
    if not data[0] & STRUCTURED:
        return rest
    cut = 2 + int.from_bytes(rest[:2], "little")
    out = bytearray(handshake.PREAMBLE)
    for payload in (rest[2:cut], rest[cut:]):
        if payload:
            out += encode_header(RAW, 0, len(payload)) + payload
    return bytes(out)


def structured(side: int, codec: str, first: bytes, second: bytes) -> bytes:
    """The input whose peer stream is ``first`` and ``second`` framed (make_corpus.py)."""
    head = side | CODECS.index(codec) << 1 | STRUCTURED
    return bytes([head]) + len(first).to_bytes(2, "little") + first + second


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    side = data[0] & 1
    codec = CODECS[((data[0] >> 1) & 0x3F) % len(CODECS)]
    peer, mine = socket.socketpair()
    try:
        mine.settimeout(TIMEOUT)  # as Link.accept does: a send can never block for long
        peer.sendall(peer_stream(data))
        peer.shutdown(socket.SHUT_WR)
        try:
            if side == SERVER:
                negotiated = handshake.server_handshake(mine, TOKEN, TIMEOUT)
            else:
                negotiated = handshake.client_handshake(mine, TOKEN, codec, TIMEOUT)
            link = Link(mine, negotiated, MAX_FRAME)
            mine.settimeout(TIMEOUT)  # Link sets 60 s for sends
            while True:
                link.recv(TIMEOUT)
        except OWN_ERRORS:
            pass
    finally:
        mine.close()
        peer.close()


if __name__ == "__main__":
    harness.fuzz(TestOneInput)
