"""Benchmark the ssh transport against the real OpenSSH test bed (tests/sshbed.py).

Run as ``python benchmarks/bench_ssh.py`` (root: the bed makes accounts and a namespace).
All figures come from the same run; exit status is 0 whenever it ran (goals are reported).

1. Time to first result, cold (new SSH connection + agent, copied over SFTP, + engine) and warm
   (a second kernel on the same host: connection and agent reused), split into SSH connect,
   agent start (incl. deploy), link (handshake through the forward), engine start and the
   first cell.  Measured as the kernel process does it (AgentClient on the lease), so that the
   Jupyter kernel process's own start-up, the same for every transport, is not counted; the
   same two starts through KernelManager are shown end to end.  Goal: warm ≤ engine start +
   0.3 s.
2. Execute round trip of ``1`` through the shaping proxy at 50 ms RTT, against the same on the
   direct path (evaluation plus local overhead).  Goal: ≤ RTT + evaluation + 5 ms, i.e. one
   network round trip per cell.
3. A 5 MB text result (compressible, like a table) with each link codec over a 2 Mbit/s link
   (50 ms RTT; zlib too), a 20 Mbit/s one and the unshaped namespace path.  Goals (issue 16):
   brotli ≤ 0.33 × none at 2 Mbit/s, ≤ 0.5 × none at 20 Mbit/s, and no slower than none
   unshaped (≤ 1.1 × none: the noise of two runs).
4. The two SSH clients side by side (kernelspec ``ssh_client``), each in the same run: cold
   start to the first result, a second kernel to the same host (goal ≤ engine start + 0.3 s),
   a cell at 50 ms RTT (goal ≤ 1.1 network round trips), 50 MB through the forward from a
   remote process (median of three; goal: OpenSSH ≥ paramiko) and the time to re-establish
   a connection after every TCP connection of it was reset (a cell runs again).
Sections 1-3 use the default client (OpenSSH where it is installed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from rk_jupyter.client import AgentClient, Collected, Endpoint  # noqa: E402
from rk_jupyter.client import run as evaluate  # noqa: E402
from rk_jupyter.errors import RKError  # noqa: E402
from rk_jupyter.link.connection import Link  # noqa: E402
from rk_jupyter.provisioning.settings import LaunchSettings  # noqa: E402
from rk_jupyter.provisioning.ssh import backend  # noqa: E402
from rk_jupyter.provisioning.ssh.pool import ConnectionPool, ConnectOptions, Lease  # noqa: E402
from rk_jupyter.provisioning.ssh.remote_agent import AgentSettings  # noqa: E402
from rk_jupyter.provisioning.ssh.target import SSHTarget  # noqa: E402

from sshbed import SSHBed  # noqa: E402

RTT_MS = 50.0
RATE_BPS = 2_000_000
BIG_MB = 5.0
# ~14 KB of numbers, repeated: cheap in Mathics3 (a Table of strings takes seconds there).
BIG_SETUP = 'big = StringRepeat[ToString[Range[2500]] <> "\\n", {repeats}];'
CELL_TIMEOUT = 180.0


def target_for(bed: SSHBed, host: str, port: int, client: str = "auto") -> SSHTarget:
    """The bed's host resolved as the kernel's ``ssh_client`` would resolve it."""
    return backend.resolve(LaunchSettings(
        transport="ssh", host=host, port=port, user=bed.user, identity_file=bed.key_file,
        known_hosts=bed.known_hosts, ssh_client=client))


def options(bed: SSHBed, log_dir: str, deploy: str = "auto",
            reconnect_grace: float = 0.0) -> ConnectOptions:
    return ConnectOptions(agent=AgentSettings(python=bed.remote_python, deploy=deploy),
                          log_dir=log_dir, reconnect_grace=reconnect_grace)


def open_client(lease: Lease, codec: str = "brotli", grace: float = 0.0,
                engine_options: dict | None = None) -> tuple[AgentClient, float, float]:
    """A session on the lease's agent: (client, link seconds, engine start seconds).

    The link alone (TCP through the forward + handshake) is timed on a throwaway link first;
    the engine start is the rest of the session's opening.
    """
    started = time.perf_counter()
    Link.connect("127.0.0.1", lease.port, lease.token, codec, timeout=15.0).close()
    link = time.perf_counter() - started
    session = f"bench-{os.getpid()}-{time.monotonic_ns()}" if grace else ""
    client = AgentClient(Endpoint("127.0.0.1", lease.port, lease.token, transport="ssh",
                                  codec=codec, session=session,
                                  engine_options=engine_options or {}), grace=grace)
    started = time.perf_counter()
    client.open(CELL_TIMEOUT, keep=grace)
    return client, link, time.perf_counter() - started - link


def cell(client: AgentClient, code: str) -> tuple[float, Any]:
    """One cell's round trip (send → In[] of the next line) and its result bundle."""
    started = time.perf_counter()
    out = Collected()
    try:
        evaluate(client, code, out, timeout=CELL_TIMEOUT)
    except RKError as exc:
        raise RuntimeError(f"cell {code!r} failed: {exc} ({exc.code})") from None
    return time.perf_counter() - started, out.results[-1] if out.results else None


