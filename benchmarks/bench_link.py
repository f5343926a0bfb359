"""Benchmark the link: wire bytes of a notebook workload, and throughput of a 50 MB ByteArray.

Run as ``python benchmarks/bench_link.py`` (``--help`` for options).  Two parts, each with its
baseline measured in the same run:

(a) **Wire bytes.**  A few hundred cells typical of a notebook (long expansions, tables, TeX,
    SVG plots, messages, Print lines, definitions) are evaluated for real by the Mathics3 engine
    through a recording ``EngineHost``; the packets it emits (agent → kernel) and the
    EnterTextPackets of the cells (kernel → agent) are cached as WXF under ``benchmarks/.cache/``
    so that reruns take a second.  The same payload sequence then goes through ``FrameWriter``
    with no compression, with the link's zlib fallback and with the negotiated brotli codec, and
    through the baseline that ``ssh -C`` would apply to the link's uncompressed frames: one zlib
    level-6 stream per direction over the whole session, ``Z_SYNC_FLUSH`` after every frame.
    Frames are the ones the session sends (``session_units``: the end of a cell and the agent's
    RKAck in one frame, the kernel's RKAck after each cell), for the link and the baseline alike.
    Every frame is decoded again by a real ``FrameReader`` and compared with its payloads.  Goal:
    brotli bytes ≤ 0.7 × ssh -C bytes.  ``what-if`` measures other framings and costlier
    encoder settings.

(b) **Throughput.**  A 50 MB (50·10⁶ B) ByteArray result crosses a TCP loopback ``Link``
    between two processes: a child process plays the agent (``Link.accept``, answers a request
    with ``ReturnPacket[ByteArray]``) and this process the kernel (``Link.connect``, times from
    sending the request to holding the decoded expression).  Payloads: random bytes (should
    bypass compression) and a CSV text (compressible).  Baseline: the same bytes over a plain
    TCP socket between the same processes, ``sendall`` → ``recv_into`` a preallocated buffer.
    MB/s = 10⁶ B/s of payload, best of ``--repeats``.  Goal: ≥ 100 MB/s.  Extra rows: the
    bulk context forced on for every chunk, and the agent's sends throttled to an emulated
    ``--throttle-mb`` network, where the adaptive policy should compress.

Exit status is 0 whenever the benchmark ran: goal misses are reported, not failures.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import multiprocessing
import os
import queue
import random
import socket
import statistics
import struct
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rk_jupyter.link import compression, delta, wxf  # noqa: E402
from rk_jupyter.link.compression import BULK, MEDIUM, SMALL  # noqa: E402
from rk_jupyter.link.connection import Link  # noqa: E402
from rk_jupyter.link.expr import Function, Symbol  # noqa: E402
from rk_jupyter.link.frames import RAW, FrameReader, FrameWriter, decode_header  # noqa: E402
from rk_jupyter.link.packets import packet, packet_name  # noqa: E402

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
#: Bump when the capture format or the way cells are run changes (invalidates the cache).
CAPTURE_VERSION = 1
WIRE_GOAL = 0.7
THROUGHPUT_GOAL = 100.0  # MB/s
MB = 1_000_000
BIG_SIZE = 50 * MB
CHANNEL = 1


# -- (a) the reference workload ---------------------------------------------------------------


def workload_cells() -> list[str]:
    """About 300 cells of what notebooks evaluate, in a fixed order (the stream compressors
    see them in this order, so earlier outputs serve as dictionary for later ones)."""
    cells: list[str] = []
    add = cells.append
    for k in range(1, 21):
        add(f"{k}^{k} + {k}")
    for k in range(10, 101, 10):
        add(f"{k}!")
    for d in (10, 50, 100, 200, 500):
        add(f"N[Pi, {d}]")
    for k in range(10, 41, 3):
        add(f"FactorInteger[2^{k} - 1]")
    for n in range(2, 13):
        add(f"Expand[(x + y + z)^{n}]")
    for n in range(5, 31, 5):
        add(f"Expand[(a + b)^{n}]")
    for n in range(4, 25, 2):
        add(f"Factor[x^{n} - 1]")
    for n in (10, 25, 50, 100, 200):
        add(f"Table[{{i, Prime[i], N[Sqrt[i]]}}, {{i, {n}}}]")
    for n in (10, 50, 100, 500):
        add(f"Table[i^2, {{i, {n}}}]")
    add("Range[100]")
    add("Range[1000]")
    add("Table[N[Sin[i/10]], {i, 100}]")
    add("Table[Binomial[n, k], {n, 0, 10}, {k, 0, n}]")
    for k in range(3, 9):
        add(f"MatrixForm[Table[i j, {{i, {k}}}, {{j, {k}}}]]")
    for k in range(3, 9):
        add(f"IdentityMatrix[{k}]")
    for k in range(1, 11):
        add(f"SeedRandom[{k}]; RandomReal[1, 20]")
    for k in range(0, 9):
        add(f"Integrate[x^{k} Sin[x], x]")
    for k in range(1, 7):
        add(f"Integrate[x^{k} Exp[-x], x]")
    for k in range(2, 9):
        add(f"D[Sin[x]^{k} Cos[x], x]")
    for n in range(5, 16, 2):
        add(f"Series[Exp[x], {{x, 0, {n}}}]")
        add(f"Series[Sin[x], {{x, 0, {n}}}]")
    for k in range(2, 11):
        add(f"Solve[x^2 - {k} x + {k - 1} == 0, x]")
    for k in range(1, 7):
        add(f"Sum[i^{k}, {{i, 1, n}}]")
    for n in range(3, 9):
        add(f"TeXForm[Expand[(a + b)^{n}]]")
    add("Limit[Sin[x]/x, x -> 0]")
    add("Simplify[Sin[x]^2 + Cos[x]^2]")
    for k in range(1, 5):
        add(f"Plot[Sin[{k} x], {{x, 0, 2 Pi}}]")
    add("Plot[{Sin[x], Cos[x]}, {x, 0, 2 Pi}]")
    add("Plot[x^2, {x, -1, 1}]")
    add("Plot[Exp[-x^2], {x, -3, 3}]")
    add("ParametricPlot[{Cos[t], Sin[2 t]}, {t, 0, 2 Pi}]")
    add("ListPlot[Table[Prime[i], {i, 50}]]")
    add("ListLinePlot[Table[Sin[i/5], {i, 50}]]")
    add("Graphics[{Red, Disk[]}]")
    add("Graphics[Table[Circle[{i, 0}, 1], {i, 5}]]")
    for k in range(1, 11):
        add(f"{k}/0")
    for k in range(4, 9):
        add(f"{{1, 2, 3}}[[{k}]]")
    for k in range(1, 6):
        add(f"Table[i, {{i, 1, \"n{k}\"}}]")
    for k in range(1, 6):
        add(f"Set[{k}, 2]")
    add("Infinity - Infinity")
    add("ToExpression[\"1+\"]")
    add("a[[1]]")
    add("f[")
    for k in range(1, 21):
        add(f'Print["Iteration ", {k}, ": residual = ", N[10^-{k}]]')
    for k in range(2, 7):
        add(f'Do[Print["i = ", i], {{i, {k}}}]')
    for k in range(2, 7):
        add(f"Print[Expand[(x + 1)^{k}]]")
    for k in range(1, 6):
        add(f'Print["step {k} done"]; {k}')
    add('Print["Done."]')
    for k in range(1, 16):
        add(f"f{k}[x_] := x^{k} + {k};")
        add(f"data{k} = Table[i^{k}, {{i, 10}}];")
    for k in range(1, 6):
        add(f"f{k}[2] + Total[data{k}]")
    for k in range(1, 6):
        add(f'StringJoin["result-", ToString[{k}]]')
        add(f'ToUpperCase["hello world {k}"]')
    add('StringSplit["a b c d"]')
    add('StringReverse["stressed"]')
    return cells


@dataclass
class Workload:
    """WXF payloads of the captured packets, in emission order, one list per direction."""

    to_kernel: list[bytes]
    to_agent: list[bytes]
    engine: str
    cells: int


class RecordingHost:
    """An EngineHost that keeps each emitted packet as the WXF payload FrameWriter would send."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def emit(self, pkt: Function) -> None:
        self.payloads.append(wxf.dumps(pkt))

    def read_input(self, prompt: Function) -> str:
        return ""


