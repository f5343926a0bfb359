"""Frames, compression and the handshake, on real sockets and against a real agent process."""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from typing import Any

import pytest

from rk_jupyter.agent.server import HANDSHAKE_TIMEOUT
from rk_jupyter.link import compression, frames, handshake, wxf
from rk_jupyter.link.compression import (
    BULK,
    MAX_QUALITY,
    MEDIUM,
    SMALL,
    BulkPolicy,
    CompressionError,
    StreamCompressor,
    StreamDecompressor,
    available_codecs,
    choose_codec,
)
from rk_jupyter.link.connection import Link
from rk_jupyter.link.expr import Symbol
from rk_jupyter.link.frames import (
    CHUNK_FLAG,
    FIRST,
    LAST,
    MANY,
    RAW,
    FrameError,
    FrameReader,
    FrameWriter,
    LinkClosed,
    LinkError,
    LinkTimeout,
    decode_header,
    encode_header,
)
from rk_jupyter.link.handshake import (
    PREAMBLE,
    PROTOCOL_VERSION,
    HandshakeError,
    Negotiated,
    client_handshake,
    server_handshake,
)
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


CSV = "".join(f"{i},{i * 0.5},row{i % 7}\n" for i in range(60_000))  # 1.2 MB: chunked


def _send_in_thread(writer: FrameWriter, channel: int, message: object) -> threading.Thread:
    sender = threading.Thread(target=writer.send, args=(channel, message))
    sender.start()
    return sender


@pytest.mark.parametrize("codec", ["brotli", "zlib", "none"])
def test_frames_round_trip_and_count_bytes(codec: str) -> None:
    a, b = socket.socketpair()
    writer, reader = FrameWriter(a, codec, bulk="always"), FrameReader(b, codec)
    svg = {"svg": "<svg>" + "<path d='M0 0 L1 1'/>" * 200 + "</svg>"}
    messages = [packet("TextPacket", "hello " * 50), packet("RKPing", 1), svg,
                os.urandom(100_000),
                # larger than brotli 1.2 hands out in one call (google/brotli#1396), and
                # large enough to travel in chunks through the bulk context
                CSV]
    svg_wire = []
    for i, m in enumerate(messages * 3):
        before = writer.stats.wire_bytes
        sender = _send_in_thread(writer, i, m)
        assert reader.recv(5) == (i, m)
        sender.join(5)
        if m is svg:
            svg_wire.append(writer.stats.wire_bytes - before)
    assert writer.stats.packets == reader.stats.packets == 15
    assert writer.stats.frames == reader.stats.frames > 15  # the CSV went in chunks
    assert writer.stats.raw_bytes == reader.stats.raw_bytes
    assert writer.stats.wire_bytes == reader.stats.wire_bytes
    assert writer.stats.compressed_frames == reader.stats.compressed_frames
    if codec == "none":
        assert writer.stats.compressed_frames == 0
    else:
        assert writer.stats.wire_bytes < writer.stats.raw_bytes
        # every compressible frame went through a context: 2 per round, plus CSV chunks
        assert writer.stats.compressed_frames >= 9
        # the context keeps its dictionary: the repeated SVG costs far less the second time
        assert svg_wire[1] < svg_wire[0] / 2


@pytest.mark.parametrize("bulk", ["adaptive", "always"])
def test_tiny_and_random_frames_bypass_compression(bulk: str) -> None:
    a, b = socket.socketpair()
    writer, reader = FrameWriter(a, "brotli", bulk), FrameReader(b, "brotli")
    writer.send(1, Symbol("x"))  # 6 B of WXF: below MIN_COMPRESS_SIZE
    assert writer.stats.compressed_frames == 0
    assert reader.recv(5) == (1, Symbol("x"))
    for noise in (os.urandom(100_000), os.urandom(1 << 20)):  # one frame; chunks
        sender = _send_in_thread(writer, 1, noise)
        assert reader.recv(5) == (1, noise)
        sender.join(5)
    assert writer.stats.compressed_frames == 0


