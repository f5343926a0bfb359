"""Write seed corpora of valid inputs into ``fuzz/corpus/<target>/`` (wxf, frames, handshake,
delta).

* wxf: ``wxf.dumps`` of varied expressions (every scalar type, big integers, BigReal, strings,
  ByteArray, lists, associations with RuleDelayed, functions with compound heads, packed and
  numeric arrays of every element type, packets), plain ``8:`` and compressed ``8C:``.
* frames: codec byte + streams from ``FrameWriter`` with that codec (raw, SMALL and MEDIUM
  contexts, MANY frames, channels beyond 2), plus chunked payloads (raw and BULK-compressed
  chunks) made by hand, since the writer chunks only payloads of 256 KiB and more.
* handshake: side byte + a real recorded exchange between ``client_handshake`` and
  ``server_handshake`` (through a recording relay, with the harness's fixed token and nonces),
  continued by a few frames each way in the agreed codec; and the same messages in the
  harness's structured form (WXF payloads that the harness frames itself).
* delta: filtered forms (``delta.encode``) of number-heavy texts (SVG polylines, tables of
  reals, negative zeros, leading zeros, long digit runs, the escape bytes) and the texts
  themselves.

Deterministic: the same files every time (named by content hash, as libFuzzer names its own).
Usage: ``python fuzz/make_corpus.py [--out fuzz/corpus]``.
"""

from __future__ import annotations

import argparse
import hashlib
import socket
import sys
import threading
from decimal import Decimal
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fuzz_frames  # noqa: E402
import fuzz_handshake  # noqa: E402

from rk_jupyter.link import compression, delta, wxf  # noqa: E402
from rk_jupyter.link.connection import Link  # noqa: E402
from rk_jupyter.link.expr import Function, Symbol  # noqa: E402
from rk_jupyter.link.frames import (  # noqa: E402
    CHUNK_FLAG,
    FIRST,
    LAST,
    MANY,
    RAW,
    FrameReader,
    FrameWriter,
    encode_header,
)
from rk_jupyter.link.packets import packet  # noqa: E402

#: Seeds stay below this size (run.py's -max_len values are at least this).
MAX_SEED = 16 * 1024


def wxf_values() -> list:
    s = Symbol
    arrays = [np.arange(n, dtype=dt).reshape(-1, 2) if n % 2 == 0 else np.arange(n, dtype=dt)
              for dt, n in (("int8", 4), ("int16", 3), ("int32", 6), ("int64", 5),
                            ("float32", 4), ("float64", 3), ("complex64", 2),
                            ("complex128", 3), ("uint8", 8), ("uint16", 2), ("uint32", 3),
                            ("uint64", 4))]
    values = [
        0, 1, -1, 127, -128, 128, 32767, -32769, 2**31, -(2**63), 2**63, -(2**200) + 7,
        10**400, 0.0, -2.5, 1e300, float("inf"), float("-inf"), float("nan"),
        Decimal("3.14159265358979323846264338327950288"), Decimal("-0.000"),
        Decimal("1.5E+40"), Decimal("-7E-30"), complex(1, -2), "", "x", "hello world",
        "ünïcödé ∀x∈ℝ 😀", "a" * 300, b"", b"\x00\xff" * 10, bytearray(b"ba"), True, False,
        None, [], [1, 2.5, "x", None], (1, (2, (3, (4, [5])))), [[[[]]]],
        {"a": 1, "b": [1, 2], 3: {"nested": True}}, {"k": wxf.Delayed(s("x"))}, {},
        {(1, 2): "tuple key"}, s("Pi"), s("Global`x"), s("$Aborted"),
        Function(s("Rational"), 1, 3), Function(s("Complex"), 1, 2),
        Function(Function(s("Derivative"), 1), s("f")), Function(s("f")),
        Function(s("Plus"), s("x"), Function(s("Times"), 2, s("y")), 1.5, "s", b"b"),
        wxf.NumericArray("Integer32", (2,), b"\x01\x00\x00\x00\x02\x00\x00\x00"),
        wxf.NumericArray("Real64", (1, 1), b"\x00" * 8, packed=True),
        packet("EnterTextPacket", "Integrate[x^2, x]"),
        packet("ReturnPacket", {"text/plain": "x^3/3", "text/html": "<b>x</b>"}),
        packet("MessagePacket", "Power", "infy", "Infinite expression 1/0 encountered."),
        packet("RKOpenSession", {"channel": 1, "engine": "mathics", "options": {},
                                 "session": "s1", "keep": 30}),
        packet("RKAttached", {"received": 3, "acknowledged": 2}),
        packet("RKPing", 1.25), packet("RKAck", 12),
        [Function(s("List"), 1, 2), Function(s("Association"), Function(s("Rule"), "a", 1))],
        *arrays,
        {"array": arrays[5], "more": [arrays[0], arrays[8]]},
    ]
    nested = 0
    for _ in range(40):
        nested = [nested]
    values.append(nested)
    return values