def capture(cells: list[str]) -> Workload:
    """Evaluate ``cells`` with Mathics3 and record the packets both ways."""
    from rk_jupyter.agent.engines.mathics import MathicsEngine

    host = RecordingHost()
    engine = MathicsEngine(host, {})
    info = engine.start(120.0)
    to_agent: list[bytes] = []
    try:
        for code in cells:
            to_agent.append(wxf.dumps(packet("EnterTextPacket", code)))
            engine.evaluate(code)
    finally:
        engine.close()
    return Workload(host.payloads, to_agent, f"{info.name} {info.version}", len(cells))


ENGINE_SOURCES = sorted((ROOT / "rk_jupyter" / "agent" / "engines" / "mathics").glob("*.py"))


def _mathics_version() -> str:
    try:
        return importlib.metadata.version("Mathics3")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def load_workload(refresh: bool) -> tuple[Workload, str]:
    """The cached capture when its key (cells, Mathics3 version, engine sources) matches,
    else a fresh one, then cached: a change to what the engine emits invalidates it."""
    cells = workload_cells()
    key = hashlib.sha256(
        f"{CAPTURE_VERSION}\n{_mathics_version()}\n".encode()
        + b"".join(path.read_bytes() for path in ENGINE_SOURCES)
        + "\n".join(cells).encode()
    ).hexdigest()[:16]
    path = CACHE_DIR / f"link-workload-{key}.wxf"
    if path.exists() and not refresh:
        try:
            data = wxf.loads(path.read_bytes())
            return Workload(data["to_kernel"], data["to_agent"], data["engine"],
                            data["cells"]), f"cached {path.relative_to(ROOT)}"
        except (wxf.WXFError, KeyError, TypeError, OSError) as exc:
            print(f"cache {path} unusable ({exc}); capturing again", file=sys.stderr)
    started = time.monotonic()
    workload = capture(cells)
    CACHE_DIR.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(wxf.dumps({
        "to_kernel": workload.to_kernel, "to_agent": workload.to_agent,
        "engine": workload.engine, "cells": workload.cells,
    }))
    tmp.replace(path)
    for stale in CACHE_DIR.glob("link-workload-*.wxf"):
        if stale != path:
            stale.unlink()
    return workload, f"captured in {time.monotonic() - started:.0f} s → {path.relative_to(ROOT)}"