# -- 1. cold and warm starts ------------------------------------------------------------------


def first_result(pool: ConnectionPool, target: SSHTarget, opts: ConnectOptions) -> dict:
    started = time.perf_counter()
    lease = pool.acquire(target, opts)
    acquired = time.perf_counter() - started
    client, link, engine = open_client(lease)
    first, _ = cell(client, "1")
    total = acquired + link + engine + first
    return {"lease": lease, "client": client, "connect": lease.timings["connect"],
            "agent": lease.timings["agent"], "link": link, "engine": engine, "first": first,
            "total": total}


def bench_starts(bed: SSHBed, log_dir: str) -> list[str]:
    bed.run_remote("rm -rf ~/.cache/rk_jupyter")
    pool = ConnectionPool()
    target = target_for(bed, bed.host, bed.port)
    opts = options(bed, log_dir, deploy="zipapp")
    cold = first_result(pool, target, opts)
    warm = first_result(pool, target, opts)
    for run in (warm, cold):
        run["client"].close()
        pool.release(run["lease"])
    km_cold, km_warm = kernel_manager_starts(bed)
    rows = [f"{'phase':<28}{'cold':>10}{'warm':>10}"]
    for key, label in (("connect", "SSH connect"), ("agent", "agent start (incl. deploy)"),
                       ("link", "link through the forward"), ("engine", "engine start"),
                       ("first", "first cell `1`"), ("total", "time to first result")):
        rows.append(f"{label:<28}{cold[key]:>9.3f}s{warm[key]:>9.3f}s")
    rows.append(f"{'KernelManager, end to end':<28}{km_cold:>9.3f}s{km_warm:>9.3f}s")
    limit = warm["engine"] + 0.3
    rows.append(f"goal warm ≤ engine start + 0.3 s = {limit:.3f} s: warm {warm['total']:.3f} s "
                f"-> {'met' if warm['total'] <= limit else 'MISSED'}; warm/cold = "
                f"{warm['total'] / cold['total']:.2f}")
    return rows


def kernel_manager_starts(bed: SSHBed) -> tuple[float, float]:
    """Cold and warm start to the first result through jupyter_client, with an rk- spec."""
    from jupyter_client.manager import start_new_kernel

    from rk_jupyter.cli import main as cli

    from kernel_helpers import execute

    root = tempfile.mkdtemp(prefix="rkj-bench-jupyter-")
    os.environ.update({"JUPYTER_PATH": f"{root}/share/jupyter",
                       "JUPYTER_RUNTIME_DIR": f"{root}/runtime",
                       "JUPYTER_DATA_DIR": f"{root}/data"})
    cli(["add", "bench", "--host", f"{bed.user}@{bed.host}:{bed.port}", "--identity",
         bed.key_file, "--known-hosts", bed.known_hosts, "--remote-python", bed.remote_python,
         "--prefix", root])
    times, kernels = [], []
    for _ in range(2):
        started = time.perf_counter()
        km, kc = start_new_kernel(kernel_name="rk-bench", startup_timeout=CELL_TIMEOUT)
        assert execute(kc, "1").results()[0]["data"]["text/plain"] == "1"
        times.append(time.perf_counter() - started)
        kernels.append((km, kc))
    for km, kc in reversed(kernels):
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return times[0], times[1]