def test_small_and_medium_frames_use_two_contexts() -> None:
    """Small frames go through zlib with partial flushes, larger ones through brotli; each
    context keeps its own history, interleaved frames decode in order."""
    a, b = socket.socketpair()
    writer, reader = FrameWriter(a, "brotli"), FrameReader(b, "brotli")
    small = [packet("InputNamePacket", f"In[{i}]:= ") for i in range(1, 30)]
    medium = [packet("ReturnPacket", {"text/plain": "x^2 + " * (40 + i)}) for i in range(29)]
    wires = []
    for s, m in zip(small, medium, strict=True):
        for expr, stream in ((s, SMALL), (m, MEDIUM)):
            before = writer.stats.wire_bytes
            writer.send(1, expr)
            wires.append((stream, writer.stats.wire_bytes - before))
            header = decode_header(b.recv(4, socket.MSG_PEEK))
            assert header.body == stream and header.channel == 1
            assert reader.recv(5) == (1, expr)
    small_wires = [w for stream, w in wires if stream == SMALL]
    # an In[n] name after the first costs a few bytes, header included
    assert max(small_wires[5:]) <= 12 and small_wires[0] > max(small_wires[5:])
    assert writer.stats.compressed_frames == reader.stats.compressed_frames == 58


def test_header_is_compact_and_round_trips() -> None:
    assert len(encode_header(SMALL, 1, 12)) == 1
    assert len(encode_header(MEDIUM, 2, 300)) == 3
    assert len(encode_header(RAW, 0, 14)) == 1 and len(encode_header(RAW, 0, 15)) == 2
    cases = [(RAW, 0, 0, 0, None), (SMALL, 2, 14, 0, None), (MEDIUM, 3, 15, 0, None),
             (RAW, 65535, 1 << 30, MANY, None), (BULK, 7, 127, 0, None),
             (BULK, 1, 262144, CHUNK_FLAG | FIRST, 50_000_000),
             (RAW, 1, 128, CHUNK_FLAG | LAST | MANY, None), (SMALL, 4, 3, MANY, None)]
    for body, channel, length, flags, total in cases:
        data = encode_header(body, channel, length, flags, total)
        h = decode_header(data + b"rest")
        assert (h.body, h.channel, h.length, h.flags, h.total, h.size) == (
            body, channel, length, flags, total, len(data))


def test_codec_choice() -> None:
    assert choose_codec("zlib", ["brotli", "zlib", "none"]) == "zlib"
    assert choose_codec("brotli", ["zlib", "none"]) == "zlib"
    assert choose_codec("brotli", ["lz4"]) == "none"
    assert "zlib" in available_codecs() and "none" in available_codecs()


def _raw_frame(body: int, channel: int, data: bytes, flags: int = 0,
               total: int | None = None) -> bytes:
    return encode_header(body, channel, len(data), flags, total) + data


PING = wxf.dumps(packet("RKPing", 1))