class SinkSocket:
    """Stands in for the socket (FrameWriter calls ``sendall`` only, as it has no ``sendmsg``);
    keeps the bytes of each frame."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def sendall(self, data: bytes | memoryview) -> None:
        self._chunks.append(bytes(data))

    def take(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


@dataclass
class WireResult:
    wire: int
    compress_s: float
    decompress_s: float
    frames: int
    per_stream: dict[int, int]  # frames per body encoding (RAW, SMALL, MEDIUM, BULK)
    max_compress_s: float = 0.0


class FrameChecker:
    """Feeds frames to a real FrameReader (through a socket pair) and checks what it decodes;
    times the reader's decompression alone."""

    def __init__(self, codec: str) -> None:
        self.a, b = socket.socketpair()
        self.reader = FrameReader(b, codec)
        self.decompress_s = 0.0
        inner = self.reader._decompress

        def timed(body: int, data: Any, limit: int) -> bytes:
            started = time.perf_counter()
            try:
                return inner(body, data, limit)
            finally:
                self.decompress_s += time.perf_counter() - started

        self.reader._decompress = timed  # type: ignore[method-assign]

    def check(self, frame: bytes, expected: list[bytes]) -> None:
        self.a.sendall(frame)
        for payload in expected:
            _, expr = self.reader.recv(5)
            if wxf.dumps(expr) != payload:
                raise AssertionError("a frame did not survive the round trip")

    def close(self) -> None:
        self.a.close()
        self.reader.reader.sock.close()


def through_link(units: list[list[bytes]], codec: str,
                 medium_quality: int | None = None, delta_filter: bool = True) -> WireResult:
    """Wire bytes of ``units`` sent by FrameWriter with ``codec``, one frame per unit (a single
    payload, or ``send_many`` of several); every frame is decoded again by a FrameReader.
    ``delta_filter=False``: the MEDIUM context without its number filter (as before it)."""
    saved = compression.MEDIUM_QUALITY
    if medium_quality is not None:
        compression.MEDIUM_QUALITY = medium_quality
    try:
        sink = SinkSocket()
        writer = FrameWriter(sink, codec)  # type: ignore[arg-type]
    finally:
        compression.MEDIUM_QUALITY = saved
    checker = FrameChecker(codec)
    if not delta_filter and codec != "none":
        writer._streams[MEDIUM].filtered = False
        checker.reader._decompressors[MEDIUM].filtered = False
    compress_s = max_s = 0.0
    per_stream: dict[int, int] = {}
    try:
        for unit in units:
            if len(unit) == 1:
                started = time.perf_counter()
                writer.send_payload(CHANNEL, unit[0])
            else:
                exprs = [wxf.loads(p) for p in unit]
                started = time.perf_counter()
                writer.send_many(CHANNEL, exprs)
            took = time.perf_counter() - started
            compress_s += took
            max_s = max(max_s, took)
            frame = sink.take()
            body = decode_header(frame).body
            per_stream[body] = per_stream.get(body, 0) + 1
            checker.check(frame, unit)
    finally:
        checker.close()
    return WireResult(writer.stats.wire_bytes, compress_s, checker.decompress_s,
                      writer.stats.frames, per_stream, max_s)