# -- 2. round trip at 50 ms RTT -----------------------------------------------------------------


def round_trips(bed: SSHBed, host: str, port: int, log_dir: str, runs: int) -> dict:
    pool = ConnectionPool()
    lease = pool.acquire(target_for(bed, host, port), options(bed, log_dir))
    client, _, _ = open_client(lease)
    try:
        for _ in range(5):
            cell(client, "1")
        cells = [cell(client, "1")[0] for _ in range(runs)]
        pings = [client.ping() for _ in range(runs)]
    finally:
        client.close()
        pool.release(lease)
    return {"cell": statistics.median(cells), "ping": statistics.median(pings)}


def bench_round_trip(bed: SSHBed, log_dir: str, runs: int) -> list[str]:
    direct = round_trips(bed, bed.host, bed.port, log_dir, runs)
    proxy = bed.proxy(delay_ms=RTT_MS / 2, rate_bps=None)
    try:
        shaped = round_trips(bed, proxy.host, proxy.port, log_dir, runs)
    finally:
        proxy.stop()
    rtt = RTT_MS / 1000
    limit = rtt + direct["cell"] + 0.005
    trips = (shaped["cell"] - direct["cell"]) / rtt
    return [
        f"{'median of ' + str(runs):<28}{'direct':>10}{'50 ms RTT':>11}",
        f"{'cell `1` round trip':<28}{direct['cell'] * 1000:>8.1f}ms"
        f"{shaped['cell'] * 1000:>9.1f}ms",
        f"{'link ping':<28}{direct['ping'] * 1000:>8.1f}ms{shaped['ping'] * 1000:>9.1f}ms",
        f"goal ≤ RTT + evaluation + 5 ms = {limit * 1000:.1f} ms: {shaped['cell'] * 1000:.1f} ms "
        f"-> {'met' if shaped['cell'] <= limit else 'MISSED'} ({trips:.2f} network round trips "
        "per cell)",
    ]


# -- 3. 5 MB over 2 Mbit/s ----------------------------------------------------------------------


def big_result(lease: Lease, codec: str) -> dict:
    client, _, _ = open_client(lease, codec, engine_options={"output_limit": 10**9})
    try:
        repeats = int(BIG_MB * 1e6 / 14_000)
        cell(client, BIG_SETUP.format(repeats=repeats))
        seconds, bundle = cell(client, "big")
        stats = client.link.stats.received
        size = len(bundle["text/plain"]) if isinstance(bundle, dict) else 0
        return {"seconds": seconds, "size": size, "wire": stats.wire_bytes,
                "codec": client.link.codec}
    finally:
        client.close()


def big_results(bed: SSHBed, log_dir: str, rate: float | None,
                codecs: tuple[str, ...]) -> dict[str, dict]:
    """The big result with each codec through the proxy at ``rate`` bit/s (50 ms RTT), or
    straight to the bed (None: the unshaped namespace path)."""
    proxy = bed.proxy(delay_ms=RTT_MS / 2, rate_bps=rate) if rate else None
    host, port = (proxy.host, proxy.port) if proxy else (bed.host, bed.port)
    pool = ConnectionPool()
    lease = pool.acquire(target_for(bed, host, port), options(bed, log_dir))
    try:
        return {codec: big_result(lease, codec) for codec in codecs}
    finally:
        pool.release(lease)
        pool.shutdown()
        if proxy:
            proxy.stop()