def wxf_seeds() -> list[bytes]:
    seeds = []
    for value in wxf_values():
        seeds.append(wxf.dumps(value))
        seeds.append(wxf.dumps(value, compress=True))
    # Hand-made tokens the encoder never writes: BigReal forms, a Real32 packed array.
    for raw in (b"1.5`20.", b"-0``12.", b"2.`*^-5", b"12.34`50.*^12", b"0.``3."):
        seeds.append(b"8:R" + bytes([len(raw)]) + raw)
    seeds.append(b"8:\xc1\x22\x01\x02" + np.array([1.5, -2], "<f4").tobytes())
    return seeds


def _frames(codec: str, send) -> bytes:
    """What a ``FrameWriter`` with ``codec`` sends for ``send(writer)`` (and hand-made bytes
    that ``send`` writes to the socket itself)."""
    a, b = socket.socketpair()
    writer = FrameWriter(a, codec, bulk="always")
    send(writer, a)
    a.close()
    chunks = []
    while data := b.recv(65536):
        chunks.append(data)
    b.close()
    return b"".join(chunks)


def _session(writer: FrameWriter, sock: socket.socket) -> None:
    writer.send(0, packet("RKPing", 1))
    writer.send(1, packet("EnterTextPacket", "Table[i^2, {i, 10}]"))
    writer.send(1, packet("TextPacket", "hello " * 20))  # SMALL context
    writer.send(1, packet("TextPacket", "hello " * 21))  # SMALL again: uses the dictionary
    writer.send(2, packet("ReturnPacket", {"text/plain": "medium " * 60}))  # MEDIUM
    writer.send(7, {"k": [1, 2.5, "x"]})  # channel beyond 2: varint channel
    writer.send(300, b"\x00" * 99)
    writer.send_many(1, [packet("OutputNamePacket", "Out[1]= "),
                         packet("ReturnPacket", {"text/plain": "{1, 4, 9}"}),
                         packet("InputNamePacket", "In[2]:= ")])


def _chunked(codec: str):
    def send(writer: FrameWriter, sock: socket.socket) -> None:
        payload = wxf.dumps(["chunked", list(range(40)), "z" * 200])
        cut = len(payload) // 3
        pieces = [payload[:cut], payload[cut: 2 * cut], payload[2 * cut:]]
        bulk = None if codec == "none" else compression.StreamCompressor(codec, compression.BULK)
        for i, piece in enumerate(pieces):
            flags = CHUNK_FLAG | (FIRST if i == 0 else 0) | (LAST if i == 2 else 0)
            body, kind = piece, RAW
            if bulk is not None and i != 1:  # raw and compressed chunks mixed
                body, kind = bulk.compress(piece), compression.BULK
            sock.sendall(encode_header(kind, 1, len(body), flags, len(payload)) + body)
        items = wxf.dumps([packet("TextPacket", "a"), packet("TextPacket", "b")])
        sock.sendall(encode_header(RAW, 3, len(items), CHUNK_FLAG | FIRST | LAST | MANY,
                                   len(items)) + items)
        writer.send(1, packet("RKPong", 2))

    return send


def frame_seeds() -> list[bytes]:
    seeds = []
    for index, codec in enumerate(fuzz_frames.CODECS):
        selector = bytes([index])
        seeds.append(selector + _frames(codec, _session))
        seeds.append(selector + _frames(codec, _chunked(codec)))
        seeds.append(selector + _frames(codec, lambda w, s: w.send(1, "medium " * 60)))
        seeds.append(selector + _frames(codec, lambda w, s: w.send(0, packet("RKPing", 1))))
    return seeds


def _relay(src: socket.socket, dst: socket.socket, record: list[bytes]) -> None:
    while data := src.recv(65536):
        record.append(data)
        dst.sendall(data)
    dst.shutdown(socket.SHUT_WR)