def through_ssh_zlib(units: list[list[bytes]], flush: int = zlib.Z_SYNC_FLUSH,
                     level: int = 6, old_header: bool = False) -> WireResult:
    """What ``ssh -C`` puts on the wire for the link's frames sent without compression: one
    zlib stream per direction, level 6, flushed after each frame.  The goal's baseline uses
    Z_SYNC_FLUSH; OpenSSH itself flushes each SSH packet with Z_PARTIAL_FLUSH, a few bytes
    cheaper per frame (shown as its own column).  One flush per frame, not per ≤32 KB SSH
    packet, favours the baseline slightly on big frames.  The frames are the link's own
    (codec none), so a smaller header makes the baseline smaller too; ``old_header``: with the
    11-byte header of the link before (flags, channel, two u32 lengths) instead."""
    sink = SinkSocket()
    writer = FrameWriter(sink, "none")  # type: ignore[arg-type]
    deflate = zlib.compressobj(level)
    inflate = zlib.decompressobj()
    wire = 0
    compress_s = decompress_s = 0.0
    for unit in units:
        if old_header:
            frame = b"".join(OLD_HEADER.pack(0, CHANNEL, len(p), len(p)) + p for p in unit)
        elif len(unit) == 1:
            writer.send_payload(CHANNEL, unit[0])
            frame = sink.take()
        else:
            writer.send_many(CHANNEL, [wxf.loads(p) for p in unit])
            frame = sink.take()
        started = time.perf_counter()
        body = deflate.compress(frame) + deflate.flush(flush)
        compress_s += time.perf_counter() - started
        started = time.perf_counter()
        back = inflate.decompress(body)
        decompress_s += time.perf_counter() - started
        if back != frame:
            raise AssertionError("ssh -C baseline: a frame did not survive the round trip")
        wire += len(body)
    return WireResult(wire, compress_s, decompress_s, len(units), {})


#: The link's frame header when the goal was set (flags u8, channel u16, wire and raw length
#: u32), for the record: the goal's baseline uses the link's current frames.
OLD_HEADER = struct.Struct(">BHII")
WIRE_COLUMNS = ("none", "ssh -C zlib6", "ssh partial", "link zlib", "link brotli", "brotli-max")


#: Packets that Session.emit holds until the request ends (rk_jupyter.agent.session._HELD).
HELD = frozenset(("OutputNamePacket", "ReturnPacket", "ReturnTextPacket", "InputNamePacket"))


def session_units(workload: Workload) -> tuple[list[list[bytes]], list[list[bytes]]]:
    """The frames the session sends, as payload lists (agent → kernel, kernel → agent).

    The agent holds the end of a cell (Out[n] name, result, next In[n] name) and sends it with
    its RKAck when the request ends; a Print or message goes at once, with whatever was held.
    The kernel sends each cell's EnterTextPacket with its RKAck for the cell before (as when
    cells follow each other within its 5 s heartbeat, which would carry it otherwise).
    """
    to_kernel: list[list[bytes]] = []
    held: list[bytes] = []
    ends = _cell_ends(workload.to_kernel)
    end_set = set(ends)
    requests = 0
    for i, payload in enumerate(workload.to_kernel, 1):
        held.append(payload)
        if i in end_set:
            requests += 1
            to_kernel.append([*held, wxf.dumps(packet("RKAck", requests))])
            held = []
        elif packet_name(wxf.loads(payload)) not in HELD:
            to_kernel.append(held)
            held = []
    if held:
        to_kernel.append(held)
    acks = [wxf.dumps(packet("RKAck", n)) for n in ends]
    to_agent = [[cell] if i == 0 else [acks[i - 1], cell]
                for i, cell in enumerate(workload.to_agent)]
    return to_kernel, to_agent


def _cell_ends(payloads: list[bytes]) -> list[int]:
    """How many agent packets the kernel holds when each cell's In[n] name arrives."""
    return [i for i, p in enumerate(payloads, 1)
            if packet_name(wxf.loads(p)) == "InputNamePacket"]


def wire_rows(workload: Workload) -> list[tuple[str, int, int, dict[str, WireResult]]]:
    """Per direction: (name, frames, raw bytes, results by column)."""
    rows = []
    for name, units in zip(("agent → kernel", "kernel → agent"), session_units(workload),
                           strict=True):
        results = {
            "none": through_link(units, "none"),
            "ssh -C zlib6": through_ssh_zlib(units),
            "ssh partial": through_ssh_zlib(units, zlib.Z_PARTIAL_FLUSH),
            "link zlib": through_link(units, "zlib"),
            "link brotli": through_link(units, "brotli"),
            "brotli-max": through_link(units, "brotli", compression.MAX_QUALITY),
        }
        rows.append((name, len(units), sum(len(p) for unit in units for p in unit), results))
    return rows


STREAM_NAMES = {RAW: "raw", SMALL: "small", MEDIUM: "medium", BULK: "bulk"}