@pytest.mark.parametrize(
    "data, message",
    [
        (bytes((0xC1, 0x40, 4)) + b"8:C\x01", "unknown flags"),
        (encode_header(RAW, 1, 1 << 31), "limit"),
        (encode_header(RAW, 1, 10, CHUNK_FLAG | FIRST, 1 << 31), "limit"),
        (_raw_frame(RAW, 1, b"8:C\x01", FIRST), "no chunk"),
        (bytes((0x0F,)) + b"\xff" * 6, "overlong"),
        (_raw_frame(RAW, 70_000, PING), "channel"),
        (_raw_frame(RAW, 1, b"garbage!"), "payload"),
        (_raw_frame(SMALL, 1, b"\xff\xfe\xfd"), "compressed"),
        (_raw_frame(MEDIUM, 1, b"\xff\xfe\xfd"), "compressed"),
        (_raw_frame(RAW, 1, PING, MANY), "MANY"),
        (_raw_frame(RAW, 1, PING, CHUNK_FLAG), "outside any chunked payload"),
        (_raw_frame(RAW, 1, PING, CHUNK_FLAG | FIRST | LAST, 100), "shorter than declared"),
        (_raw_frame(RAW, 1, PING, CHUNK_FLAG | FIRST | LAST, 5), "exceed"),
        (_raw_frame(RAW, 1, PING[:5], CHUNK_FLAG | FIRST, len(PING))
         + _raw_frame(RAW, 1, PING[5:], CHUNK_FLAG | FIRST, 9), "inside another"),
        (_raw_frame(RAW, 1, PING[:5], CHUNK_FLAG | FIRST, len(PING))
         + _raw_frame(RAW, 2, PING[5:], CHUNK_FLAG | LAST), "no payload in progress"),
    ],
)
def test_malformed_frames_raise_frame_error(data: bytes, message: str) -> None:
    a, b = socket.socketpair()
    a.sendall(data)
    reader = FrameReader(b, "brotli", max_frame=1 << 30)
    with pytest.raises(FrameError, match=message):
        reader.recv(5)
    with pytest.raises(LinkError, match="unusable"):  # the stream cannot be trusted any more
        reader.recv(5)


def test_compressed_frame_on_a_link_without_compression() -> None:
    a, b = socket.socketpair()
    a.sendall(_raw_frame(SMALL, 1, StreamCompressor("zlib", SMALL).compress(PING)))
    with pytest.raises(FrameError, match="without compression"):
        FrameReader(b, "none").recv(5)


def test_compression_bomb_is_refused() -> None:
    """A compressed body inflates no further than the frame limit, nor a chunk beyond the size
    its payload declared."""
    a, b = socket.socketpair()
    bomb = StreamCompressor("zlib", SMALL).compress(b"\x00" * 10_000_000)
    a.sendall(_raw_frame(SMALL, 1, bomb))
    with pytest.raises(FrameError, match="more than 1048576 bytes"):
        FrameReader(b, "zlib", max_frame=1 << 20).recv(5)
    a, b = socket.socketpair()
    bomb = StreamCompressor("brotli", BULK).compress(b"\x00" * 10_000_000)
    a.sendall(_raw_frame(BULK, 1, bomb, CHUNK_FLAG | FIRST | LAST, 100))
    with pytest.raises(FrameError, match="more than 100 bytes"):
        FrameReader(b, "brotli").recv(5)


def test_truncated_frame_is_link_closed() -> None:
    a, b = socket.socketpair()
    a.sendall(_raw_frame(RAW, 1, wxf.dumps("abc" * 10))[:-2])
    a.close()
    with pytest.raises(LinkClosed):
        FrameReader(b).recv(5)


def test_stall_in_the_middle_of_a_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "BODY_TIMEOUT", 0.2)
    a, b = socket.socketpair()
    reader = FrameReader(b)
    with pytest.raises(LinkTimeout, match="no data"):  # between frames: nothing lost
        reader.recv(0.05)
    a.sendall(_raw_frame(RAW, 1, wxf.dumps("abc" * 10))[:-2])
    with pytest.raises(LinkTimeout, match="stalled in the middle of a frame"):
        reader.recv(0.05)
    with pytest.raises(LinkError, match="unusable"):
        reader.recv(0.05)