def bench_big(bed: SSHBed, log_dir: str) -> list[str]:
    rows = [f"{'path':<12}{'codec':<8}{'result':>10}{'on the wire':>13}{'time':>9}"
            f"{'vs none':>9}"]
    goals = []
    for label, rate, codecs, limit in (("2 Mbit/s", RATE_BPS, ("brotli", "zlib", "none"), 0.33),
                                       ("20 Mbit/s", 10 * RATE_BPS, ("brotli", "none"), 0.5),
                                       ("unshaped", None, ("brotli", "none"), 1.1)):
        results = big_results(bed, log_dir, rate, codecs)
        none = results["none"]["seconds"]
        for r in results.values():
            rows.append(f"{label:<12}{r['codec']:<8}{r['size'] / 1e6:>8.2f}MB"
                        f"{r['wire'] / 1e6:>11.3f}MB{r['seconds']:>8.2f}s"
                        f"{r['seconds'] / none:>9.2f}")
        ratio = results["brotli"]["seconds"] / none
        goals.append(f"goal brotli ≤ {limit:g} × none at {label}: {ratio:.3f} -> "
                     f"{'met' if ratio <= limit else 'MISSED'}")
    return rows + goals


# -- 4. OpenSSH and paramiko side by side ---------------------------------------------------------

TUNNEL_MB = 50
THROUGHPUT_RUNS = 3
# A remote process that sends TUNNEL_MB MiB (incompressible) to whoever connects.
SINK = ("import os, socket\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
        "print(s.getsockname()[1], flush=True)\n"
        "c, _ = s.accept(); block = os.urandom(1 << 20)\n"
        "for _ in range({mb}): c.sendall(block)\n"
        "c.close()\n")


def tunnel_throughput(lease: Lease, bed: SSHBed) -> float:
    """MB/s of TUNNEL_MB MiB from a remote process through a forward like the agent's."""
    import shlex
    import socket

    connection = lease.shared.connection
    command = f"{shlex.quote(bed.remote_python)} -c {shlex.quote(SINK.format(mb=TUNNEL_MB))}"
    channel = connection.exec(command, 30.0, combine=False)
    forward = None
    try:
        port = int(channel.makefile("rb").readline())
        forward = connection.forward(("127.0.0.1", port), 10.0)
        with socket.create_connection(("127.0.0.1", forward.port), 10) as sock:
            sock.settimeout(60)
            started, got = time.perf_counter(), 0
            while data := sock.recv(1 << 20):
                got += len(data)
            seconds = time.perf_counter() - started
        if got != TUNNEL_MB << 20:
            raise RuntimeError(f"only {got} of {TUNNEL_MB << 20} bytes came through")
        return got / 1e6 / seconds
    finally:
        if forward is not None:
            forward.close()
        channel.close()


def reconnect_seconds(bed: SSHBed, client_name: str, log_dir: str) -> float:
    """From resetting every TCP connection of the kernel's SSH connection to the next cell's
    result (the pool re-establishes the connection; the kernel's link resends)."""
    proxy = bed.proxy(delay_ms=0, rate_bps=None)
    pool = ConnectionPool()
    lease = pool.acquire(target_for(bed, proxy.host, proxy.port, client_name),
                         options(bed, log_dir, reconnect_grace=60.0))
    client, _, _ = open_client(lease, grace=60.0)
    try:
        cell(client, "1")
        before = lease.shared.reconnects
        started = time.perf_counter()
        proxy.reset_connections()
        while lease.shared.reconnects == before:
            if time.perf_counter() - started > 60:
                raise RuntimeError("no reconnect within 60 s")
            time.sleep(0.01)
        cell(client, "2")
        return time.perf_counter() - started
    finally:
        client.close()
        pool.release(lease)
        pool.shutdown()
        proxy.stop()