def report_wire(workload: Workload, source: str) -> bool:
    """Print the wire-bytes table; True when the goal is met on the whole session."""
    print(f"(a) wire bytes: {workload.cells} cells evaluated by {workload.engine} ({source})")
    rows = wire_rows(workload)
    header = (f"{'direction':<15} {'frames':>6} {'WXF bytes':>10} "
              + " ".join(f"{c:>13}" for c in WIRE_COLUMNS) + f" {'brotli/zlib6':>13}")
    print(header)
    print("-" * len(header))
    totals = {c: 0 for c in WIRE_COLUMNS}
    frames = raw = 0
    for name, n, size, results in rows:
        frames += n
        raw += size
        for c in WIRE_COLUMNS:
            totals[c] += results[c].wire
        ratio = results["link brotli"].wire / results["ssh -C zlib6"].wire
        print(f"{name:<15} {n:>6} {size:>10} "
              + " ".join(f"{results[c].wire:>13}" for c in WIRE_COLUMNS) + f" {ratio:>13.3f}")
    ratio = totals["link brotli"] / totals["ssh -C zlib6"]
    print(f"{'session':<15} {frames:>6} {raw:>10} "
          + " ".join(f"{totals[c]:>13}" for c in WIRE_COLUMNS) + f" {ratio:>13.3f}")
    old = sum(through_ssh_zlib(units, old_header=True).wire
              for units in session_units(workload))
    print(f"(ssh -C zlib6 over frames with the former 11-byte header: {old} B; link brotli / "
          f"that = {totals['link brotli'] / old:.3f})")
    print("\nCPU per frame, agent → kernel (µs, mean; link: FrameWriter.send_payload, i.e. "
          "sampling, compression and header; decompression alone on the reader):")
    _, n, _, results = rows[0]
    for c in WIRE_COLUMNS[1:]:
        r = results[c]
        streams = ", ".join(f"{STREAM_NAMES[k]} {v}" for k, v in sorted(r.per_stream.items()))
        print(f"  {c:<13} compress {r.compress_s / n * 1e6:7.1f}   "
              f"decompress {r.decompress_s / n * 1e6:7.1f}"
              + (f"   max {r.max_compress_s * 1e3:5.2f} ms   frames by body: {streams}"
                 if streams else ""))
    largest = max((b"".join(unit) for unit in session_units(workload)[0]), key=len)
    encode_s, decode_s = _delta_cost(largest)
    print(f"  delta filter alone on the largest frame ({len(largest) / 1000:.1f} kB, a plot): "
          f"encode {encode_s * 1e3:.2f} ms, decode {decode_s * 1e3:.2f} ms (best of 20)")
    met = ratio <= WIRE_GOAL
    print(f"goal: brotli ≤ {WIRE_GOAL} × ssh -C zlib6 over the session: "
          f"{ratio:.3f} → {'MET' if met else 'NOT MET'}")
    dense = totals["brotli-max"] / totals["ssh -C zlib6"]
    print(f"      with compression brotli-max (the kernelspec's choice for slow networks): "
          f"{dense:.3f} → {'MET' if dense <= WIRE_GOAL else 'NOT MET'}")
    return met


def _delta_cost(payload: bytes) -> tuple[float, float]:
    """Best-of-20 seconds of delta.encode and delta.decode of one payload."""
    filtered = delta.encode(payload)
    best = [float("inf"), float("inf")]
    for _ in range(20):
        for i, (call, arg) in enumerate(((delta.encode, (payload,)),
                                         (delta.decode, (filtered, len(payload))))):
            started = time.perf_counter()
            call(*arg)
            best[i] = min(best[i], time.perf_counter() - started)
    return best[0], best[1]


def bursts(payloads: list[bytes]) -> list[list[bytes]]:
    """Agent → kernel packets grouped as the engine emits them back to back: everything up to
    and including the InputNamePacket that ends a cell (Print lines emitted early included)."""
    groups: list[list[bytes]] = [[]]
    ends = set(_cell_ends(payloads))
    for i, payload in enumerate(payloads, 1):
        groups[-1].append(payload)
        if i in ends:
            groups.append([])
    return [g for g in groups if g]