def test_decompressor_streams_match_across_frames() -> None:
    """Each context is one stream for the whole link: a frame that repeats earlier traffic
    costs a fraction of its size (an identity or a per-frame compressor fails that), decodes
    exactly, and only in a decompressor that saw the frames before it."""
    block = bytes(97 + b % 26 for b in os.urandom(240))  # ~1.7:1 on its own, no digits
    for codec in ("brotli", "zlib"):
        for stream in (SMALL, MEDIUM, BULK):
            c, d = StreamCompressor(codec, stream), StreamDecompressor(codec, stream)
            sent = []
            for i in range(20):
                data = b"Out[%d]= %s TextPacket MessagePacket" % (i, block[: 200 + i])
                wire = c.compress(data)
                sent.append((data, wire))
                assert d.decompress(wire, len(data)) == data
                if i == 0:
                    assert len(wire) > len(data) // 2, "the first frame has no history"
                elif stream != BULK:  # brotli quality 1 matches within a (large) chunk only
                    assert len(wire) < len(data) // 4, (codec, stream, i, len(wire))
            data, wire = sent[5]
            try:
                alone = StreamDecompressor(codec, stream).decompress(wire, 2 * len(data))
            except CompressionError:
                alone = None
            assert alone != data, "a frame needs the frames before it"


def test_send_many_delivers_each_expression_in_order() -> None:
    a, b = socket.socketpair()
    writer, reader = FrameWriter(a, "brotli"), FrameReader(b, "brotli")
    cell_end = [packet("OutputNamePacket", "Out[3]= "), packet("ReturnPacket", {"text/plain": "6"}),
                packet("InputNamePacket", "In[4]:= ")]
    writer.send_many(1, cell_end)
    writer.send_many(1, [packet("RKPing", 1)])  # one expression: a plain frame
    writer.send_many(1, [])  # nothing at all
    assert writer.stats.frames == 2 and writer.stats.packets == 4
    assert [reader.recv(5) for _ in range(4)] == [(1, p) for p in cell_end] + [
        (1, packet("RKPing", 1))]
    assert reader.stats.packets == 4 and reader.stats.frames == 2
    one_by_one = FrameWriter(_SlowNetwork(1e12), "brotli")  # type: ignore[arg-type]
    for p in cell_end:
        one_by_one.send(1, p)
    together = FrameWriter(_SlowNetwork(1e12), "brotli")  # type: ignore[arg-type]
    together.send_many(1, cell_end)
    assert together.stats.wire_bytes < one_by_one.stats.wire_bytes
    # a large batch travels in chunks and still arrives expression by expression
    big = [b"\x01" * 200_000, "x" * 200_000, 7]
    sender = threading.Thread(target=writer.send_many, args=(2, big))
    sender.start()
    assert [reader.recv(5) for _ in range(3)] == [(2, x) for x in big]
    sender.join(5)


def test_other_frames_pass_between_the_chunks_of_a_large_payload() -> None:
    """A pong (or an interrupt's answer) does not wait behind a large result."""
    a, b = socket.socketpair()
    writer, reader = FrameWriter(a, "brotli"), FrameReader(b, "brotli")
    asked = []
    policy = writer.policy.should_compress

    def between_chunks(chunk: memoryview) -> bool:
        asked.append(len(chunk))
        if len(asked) == 2:  # the first chunk is out: another thread's frame may go now
            writer.send(0, packet("RKPong", 1))
        return policy(chunk)

    writer.policy.should_compress = between_chunks  # type: ignore[method-assign]
    big = packet("ReturnPacket", os.urandom(3 * compression.CHUNK))
    sender = _send_in_thread(writer, 1, big)
    assert reader.recv(5) == (0, packet("RKPong", 1))
    assert reader.recv(5) == (1, big)
    sender.join(5)
    assert len(asked) == 4


