"""Hostile input against the frame decoder and the handshake: only the link's own errors,
never a crash or a hang, and an agent that keeps serving after every bad peer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rk_jupyter.link import wxf
from rk_jupyter.link.connection import Link
from rk_jupyter.link.frames import (
    CHUNK_FLAG,
    FIRST,
    LAST,
    RAW,
    FrameReader,
    FrameWriter,
    LinkError,
    encode_header,
)
from rk_jupyter.link.handshake import PREAMBLE, client_handshake
from rk_jupyter.link.packets import packet

TOKEN = b"fuzz-token-0123456789abcdef"
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_frames() -> bytes:
    """Frames of every kind: raw, both small/medium contexts, a MANY frame, a chunked payload
    (made by hand: the writer chunks only payloads of 256 KiB and more)."""
    a, b = socket.socketpair()
    writer = FrameWriter(a, "zlib")
    messages = [packet("TextPacket", "hello " * 20), {"k": [1, 2.5, "x"]}, b"\x00" * 99,
                packet("RKPing", 1), "medium " * 60]
    for i, m in enumerate(messages):
        writer.send(i, m)
    writer.send_many(5, [packet("TextPacket", "a"), packet("InputNamePacket", "In[2]:= ")])
    payload = wxf.dumps(["chunked", 1, 2.5])
    a.sendall(encode_header(RAW, 6, 7, CHUNK_FLAG | FIRST, len(payload)) + payload[:7]
              + encode_header(RAW, 6, len(payload) - 7, CHUNK_FLAG | LAST) + payload[7:])
    a.close()
    chunks = []
    while data := b.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


VALID = _valid_frames()


@FUZZ
@given(st.one_of(
    st.binary(max_size=2048),
    st.builds(lambda cut, junk: VALID[:cut] + junk,
              st.integers(0, len(VALID)), st.binary(max_size=64)),
    st.builds(lambda pos, byte: VALID[:pos] + bytes([byte]) + VALID[pos + 1:],
              st.integers(0, len(VALID) - 1), st.integers(0, 255)),
))
def test_frame_reader_raises_only_link_errors(data: bytes) -> None:
    a, b = socket.socketpair()
    a.sendall(data)
    a.close()
    reader = FrameReader(b, "zlib", max_frame=1 << 20)
    try:
        while True:
            reader.recv(2)
    except LinkError:
        pass
    finally:
        b.close()


@FUZZ
@given(st.binary(max_size=512), st.booleans())
def test_client_handshake_against_garbage_raises_link_errors(data: bytes, preamble: bool) -> None:
    a, b = socket.socketpair()
    a.sendall((PREAMBLE if preamble else b"") + data)
    a.close()
    with pytest.raises(LinkError):
        client_handshake(b, TOKEN, timeout=2)
    b.close()


@pytest.fixture(scope="module")
def agent():
    env = dict(os.environ, RK_AGENT_TOKEN=TOKEN.decode())
    proc = subprocess.Popen([sys.executable, "-m", "rk_jupyter.agent", "--exit-on-stdin-eof",
                             "--log-level", "ERROR"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    info = json.loads(proc.stdout.readline().decode().split(" ", 1)[1])
    yield info["port"], proc
    proc.stdin.close()
    proc.wait(10)


def _serves(port: int) -> None:
    link = Link.connect("127.0.0.1", port, TOKEN, timeout=5)
    link.send(0, packet("RKPing", 1))
    assert link.recv(5) == (0, packet("RKPong", 1))
    link.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=1024), st.booleans())
def test_agent_survives_garbage_in_and_after_the_handshake(agent, junk: bytes,
                                                           authenticated: bool) -> None:
    port, proc = agent
    if authenticated:
        link = Link.connect("127.0.0.1", port, TOKEN, codec="brotli", timeout=5)
        link.sock.sendall(encode_header(RAW, 0, len(junk)) + junk)
        closer = threading.Timer(3, link.close)
        closer.start()
        try:
            while True:
                link.recv(3)
        except LinkError:
            pass
        finally:
            closer.cancel()
            link.close()
    else:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(PREAMBLE + junk)
        sock.close()
    assert proc.poll() is None
    _serves(port)


def test_wxf_payload_inside_a_valid_frame_cannot_inflate_past_the_frame_limit() -> None:
    bomb = wxf.dumps(b"\x00" * (4 << 20), compress=True)
    a, b = socket.socketpair()
    a.sendall(encode_header(RAW, 1, len(bomb)) + bomb)
    with pytest.raises(LinkError, match="payload"):
        FrameReader(b, "none", max_frame=1 << 20).recv(5)
