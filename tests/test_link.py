"""Frames, compression and the handshake, on real sockets and against a real agent process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import zlib

import pytest

from rk_jupyter.link import wxf
from rk_jupyter.link.compression import (
    StreamCompressor,
    StreamDecompressor,
    available_codecs,
    choose_codec,
)
from rk_jupyter.link.connection import Link
from rk_jupyter.link.frames import HEADER, FrameError, FrameReader, FrameWriter, LinkClosed
from rk_jupyter.link.handshake import PREAMBLE, HandshakeError
from rk_jupyter.link.packets import PACKET_CODES, packet, packet_name

TOKEN = b"test-token-0123456789abcdef"


def test_packet_codes_are_wstp_codes() -> None:
    expected = {"InputNamePacket": 8, "OutputNamePacket": 9, "TextPacket": 2, "MessagePacket": 5,
                "ReturnPacket": 3, "ReturnTextPacket": 4, "EvaluatePacket": 13,
                "EnterTextPacket": 14, "InputPacket": 1, "InputStringPacket": 21,
                "MenuPacket": 6, "SyntaxPacket": 10}
    assert {k: PACKET_CODES[k] for k in expected} == expected
    with pytest.raises(ValueError):
        packet("NoSuchPacket")


@pytest.mark.parametrize("codec", ["brotli", "zlib", "none"])
def test_frames_round_trip_and_count_bytes(codec: str) -> None:
    a, b = socket.socketpair()
    writer, reader = FrameWriter(a, codec), FrameReader(b, codec)
    messages = [packet("TextPacket", "hello " * 50), packet("RKPing", 1),
                {"svg": "<svg>" + "<path d='M0 0 L1 1'/>" * 200 + "</svg>"},
                os.urandom(100_000),
                # larger than brotli 1.2 hands out in one call (google/brotli#1396)
                "".join(f"{i},{i * 0.5},row{i % 7}\n" for i in range(60_000))]
    for i, m in enumerate(messages * 3):
        sender = threading.Thread(target=writer.send, args=(i, m))
        sender.start()
        assert reader.recv(5) == (i, m)
        sender.join(5)
    assert writer.stats.packets == reader.stats.packets == 15
    assert writer.stats.raw_bytes == reader.stats.raw_bytes
    assert writer.stats.wire_bytes == reader.stats.wire_bytes
    if codec == "none":
        assert writer.stats.compressed_frames == 0
    else:
        assert writer.stats.wire_bytes < writer.stats.raw_bytes
        # the stream keeps its dictionary: the repeated SVG costs far less the second time
        assert writer.stats.compressed_frames >= 9


def test_tiny_and_random_frames_bypass_compression() -> None:
    a, b = socket.socketpair()
    writer, reader = FrameWriter(a, "brotli"), FrameReader(b, "brotli")
    writer.send(1, packet("RKPing", 7))
    assert writer.stats.compressed_frames == 0
    assert reader.recv(5) == (1, packet("RKPing", 7))
    noise = os.urandom(1 << 20)
    sender = threading.Thread(target=writer.send, args=(1, noise))
    sender.start()
    assert reader.recv(5) == (1, noise)
    sender.join(5)
    assert writer.stats.compressed_frames == 0


def test_codec_choice() -> None:
    assert choose_codec("zlib", ["brotli", "zlib", "none"]) == "zlib"
    assert choose_codec("brotli", ["zlib", "none"]) == "zlib"
    assert choose_codec("brotli", ["lz4"]) == "none"
    assert "zlib" in available_codecs() and "none" in available_codecs()


def _raw_frame(flags: int, channel: int, body: bytes, raw_len: int | None = None) -> bytes:
    return HEADER.pack(flags, channel, len(body), len(body) if raw_len is None else raw_len) + body


@pytest.mark.parametrize(
    "data, message",
    [
        (_raw_frame(0x80, 1, b"8:C\x01"), "unknown flags"),
        (HEADER.pack(0, 1, 1 << 31, 1 << 31), "limit"),
        (_raw_frame(0, 1, b"8:C\x01", raw_len=99), "two different lengths"),
        (_raw_frame(0, 1, b"garbage!"), "payload"),
        (_raw_frame(1, 1, b"\xff\xfe\xfd", raw_len=10), "compressed"),
    ],
)
def test_malformed_frames_raise_frame_error(data: bytes, message: str) -> None:
    a, b = socket.socketpair()
    a.sendall(data)
    with pytest.raises(FrameError, match=message):
        FrameReader(b, "brotli", max_frame=1 << 30).recv(5)


def test_compression_bomb_is_refused() -> None:
    compressor = StreamCompressor("zlib")
    body = compressor.compress(b"\x00" * 10_000_000)
    a, b = socket.socketpair()
    a.sendall(_raw_frame(1, 1, body, raw_len=100))
    with pytest.raises(FrameError, match="declared 100"):
        FrameReader(b, "zlib").recv(5)


def test_truncated_frame_is_link_closed() -> None:
    a, b = socket.socketpair()
    a.sendall(_raw_frame(0, 1, wxf.dumps("abc"))[:-2])
    a.close()
    with pytest.raises(LinkClosed):
        FrameReader(b).recv(5)


def test_decompressor_streams_match_across_frames() -> None:
    for codec in ("brotli", "zlib"):
        c, d = StreamCompressor(codec), StreamDecompressor(codec)
        for i in range(20):
            data = f"Out[{i}]= {'x' * i} TextPacket MessagePacket".encode()
            assert d.decompress(c.compress(data), len(data)) == data


# -- against a real agent process -------------------------------------------------------------


@pytest.fixture()
def agent(tmp_path):
    log = tmp_path / "agent.log"
    env = dict(os.environ, RK_AGENT_TOKEN=TOKEN.decode())
    proc = subprocess.Popen(
        [sys.executable, "-m", "rk_jupyter.agent", "--exit-on-stdin-eof", "--log-file", str(log)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
    )
    line = proc.stdout.readline().decode()
    assert line.startswith("RKJ-AGENT-READY ")
    info = json.loads(line.split(" ", 1)[1])
    yield info["port"], proc, log
    proc.stdin.close()
    proc.wait(10)


def _still_serves(port: int) -> None:
    link = Link.connect("127.0.0.1", port, TOKEN)
    link.send(0, packet("RKPing", 42))
    assert link.recv(5) == (0, packet("RKPong", 42))
    link.close()


def test_agent_listens_on_loopback_only(agent) -> None:
    port, proc, _ = agent
    out = subprocess.run(["ss", "-Htln", f"sport = :{port}"], capture_output=True, text=True,
                         check=True)
    assert [line.split()[3] for line in out.stdout.splitlines()] == [f"127.0.0.1:{port}"]
    env = dict(os.environ, RK_AGENT_TOKEN=TOKEN.decode())
    bad = subprocess.run([sys.executable, "-m", "rk_jupyter.agent", "--host", "0.0.0.0"],
                         env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "loopback only" in bad.stderr


def test_agent_refuses_missing_token() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RK_AGENT_TOKEN"}
    bad = subprocess.run([sys.executable, "-m", "rk_jupyter.agent"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "no token" in bad.stderr


def test_wrong_token_is_refused_and_not_logged(agent) -> None:
    port, _, log = agent
    wrong = b"not-the-token-at-all-000000"
    start = time.monotonic()
    with pytest.raises(HandshakeError, match="does not hold the token"):
        Link.connect("127.0.0.1", port, wrong)
    assert time.monotonic() - start < 2
    _still_serves(port)
    text = log.read_text()
    assert "refused link" in text
    assert TOKEN.decode() not in text and wrong.decode() not in text


def _raw_client(port: int, protocol: int, token: bytes = TOKEN) -> dict:
    import hashlib
    import hmac

    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert sock.recv(4, socket.MSG_WAITALL) == PREAMBLE
    _, hello = FrameReader(sock).recv(5)
    nonce = os.urandom(32)
    mac = hmac.new(token, b"rkj-kernel" + hello["nonce"] + nonce, hashlib.sha256).digest()
    sock.sendall(PREAMBLE)
    FrameWriter(sock).send(0, {"protocol": protocol, "codec": "none", "nonce": nonce, "mac": mac})
    _, answer = FrameReader(sock).recv(5)
    sock.close()
    return answer


def test_version_mismatch_is_named(agent) -> None:
    port, _, log = agent
    answer = _raw_client(port, protocol=99)
    assert "protocol version mismatch" in answer["refused"]
    assert "99" in answer["refused"] and "1" in answer["refused"]
    assert _raw_client(port, protocol=1)["codec"] == "none"


def test_kernel_refuses_a_port_that_is_not_an_agent() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def fake_ssh_banner() -> None:
        conn, _ = server.accept()
        conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        time.sleep(1)
        conn.close()

    threading.Thread(target=fake_ssh_banner, daemon=True).start()
    with pytest.raises(HandshakeError, match="not an rk_jupyter link"):
        Link.connect("127.0.0.1", port, TOKEN, timeout=5)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00" * 3, b"GET / HTTP/1.1\r\n\r\n", PREAMBLE + b"\xff" * 64, os.urandom(4096)],
)
def test_garbage_before_the_handshake_leaves_the_agent_serving(agent, garbage: bytes) -> None:
    port, proc, _ = agent
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(garbage)
    sock.close()
    assert proc.poll() is None
    _still_serves(port)


def test_garbage_frames_after_the_handshake_close_only_that_link(agent) -> None:
    port, proc, log = agent
    link = Link.connect("127.0.0.1", port, TOKEN)
    link.sock.sendall(_raw_frame(0, 0, b"8:\xee\xee\xee"))
    with pytest.raises(LinkClosed):
        link.recv(5)
    assert proc.poll() is None
    _still_serves(port)
    assert "malformed frame" in log.read_text()


def test_link_counts_both_directions(agent) -> None:
    port, _, _ = agent
    link = Link.connect("127.0.0.1", port, TOKEN, codec="zlib")
    assert link.codec == "zlib"
    for i in range(5):
        link.send(0, packet("RKPing", i))
        channel, pong = link.recv(5)
        assert packet_name(pong) == "RKPong"
    assert link.stats.sent.packets == link.stats.received.packets == 5
    assert link.stats.as_dict()["sent"]["raw_bytes"] > 0
    link.close()


def test_zlib_fallback_when_brotli_is_missing(tmp_path) -> None:
    """The agent runs on hosts without brotli: it then offers zlib, and the kernel takes it."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "brotli.py").write_text("raise ImportError('no brotli on this host')\n")
    env = dict(os.environ, RK_AGENT_TOKEN=TOKEN.decode(),
               PYTHONPATH=f"{shim}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen([sys.executable, "-m", "rk_jupyter.agent", "--exit-on-stdin-eof"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        info = json.loads(proc.stdout.readline().decode().split(" ", 1)[1])
        assert info["codecs"] == ["zlib", "none"]
        link = Link.connect("127.0.0.1", info["port"], TOKEN, codec="brotli")
        assert link.codec == "zlib"
        link.send(0, packet("RKPing", "x" * 500))
        assert link.recv(5)[1] == packet("RKPong", "x" * 500)
        link.close()
    finally:
        proc.stdin.close()
        proc.wait(10)
    assert zlib  # the fallback codec is the standard library's