class _SlowNetwork:
    """A socket whose sends take as long as a ``rate`` B/s network needs for them."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.data: list[bytes] = []

    def sendall(self, data: bytes | memoryview) -> None:
        time.sleep(len(data) / self.rate)
        self.data.append(bytes(data))


def test_bulk_compression_follows_the_acknowledged_path_rate() -> None:
    """Over a real socket pair (a fast path): the first chunks of a remote link go compressed
    (a remote path is assumed slow until measured), the receiver's acknowledgements show the
    compressor is the bottleneck, and the rest goes raw.  A local link never compresses."""
    payload = CSV.encode() * 40  # ~20 MB of compressible text
    for path in ("remote", "local"):
        a, b = socket.socketpair()
        sender = Link(a, Negotiated("brotli", "test", 3, path=path), 1 << 30)
        receiver = Link(b, Negotiated("brotli", "test", 3, path=path), 1 << 30)
        done = threading.Event()

        def pump(link: Link = sender, done: threading.Event = done) -> None:
            while not done.is_set():  # the sender's reader: it takes the acknowledgements
                with contextlib.suppress(LinkTimeout):
                    link.recv(0.05)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        thread = _send_in_thread(sender._writer, 1, payload)  # noqa: SLF001
        assert receiver.recv(30) == (1, payload)
        thread.join(30)
        done.set()
        reader.join(5)
        stats, policy = sender.stats.sent, sender.bulk_policy
        if path == "local":
            assert stats.compressed_frames == 0 and policy.mode == "never"
        else:
            assert 0 < stats.compressed_frames < stats.frames // 2, (stats, policy.describe())
            assert policy.path_Bps is not None and not policy.compressing
        sender.close()
        receiver.close()


class _Clock:
    """A fake path: acknowledgements at a given rate of the wire bytes sent."""

    def __init__(self, policy: BulkPolicy) -> None:
        self.policy, self.now, self.received = policy, 100.0, 0

    def chunk(self, chunk: bytes, rate: float, ratio: float = 0.1) -> bool:
        """Send one chunk as the policy says; the path delivers it at ``rate`` bytes/s, a
        200 MB/s compressor compresses it to ``ratio``: whichever is slower sets the pace."""
        compress = self.policy.should_compress(chunk)
        wire = int(len(chunk) * ratio) if compress else len(chunk)
        work = len(chunk) / 200e6 if compress else 0.0
        if compress:
            self.policy.compressed(len(chunk), wire, work)
        self.now += max(wire / rate, work)
        self.received += wire
        self.policy.acked(self.received, self.now)
        return compress


def test_bulk_policy_decisions() -> None:
    text = CSV.encode()[: compression.CHUNK]
    noise = os.urandom(compression.CHUNK)
    # A slow path (2 Mbit/s): compressed from the first chunk on, and stays so.
    slow = _Clock(BulkPolicy())
    assert all(slow.chunk(text, 250e3) for _ in range(20))
    assert slow.policy.path_Bps == pytest.approx(250e3, rel=0.01)
    # A fast path (1 GB/s): the compressor (200 MB/s) is the bottleneck, so after a few
    # chunks it measures the path raw and sends raw.
    fast = _Clock(BulkPolicy())
    sent = [fast.chunk(text, 1e9) for _ in range(200)]
    assert sent[0] and not any(sent[20:]), sent
    assert fast.policy.path_Bps == pytest.approx(1e9, rel=0.01)
    # The path slows down mid-payload (to 5 MB/s): compression comes back within chunks.
    later = [fast.chunk(text, 5e6) for _ in range(10)]
    assert all(later[2:]), later
    # A slow compressor (2 MB/s) on a 5 MB/s path: not worth it.
    policy = BulkPolicy()
    policy.path_Bps = 5e6
    for _ in range(8):
        policy.compressed(len(text), len(text) // 3, len(text) / 2e6)
    assert not policy.should_compress(text)
    assert not BulkPolicy().should_compress(noise)  # incompressible: never
    assert not BulkPolicy(path="local").should_compress(text)
    assert BulkPolicy("always").should_compress(text)
    assert not BulkPolicy("always").should_compress(noise)
    assert not BulkPolicy("never").should_compress(text)
    with pytest.raises(ValueError):
        BulkPolicy("sometimes")


def test_large_payloads_are_sent_and_received_without_copies() -> None:
    """wxf._dump_parts references big binary data instead of copying it; the reader decodes
    chunked payloads in place from its mmap buffer."""
    data = os.urandom(300_000)
    parts = wxf._dump_parts(packet("ReturnPacket", data))
    assert len(parts) == 2 and parts[1].obj is data
    assert b"".join(parts) == wxf.dumps(packet("ReturnPacket", data))
    encoded = wxf.dumps([data, "tail"])
    buf = mmap.mmap(-1, len(encoded))
    buf[:] = encoded
    value = wxf._loads_buffer(buf)
    buf.close()
    assert value == [data, "tail"] and type(value[0]) is bytes


def test_handshake_does_not_swallow_the_first_frames() -> None:
    """The agent may send right after Welcome: those bytes belong to the Link's reader."""
    a, b = socket.socketpair()

    def agent() -> None:
        server_handshake(a, TOKEN, 5)
        FrameWriter(a, "zlib").send(0, packet("RKPing", "right after Welcome"))

    thread = threading.Thread(target=agent)
    thread.start()
    negotiated = client_handshake(b, TOKEN, "zlib", 5)
    thread.join(5)
    assert negotiated.codec == "zlib"
    assert FrameReader(b, "zlib").recv(5) == (0, packet("RKPing", "right after Welcome"))