def bench_clients(bed: SSHBed, log_dir: str, runs: int) -> list[str]:
    figures: dict[str, dict[str, float]] = {}
    for name in ("openssh", "paramiko"):
        bed.run_remote("rm -rf ~/.cache/rk_jupyter")
        pool = ConnectionPool()
        target = target_for(bed, bed.host, bed.port, name)
        opts = options(bed, log_dir, deploy="zipapp")
        cold = first_result(pool, target, opts)
        warm = first_result(pool, target, opts)
        # A median of three: one transfer, right after the cold start (the agent's template
        # still busy on the same two CPUs), came out either way by a few percent.
        throughput = statistics.median(tunnel_throughput(cold["lease"], bed)
                                       for _ in range(THROUGHPUT_RUNS))
        for run in (warm, cold):
            run["client"].close()
            pool.release(run["lease"])
        pool.shutdown()
        proxy = bed.proxy(delay_ms=RTT_MS / 2, rate_bps=None)
        try:
            shaped = round_trips_with(bed, proxy.host, proxy.port, log_dir, runs, name)
        finally:
            proxy.stop()
        direct = round_trips_with(bed, bed.host, bed.port, log_dir, runs, name)
        figures[name] = {
            "cold": cold["total"], "connect": cold["connect"], "warm": warm["total"],
            "warm_limit": warm["engine"] + 0.3,
            "trips": (shaped["cell"] - direct["cell"]) / (RTT_MS / 1000),
            "cell": shaped["cell"], "throughput": throughput,
            "reconnect": reconnect_seconds(bed, name, log_dir)}
    o, p = figures["openssh"], figures["paramiko"]
    rows = [f"{'':<36}{'openssh':>10}{'paramiko':>15}"]
    for key, label, unit in (("connect", "SSH connect (cold)", "s"),
                             ("cold", "cold start to first result", "s"),
                             ("warm", "second kernel to first result", "s"),
                             ("cell", f"cell `1` at {RTT_MS:.0f} ms RTT", "s"),
                             ("trips", "  = network round trips", ""),
                             ("throughput", f"{TUNNEL_MB} MB through the forward", "MB/s"),
                             ("reconnect", "reconnect after a reset to a result", "s")):
        rows.append(f"{label:<36}{o[key]:>10.3f} {unit:<4}{p[key]:>10.3f} {unit}")
    for name, f in figures.items():
        met = "met" if f["warm"] <= f["warm_limit"] else "MISSED"
        rows.append(f"goal {name} second kernel ≤ engine start + 0.3 s = "
                    f"{f['warm_limit']:.3f} s: {f['warm']:.3f} s -> {met}")
        rows.append(f"goal {name} cell at {RTT_MS:.0f} ms RTT ≤ 1.1 round trips: "
                    f"{f['trips']:.2f} -> {'met' if f['trips'] <= 1.1 else 'MISSED'}")
    rows.append(f"goal openssh ≥ paramiko through the forward: {o['throughput']:.1f} vs "
                f"{p['throughput']:.1f} MB/s (ratio {o['throughput'] / p['throughput']:.2f}) -> "
                f"{'met' if o['throughput'] >= p['throughput'] else 'MISSED'}")
    return rows


def round_trips_with(bed: SSHBed, host: str, port: int, log_dir: str, runs: int,
                     client_name: str) -> dict:
    pool = ConnectionPool()
    lease = pool.acquire(target_for(bed, host, port, client_name), options(bed, log_dir))
    client, _, _ = open_client(lease)
    try:
        for _ in range(5):
            cell(client, "1")
        return {"cell": statistics.median(cell(client, "1")[0] for _ in range(runs))}
    finally:
        client.close()
        pool.release(lease)
        pool.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="cells per round-trip median")
    args = parser.parse_args(argv)
    log_dir = tempfile.mkdtemp(prefix="rkj-bench-ssh-")
    with SSHBed(users=["rkjtest"]) as bed:
        print(f"ssh test bed: mode={bed.mode} {bed.user}@{bed.host}:{bed.port}"
              + (f" (fallback: {bed.fallback_reason})" if bed.fallback_reason else ""))
        for title, rows in (
            ("1. time to first result (seconds)", bench_starts(bed, log_dir)),
            (f"2. execute round trip at {RTT_MS:.0f} ms RTT",
             bench_round_trip(bed, log_dir, args.runs)),
            (f"3. {BIG_MB:.0f} MB text result over {RATE_BPS / 1e6:.0f} Mbit/s, "
             f"{RTT_MS:.0f} ms RTT", bench_big(bed, log_dir)),
            ("4. SSH clients: OpenSSH and paramiko", bench_clients(bed, log_dir, args.runs)),
        ):
            print(f"\n{title}")
            for row in rows:
                print("  " + row)
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