def what_if(workload: Workload) -> None:
    """Wire bytes of other framings and of costlier MEDIUM qualities (encoder-only settings)
    on the same payloads, each against ssh -C over the same frames."""
    to_kernel, to_agent = session_units(workload)
    back = through_link(to_agent, "brotli").wire
    base_back = through_ssh_zlib(to_agent).wire
    single = [[p] for p in workload.to_kernel]
    print("\nwhat-if (agent → kernel; ratios to ssh -C zlib6 over the same frames, and over "
          "the whole session):")
    print(f"  {'':<52} {'bytes':>8} {'a→k':>6} {'session':>7} {'mean ms':>8} {'max ms':>7}")
    for name, units, quality, filtered in (
        ("as measured above (the session's frames)", to_kernel, None, True),
        ("without the delta filter (delta.py)", to_kernel, None, False),
        ("one frame per packet (no held cell end, no acks)", single, None, True),
        ("one frame per cell (Print lines held too)", bursts(workload.to_kernel), None, True),
        (f"MEDIUM_QUALITY 10 (not {compression.MEDIUM_QUALITY})", to_kernel, 10, True),
        (f"MEDIUM_QUALITY {compression.MAX_QUALITY} (brotli-max)", to_kernel,
         compression.MAX_QUALITY, True),
        (f"MEDIUM_QUALITY {compression.MAX_QUALITY}, without the delta filter", to_kernel,
         compression.MAX_QUALITY, False),
    ):
        base = through_ssh_zlib(units).wire
        r = through_link(units, "brotli", quality, filtered)
        print(f"  {name:<52} {r.wire:>8} {r.wire / base:6.3f} "
              f"{(r.wire + back) / (base + base_back):7.3f} "
              f"{r.compress_s / len(units) * 1e3:8.3f} {r.max_compress_s * 1e3:7.2f}")


def sweep(workload: Workload) -> None:
    """Wire ratio and CPU cost for other MEDIUM/SMALL settings (to tune compression.py)."""
    units, _ = session_units(workload)
    base = through_ssh_zlib(units).wire
    csv = csv_bytes(8 * MB)
    print(f"\nMEDIUM stream settings, agent → kernel, vs ssh -C zlib6 = {base} B; "
          "CSV MB/s = one 1 MB CSV frame through the MEDIUM context")
    print(f"{'quality':>7} {'lgwin':>5} {'small<':>6} {'ratio':>6} {'µs/frame':>9} "
          f"{'max ms':>7} {'CSV MB/s':>9}")
    saved = (compression.MEDIUM_QUALITY, compression.BROTLI_WINDOW, compression.SMALL_LIMIT)
    try:
        for quality in (4, 5, 6, 7, 8, 9, 10, 11):
            for window, small in ((22, 256), (18, 256), (24, 256), (22, 128), (22, 1024)):
                if quality not in (5, 6) and (window, small) != (22, 256):
                    continue
                compression.MEDIUM_QUALITY, compression.BROTLI_WINDOW = quality, window
                compression.SMALL_LIMIT = small
                r = through_link(units, "brotli")
                comp = compression.StreamCompressor("brotli", compression.MEDIUM)
                started = time.perf_counter()
                comp.compress(csv[:MB])
                rate = MB / (time.perf_counter() - started) / MB
                print(f"{quality:>7} {window:>5} {small:>6} {r.wire / base:>6.3f} "
                      f"{r.compress_s / len(units) * 1e6:>9.1f} "
                      f"{r.max_compress_s * 1e3:>7.2f} {rate:>9.1f}")
    finally:
        compression.MEDIUM_QUALITY, compression.BROTLI_WINDOW, compression.SMALL_LIMIT = saved


# -- (b) throughput ----------------------------------------------------------------------------


def csv_bytes(size: int) -> bytes:
    """A CSV table {i, i² mod p, √i}: compressible data (about 3:1), as ExportByteArray[…,
    "CSV"] would give; deterministic."""
    parts: list[str] = []
    total = i = 0
    while total < size:
        i += 1
        line = f"{i},{i * i % 1000003},{i ** 0.5:.6f}\n"
        parts.append(line)
        total += len(line)
    return "".join(parts).encode()[:size]


def big_payloads(size: int) -> dict[str, bytes]:
    return {"random": random.Random(1).randbytes(size), "compressible": csv_bytes(size)}


BENCH_TIME = Symbol("BenchSenderTime")