def test_link_send_many_over_a_socket_pair() -> None:
    a, b = socket.socketpair()
    agent = Link(a, Negotiated("brotli", "test", 1), 1 << 30)
    kernel = Link(b, Negotiated("brotli", "test", 1), 1 << 30)
    agent.send_many(1, [packet("TextPacket", "a"), packet("TextPacket", "b")])
    assert [kernel.recv(5) for _ in range(2)] == [(1, packet("TextPacket", "a")),
                                                  (1, packet("TextPacket", "b"))]
    assert agent.bulk_policy.mode == "adaptive"
    agent.close()
    with pytest.raises(LinkError):
        agent.send_many(1, [1, 2])
    kernel.close()


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


@pytest.mark.parametrize("how", ["SIGTERM", "stop line"])
def test_agent_exits_cleanly_while_its_lifeline_is_open(how: str) -> None:
    """An agent ended by SIGTERM (or a ``stop`` line; the token came on stdin too) while its
    stdin stays open exits with status 0: its stdin watcher, blocked in a read, once held
    the buffered reader's lock and the interpreter's exit aborted ("Fatal Python error:
    _enter_buffered_busy", status -6)."""
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "rk_jupyter.agent", "--exit-on-stdin-eof", "--token-stdin",
         "--log-stderr"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(TOKEN + b"\n")
        proc.stdin.flush()
        info = json.loads(proc.stdout.readline().decode().split(" ", 1)[1])
        _still_serves(info["port"])  # the token line was read whole, and only it
        if how == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:
            proc.stdin.write(b"stop\n")
            proc.stdin.flush()
        status = proc.wait(20)
        err = proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.stdin.close()
    assert status == 0 and "Fatal Python error" not in err, (status, err[-2000:])


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
    deadline = time.monotonic() + 5  # the agent's thread logs just after sending the refusal
    while "refused link" not in (text := log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
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
    assert "99" in answer["refused"] and str(PROTOCOL_VERSION) in answer["refused"]
    assert _raw_client(port, protocol=PROTOCOL_VERSION)["codec"] == "none"


# Values that decode to numpy arrays (a PackedArray) cannot be compared: the handshake checks
# types first.  Found by the atheris run (fuzz/README.md), like the two tests below it.
ARRAY = wxf.NumericArray("Integer8", [3], b"\x00\x01\x02", packed=True)


def test_an_array_in_the_auth_is_refused_not_a_crash(agent) -> None:
    port, proc, log = agent
    answer = _raw_client(port, protocol=ARRAY)
    assert "protocol version mismatch" in answer["refused"]
    assert proc.poll() is None
    _still_serves(port)
    assert "broke the agent" not in log.read_text()


def _fake_agent(hello: dict, welcome: dict | None = None) -> int:
    """A listener that greets with ``hello`` and, given ``welcome``, answers the kernel's Auth
    with it plus a valid MAC (as an agent holding the token would)."""
    import hashlib
    import hmac

    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(PREAMBLE)
            FrameWriter(conn).send(0, hello)
            if welcome is not None:
                assert conn.recv(4, socket.MSG_WAITALL) == PREAMBLE
                _, auth = FrameReader(conn, readahead=False).recv(5)
                mac = hmac.new(TOKEN, b"rkj-agent" + auth["nonce"] + hello["nonce"],
                               hashlib.sha256).digest()
                FrameWriter(conn).send(0, {**welcome, "mac": mac})
            time.sleep(1)
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


HELLO = {"protocol": PROTOCOL_VERSION, "codecs": ["brotli", "zlib", "none"], "nonce": b"n" * 32,
         "agent": "0.1.0"}


def test_kernel_refuses_an_array_among_the_offered_codecs() -> None:
    port = _fake_agent({**HELLO, "codecs": ["brotli", ARRAY]})
    with pytest.raises(HandshakeError, match="malformed handshake message"):
        Link.connect("127.0.0.1", port, TOKEN, timeout=5)


@pytest.mark.parametrize("codec", ["non@", "zlib", ARRAY])
def test_kernel_refuses_a_welcome_with_another_codec(codec: Any) -> None:
    port = _fake_agent(HELLO, {"codec": codec})
    with pytest.raises(HandshakeError, match="answered with codec"):
        Link.connect("127.0.0.1", port, TOKEN, "brotli", timeout=5)


def test_a_peer_that_stalls_mid_frame_is_dropped_within_the_handshake_timeout(agent) -> None:
    """The frame layer allows 30 s for the rest of a begun frame; the handshake allows its own
    timeout (10 s in the agent) for everything."""
    port, proc, _ = agent
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    assert sock.recv(4, socket.MSG_WAITALL) == PREAMBLE
    FrameReader(sock, readahead=False).recv(5)
    started = time.monotonic()
    sock.sendall(PREAMBLE + b"\x7f")  # a header that announces a body, which never comes
    assert sock.recv(64) == b""  # the agent hangs up
    assert time.monotonic() - started < HANDSHAKE_TIMEOUT + 2
    sock.close()
    _still_serves(port)


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
    link.sock.sendall(_raw_frame(RAW, 0, b"8:\xee\xee\xee"))
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


def test_brotli_max_is_agreed_and_shrinks_what_the_agent_sends(agent) -> None:
    """"brotli-max" (for slow networks) is brotli with MEDIUM frames at MAX_QUALITY on both
    writers: the agent's echo of an SVG-like text comes back in fewer bytes.  The text has no
    decimal numbers: after the delta filter those leave quality little to find."""
    port, _, _ = agent
    text = "".join(f"<text id='label-{(i * 7919) % 613}' x='{i * 37 % 401}'>"
                   f"{'abcdefghij'[i % 10] * (i % 7)}</text>" for i in range(400))
    received = {}
    for codec in ("brotli", "brotli-max"):
        link = Link.connect("127.0.0.1", port, TOKEN, codec=codec)
        assert link.codec == codec
        assert link.negotiated.medium_quality == (MAX_QUALITY if codec == "brotli-max" else None)
        link.send(0, packet("RKPing", text))
        assert link.recv(5)[1] == packet("RKPong", text)
        received[codec] = link.stats.received.wire_bytes
        link.close()
    assert received["brotli-max"] < 0.95 * received["brotli"], received


def test_agent_ignores_a_medium_quality_out_of_range(monkeypatch) -> None:
    a, b = socket.socketpair()
    agreed = {}
    thread = threading.Thread(target=lambda: agreed.update(agent=server_handshake(a, TOKEN, 5)))
    thread.start()
    monkeypatch.setattr(handshake, "split_preference", lambda codec: ("brotli", 99))
    client_handshake(b, TOKEN, "brotli", 5)
    thread.join(5)
    assert agreed["agent"].codec == "brotli" and agreed["agent"].medium_quality is None


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
        assert Link.connect("127.0.0.1", info["port"], TOKEN, codec="brotli-max").codec == "zlib"
        link = Link.connect("127.0.0.1", info["port"], TOKEN, codec="brotli")
        assert link.codec == "zlib"
        link.send(0, packet("RKPing", "x" * 500))
        assert link.recv(5)[1] == packet("RKPong", "x" * 500)
        link.close()
    finally:
        proc.stdin.close()
        proc.wait(10)
    assert zlib  # the fallback codec is the standard library's


# -- the session's reliable delivery (link/outbox.py), as both ends use it -------------------


def test_outbox_keeps_what_is_unacknowledged_and_resends_it() -> None:
    from rk_jupyter.link.outbox import Outbox

    box = Outbox()
    pkts = [packet("TextPacket", str(i)) for i in range(1, 6)]
    for p in pkts:
        assert box.record(p)
    assert box.sent == 5 and box.acknowledged() == 0
    assert box.take(packet("RKAck", 2)) is True  # an ack is the outbox's, and not counted
    assert box.received == 0 and box.acknowledged() == 2
    assert box.resend() == pkts[2:]
    assert box.resend(seen=4) == pkts[4:], "the peer said on attach it has four"
    assert box.take(packet("RKAck", 1)) is True and box.resend() == pkts[4:], "never back"
    assert box.take(packet("RKAck", "x")) is True and box.resend() == pkts[4:]
    assert box.take(packet("TextPacket", "in")) is False and box.received == 1
    assert box.ack() == packet("RKAck", 1)
    box.catch_up(7)  # attaching where another client took the first seven
    assert box.ack() == packet("RKAck", 7)
    box.acknowledge(5)
    assert box.resend() == [] and box.acknowledged() == 5


def test_outbox_with_a_limit_forgets_the_oldest_and_says_so() -> None:
    from rk_jupyter.link.outbox import Outbox

    box = Outbox(limit=2)
    assert box.record("a") and box.record("b")
    assert box.record("c") is False
    assert box.resend() == ["b", "c"] and box.acknowledged() == 1


def test_outbox_with_a_byte_bound_keeps_the_newest_output_and_counts_what_it_forgot() -> None:
    """A persistent session's kernel may be away for hours: what it keeps is the last
    ``max_bytes`` of output, newest first, and the attach can say how much was forgotten."""
    from rk_jupyter.link.outbox import Outbox, size_of

    box = Outbox(max_bytes=1000)
    pkts = [packet("TextPacket", f"{i:03d}" + "x" * 297) for i in range(10)]
    assert size_of(pkts[0]) == 8 + 300
    kept = [box.record(p) for p in pkts]
    assert kept[:3] == [True] * 3 and not any(kept[3:])
    assert box.resend() == pkts[7:] and box.forgotten == 7 and box.acknowledged() == 7
    box.acknowledge(9)  # what is acknowledged no longer counts against the bound
    assert box.record(packet("TextPacket", "y" * 600)) and box.forgotten == 7
    assert size_of({"text/plain": "ab", "image/png": b"123"}) == 10 + 2 + 9 + 3
    big = Outbox(max_bytes=10)
    assert big.record(packet("TextPacket", "z" * 100)), "the newest is always kept"


def test_rkerror_codes_and_their_absence() -> None:
    from rk_jupyter.link.packets import GENERIC_ERROR, NO_SESSION_ERROR, error_code, error_packet

    pkt = error_packet("the agent has no session 'x'", NO_SESSION_ERROR)
    assert packet_name(pkt) == "RKError" and error_code(pkt) == NO_SESSION_ERROR
    assert error_code(packet("RKError", "from an agent before codes")) == GENERIC_ERROR
    assert wxf.loads(wxf.dumps(pkt)) == pkt