def record_handshake(codec: str) -> tuple[bytes, bytes]:
    """A real handshake and a few frames each way; returns (kernel→agent, agent→kernel)."""
    agent, agent_relay = socket.socketpair()
    kernel, kernel_relay = socket.socketpair()
    to_agent: list[bytes] = []
    to_kernel: list[bytes] = []
    relays = [threading.Thread(target=_relay, args=(kernel_relay, agent_relay, to_agent)),
              threading.Thread(target=_relay, args=(agent_relay, kernel_relay, to_kernel))]
    for t in relays:
        t.start()
    result = {}
    server = threading.Thread(target=lambda: result.update(
        agent=fuzz_handshake.handshake.server_handshake(agent, fuzz_handshake.TOKEN, 5)))
    server.start()
    client = fuzz_handshake.handshake.client_handshake(kernel, fuzz_handshake.TOKEN, codec, 5)
    server.join()
    agent_link = Link(agent, result["agent"], fuzz_handshake.MAX_FRAME)
    kernel_link = Link(kernel, client, fuzz_handshake.MAX_FRAME)
    kernel_link.send(0, packet("RKOpenSession", {"channel": 1, "engine": "mathics",
                                                  "options": {}, "session": "s", "keep": 0}))
    kernel_link.send(1, packet("EnterTextPacket", "Range[10]"))
    kernel_link.send(1, packet("TextPacket", "answer " * 40))
    agent_link.send(1, packet("RKSessionReady", {"engine": "mathics", "session": "s"}))
    agent_link.send_many(1, [packet("OutputNamePacket", "Out[1]= "),
                             packet("ReturnPacket", {"text/plain": "{1, 2, 3} " * 30})])
    for sock in (agent, kernel):
        sock.shutdown(socket.SHUT_WR)
    for t in relays:
        t.join(5)
    agent.close()
    kernel.close()
    return b"".join(to_agent), b"".join(to_kernel)


def _messages(stream: bytes, count: int) -> list[bytes]:
    """The WXF payloads of the first ``count`` (raw) frames after the preamble."""
    a, b = socket.socketpair()
    a.sendall(stream[len(fuzz_handshake.handshake.PREAMBLE):])
    a.close()
    reader = FrameReader(b, "none", fuzz_handshake.MAX_FRAME)
    payloads = [wxf.dumps(reader.recv(1)[1]) for _ in range(count)]
    b.close()
    return payloads


def handshake_seeds() -> list[bytes]:
    seeds = []
    for index, codec in enumerate(fuzz_handshake.CODECS):
        to_agent, to_kernel = record_handshake(codec)
        seeds.append(bytes([fuzz_handshake.SERVER | index << 1]) + to_agent)
        seeds.append(bytes([fuzz_handshake.CLIENT | index << 1]) + to_kernel)
        (auth,) = _messages(to_agent, 1)
        hello, welcome = _messages(to_kernel, 2)
        seeds.append(fuzz_handshake.structured(
            fuzz_handshake.SERVER, codec, auth, wxf.dumps(packet("RKPing", 1))))
        seeds.append(fuzz_handshake.structured(fuzz_handshake.CLIENT, codec, hello, welcome))
    return seeds


def delta_seeds() -> list[bytes]:
    points = " ".join(f"{18.181818 + 0.81 * i:.6f},{123.606798 - (i % 9) * 2.5:.6f}"
                      for i in range(120))
    texts = [
        f'<polyline points="{points}" style="stroke-width: 1.066667px" />'.encode(),
        ", ".join(f"{(-1) ** i * i / 7:.6g}" for i in range(200)).encode(),
        b"-0.0 -0.5 007.5 1.2.3 3.14159265358979323846 1234567890123456.5 \xfe\x01\xff",
        wxf.dumps(packet("ReturnPacket", {"text/plain": "{0.5, -1.25, 10.5}"})),
    ]
    return texts + [delta.encode(t) for t in texts]


TARGETS = {"wxf": wxf_seeds, "frames": frame_seeds, "handshake": handshake_seeds,
           "delta": delta_seeds}


def write(out: Path, targets: list[str]) -> dict[str, int]:
    counts = {}
    for target in targets:
        folder = out / target
        folder.mkdir(parents=True, exist_ok=True)
        seeds = [s for s in TARGETS[target]() if len(s) <= MAX_SEED]
        for seed in seeds:
            (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
        counts[target] = len(set(seeds))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "corpus")
    parser.add_argument("targets", nargs="*", help=f"some of {', '.join(TARGETS)} (all)")
    args = parser.parse_args()
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    for target, n in write(args.out, args.targets or list(TARGETS)).items():
        print(f"{target}: {n} seeds in {args.out / target}")


if __name__ == "__main__":
    main()