class ThrottledSocket:
    """The agent's socket as if the network behind it carried ``rate`` B/s: a token bucket
    with a 4 MB burst (what socket buffers absorb before sends block).  FrameWriter sees sends
    block as on a slow link, the reader sees data arrive at that rate."""

    BURST = 4 * MB

    def __init__(self, sock: socket.socket, rate: float) -> None:
        self.sock = sock
        self.rate = rate
        self.tokens = float(self.BURST)
        self.stamp = time.monotonic()

    def sendall(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        for pos in range(0, len(view), 65536):
            piece = view[pos:pos + 65536]
            now = time.monotonic()
            self.tokens = min(self.BURST, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens < len(piece):
                time.sleep((len(piece) - self.tokens) / self.rate)
                self.tokens = float(len(piece))
                self.stamp = time.monotonic()
            self.tokens -= len(piece)
            self.sock.sendall(piece)


def agent_side(conn: Any, token: bytes, size: int) -> None:
    """Child process: plays the agent.  Serves raw requests and Link requests until told to
    stop; each Link request is answered by ``ReturnPacket[data]`` then ``BenchSenderTime[s]``."""
    data = big_payloads(size)
    digests = {k: hashlib.sha256(v).hexdigest() for k, v in data.items()}
    link_listener = socket.create_server(("127.0.0.1", 0))
    raw_listener = socket.create_server(("127.0.0.1", 0))
    conn.send((link_listener.getsockname()[1], raw_listener.getsockname()[1], digests))
    raw, _ = raw_listener.accept()
    while True:
        command = conn.recv()
        if command == "stop":
            return
        if command == "raw":
            serve_raw(raw, data)
        elif command[0] == "link":
            _, bulk, throttle = command
            sock, _ = link_listener.accept()
            link = Link.accept(sock, token)
            link.bulk_policy.mode = bulk if link.codec != "none" else "never"
            if throttle:
                link._writer.sock = ThrottledSocket(link.sock, throttle)  # type: ignore[assignment]
            try:
                serve_link(link, data)
            finally:
                link.close()


def serve_raw(sock: socket.socket, data: dict[str, bytes]) -> None:
    """Each 1-byte request names a payload (r/c); a 0-byte read means the round is over."""
    while True:
        request = sock.recv(1)
        if request in (b"", b"x"):
            return
        sock.sendall(data["random" if request == b"r" else "compressible"])


def serve_link(link: Link, data: dict[str, bytes]) -> None:
    """As the agent's server does: one thread reads the link all the time (so the kernel's
    acknowledgements of bulk bytes reach the sender's policy while a payload goes out),
    another answers the requests."""
    requests: queue.Queue[Any] = queue.Queue()

    def read() -> None:
        try:
            while True:
                requests.put(link.recv(timeout=None)[1])
        except (OSError, ValueError):
            requests.put(None)

    threading.Thread(target=read, daemon=True).start()
    while True:
        request = requests.get()
        if request is None:
            return
        name = request.args[0]
        if name == "stop":
            return
        started = time.perf_counter()
        link.send(CHANNEL, packet("ReturnPacket", data[name]))
        link.send(CHANNEL, Function(BENCH_TIME, time.perf_counter() - started))


@dataclass
class Transfer:
    seconds: list[float]
    wire: int
    sender_s: float  # the sender's encode + compress + sendall time of the fastest run

    @property
    def best(self) -> float:
        return min(self.seconds)


def raw_round(sock: socket.socket, kind: str, size: int, repeats: int) -> Transfer:
    buf = bytearray(size)
    view = memoryview(buf)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        sock.sendall(b"r" if kind == "random" else b"c")
        got = 0
        while got < size:
            k = sock.recv_into(view[got:], size - got)
            if not k:
                raise ConnectionError("the agent side closed the raw socket")
            got += k
        seconds.append(time.perf_counter() - started)
    sock.sendall(b"x")
    return Transfer(seconds, size, 0.0)


def link_round(link: Link, kind: str, size: int, digest: str, repeats: int) -> Transfer:
    seconds = []
    sender = []
    wire = 0
    for _ in range(repeats):
        before = link.stats.received.wire_bytes
        started = time.perf_counter()
        link.send(CHANNEL, packet("EvaluatePacket", kind))
        _, result = link.recv(timeout=300)
        seconds.append(time.perf_counter() - started)
        wire = link.stats.received.wire_bytes - before
        _, timing = link.recv(timeout=60)
        sender.append(timing.args[0])
        data = result.args[0]
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise AssertionError(f"link ({link.codec}): {kind} payload arrived damaged")
        del result, data
    return Transfer(seconds, wire, sender[seconds.index(min(seconds))])


@dataclass
class LinkSetup:
    label: str
    codec: str
    bulk: str = "adaptive"
    throttle: float = 0.0  # B/s of the emulated network, 0: loopback as it is
    repeats: int | None = None  # None: --repeats


def measure_throughput(size: int, repeats: int, setups: list[LinkSetup]
                       ) -> list[tuple[str, str, Transfer]]:
    """Rows (method, payload, transfer) with the child process as the agent."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    token = os.urandom(32)
    proc = ctx.Process(target=agent_side, args=(child, token, size), daemon=True)
    proc.start()
    rows = []
    try:
        if not parent.poll(120):
            raise RuntimeError("the agent-side process did not start")
        link_port, raw_port, digests = parent.recv()
        raw = socket.create_connection(("127.0.0.1", raw_port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for kind in ("random", "compressible"):
            parent.send("raw")
            rows.append(("raw socket", kind, raw_round(raw, kind, size, repeats)))
        raw.close()
        for setup in setups:
            parent.send(("link", setup.bulk, setup.throttle))
            link = Link.connect("127.0.0.1", link_port, token, setup.codec)
            label = setup.label.format(codec=link.codec)
            try:
                for kind in ("random", "compressible"):
                    rows.append((label, kind, link_round(link, kind, size, digests[kind],
                                                         setup.repeats or repeats)))
                link.send(CHANNEL, packet("EvaluatePacket", "stop"))
            finally:
                link.close()
        parent.send("stop")
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
    return rows


def report_throughput(size: int, repeats: int, codecs: list[str], throttle_mb: float) -> bool:
    """Print the throughput table; True when the negotiated link meets the goal for both."""
    print(f"\n(b) throughput: one {size / MB:g} MB ByteArray result, TCP loopback, agent side and "
          f"kernel side in two processes, best of {repeats}")
    setups = [LinkSetup("link {codec}", codecs[0])]
    if codecs[0] != "none":
        setups.append(LinkSetup("link {codec}, bulk compression always", codecs[0], "always"))
    setups += [LinkSetup("link {codec}", c) for c in codecs[1:]]
    if throttle_mb:
        rate = throttle_mb * MB
        setups += [LinkSetup(f"link {{codec}} @ {throttle_mb:g} MB/s net", c, throttle=rate,
                             repeats=1) for c in dict.fromkeys((codecs[0], "none"))]
    rows = measure_throughput(size, repeats, setups)
    raw_best = {kind: t.best for method, kind, t in rows if method == "raw socket"}
    width = max(len(method) for method, _, _ in rows)
    header = (f"{'method':<{width}} {'payload':<13} {'best ms':>8} {'median ms':>9} {'MB/s':>7} "
              f"{'vs raw':>7} {'wire MB':>8} {'sender ms':>9}")
    print(header)
    print("-" * len(header))
    goal_method = rows[2][0]  # the first link row: the negotiated codec, adaptive, loopback
    met = True
    for method, kind, t in rows:
        rate = size / t.best / MB
        if method == goal_method:
            met &= rate >= THROUGHPUT_GOAL
        sender = f"{t.sender_s * 1e3:9.0f}" if method != "raw socket" else f"{'':>9}"
        median = statistics.median(t.seconds)
        print(f"{method:<{width}} {kind:<13} {t.best * 1e3:8.0f} {median * 1e3:9.0f} {rate:7.0f}"
              f" {raw_best[kind] / t.best:7.2f} {t.wire / MB:8.1f} {sender}")
    print("sender ms: the agent side's wxf encoding + compression + sends of that run; vs raw: raw "
          "time / link time; @ N MB/s net: the agent's sends throttled to N MB/s (4 MB burst), "
          "one run each")
    print(f"goal: {goal_method} ≥ {THROUGHPUT_GOAL:.0f} MB/s for both payloads: "
          f"{'MET' if met else 'NOT MET'}")
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refresh", action="store_true",
                        help="evaluate the workload again instead of using the cache")
    parser.add_argument("--repeats", type=int, default=3, help="throughput: best of N")
    parser.add_argument("--size-mb", type=float, default=BIG_SIZE / MB,
                        help="throughput: size of the ByteArray in MB")
    parser.add_argument("--codecs", default="brotli,none",
                        help="throughput: link codecs to try, the first is the goal's")
    parser.add_argument("--throttle-mb", type=float, default=20.0,
                        help="throughput: also run over an emulated network of this many MB/s "
                             "(0: skip)")
    parser.add_argument("--only", choices=("wire", "throughput"), help="run one part only")
    parser.add_argument("--sweep", action="store_true",
                        help="also try other MEDIUM quality/window and SMALL_LIMIT settings")
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; frames below "
          f"{compression.MIN_COMPRESS_SIZE} B uncompressed, below {compression.SMALL_LIMIT} B "
          f"zlib {compression.ZLIB_LEVEL} (partial flush), then brotli quality "
          f"{compression.MEDIUM_QUALITY} lgwin {compression.BROTLI_WINDOW}; from "
          f"{compression.BULK_FROM // 1024} KiB chunks of {compression.CHUNK // 1024} KiB, "
          f"brotli quality {compression.BULK_QUALITY} when it pays\n")
    if args.only != "throughput" and "brotli" not in compression.available_codecs():
        print("(a) wire bytes: skipped, brotli is not installed in this Python")
    elif args.only != "throughput":
        workload, source = load_workload(args.refresh)
        report_wire(workload, source)
        what_if(workload)
        if args.sweep:
            sweep(workload)
    if args.only != "wire":
        report_throughput(int(args.size_mb * MB), max(args.repeats, 1),
                          [c.strip() for c in args.codecs.split(",") if c.strip()],
                          args.throttle_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
