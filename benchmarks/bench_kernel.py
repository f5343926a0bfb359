"""Benchmark the execute round trip of ``1`` on rk-local against mathics3-jupyter-kernel.

Run as ``python benchmarks/bench_kernel.py`` (``--help`` for options).  Both kernels are started
through jupyter_client's KernelManager (rk-local with its provisioner, as JupyterLab would) and
driven by a BlockingKernelClient.  After ``--warmup`` executions each, the two kernels are timed
alternately, ``--runs`` times each, so that load from elsewhere hits both alike.  One round trip
is what a notebook waits for: from sending execute_request to holding both the execute_reply and
the iopub ``idle`` status of that request (the execute_result must read ``1``).

rk-local's path: kernel → TCP link (brotli) → agent → Mathics3 worker process and back; the
peer's: its kernel process evaluates in-process.  Goal: median(rk-local) ≤ 1.2 × median(peer).

Then a large result on rk-local: ``Range[200000]`` (1.5 MB of text before issue 15) reaches the
notebook in its short form; goal ≤ 1 s (median of ``--large-runs``), reported with the bytes of
text/plain and, as the baseline of the same run, ``Range[200000];`` (the same evaluation with no
output to show).

The peer kernel comes from PyPI (``mathics3-jupyter-kernel``), which registers no kernelspec on
install; when it is missing this benchmark pip-installs it into this Python and registers
``mathics3-kernel`` under ``sys.prefix`` (``--no-install`` skips the peer instead).  Exit status
is 0 whenever the benchmark ran: goal misses are reported, not failures.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO, Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import KernelManager

OURS = "rk-local"
PEER = "mathics3-kernel"
PEER_PACKAGE = "mathics3-jupyter-kernel"
PEER_MODULE = "mathics3_jupyter_kernel"
GOAL = 1.2
LARGE = "Range[200000]"
LARGE_GOAL = 1.0  # seconds until the notebook has it (issue 15)
START_TIMEOUT = 180.0
REPLY_TIMEOUT = 60.0


def kernel_exists(name: str) -> bool:
    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        return False
    return True


def ensure_peer(install: bool) -> str | None:
    """Make the peer kernelspec available; None when it is, else why it is not."""
    if kernel_exists(PEER):
        return None
    if not install:
        return f"kernelspec {PEER} is not installed (--no-install)"
    try:
        importlib.import_module(PEER_MODULE)
    except ImportError:
        print(f"installing the peer kernel: {sys.executable} -m pip install {PEER_PACKAGE}",
              flush=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", PEER_PACKAGE],
                              capture_output=True, text=True)
        if done.returncode:
            return f"pip install {PEER_PACKAGE} failed: {done.stderr.strip()[-500:]}"
        importlib.invalidate_caches()
    try:
        install_kernel = importlib.import_module(f"{PEER_MODULE}.install_kernel")
    except ImportError as exc:
        return f"{PEER_PACKAGE} is installed but {PEER_MODULE}.install_kernel is not: {exc}"
    print(f"registering kernelspec {PEER} under {sys.prefix}", flush=True)
    with contextlib.redirect_stdout(io.StringIO()):  # it narrates every step
        install_kernel.install_my_kernel_spec(user=False, prefix=sys.prefix, notebook_home=None)
    return None if kernel_exists(PEER) else f"registering kernelspec {PEER} failed"


@dataclass
class Kernel:
    """One running kernel and its timings."""

    name: str
    manager: KernelManager
    client: BlockingKernelClient
    start_s: float
    stderr: IO[bytes]
    times: list[float] = field(default_factory=list)
    line: int = 0  # execution_count of the last reply: Mathics3's $Line for rk-local

    def stderr_tail(self, lines: int = 20) -> str:
        self.stderr.seek(0)
        return "\n".join(self.stderr.read().decode(errors="replace").splitlines()[-lines:])


def start(name: str) -> Kernel:
    """Start ``name`` and wait until it answers a first execution (start time includes it)."""
    started = time.perf_counter()
    stderr = tempfile.TemporaryFile()  # kernel logs: shown only when something fails
    manager = KernelManager(kernel_name=name)
    manager.start_kernel(stderr=stderr)
    client = manager.client()
    client.start_channels()
    kernel = Kernel(name, manager, client, 0.0, stderr)
    try:
        client.wait_for_ready(timeout=START_TIMEOUT)
        round_trip(kernel, timeout=START_TIMEOUT)
    except BaseException:
        stop(kernel)
        print(f"{name} failed to start; its stderr:\n{kernel.stderr_tail()}", file=sys.stderr)
        raise
    kernel.start_s = time.perf_counter() - started
    return kernel


def stop(kernel: Kernel) -> None:
    kernel.client.stop_channels()
    try:
        kernel.manager.shutdown_kernel(now=False)
    except Exception:  # a kernel that does not shut down cleanly still must go
        kernel.manager.shutdown_kernel(now=True)
    finally:
        kernel.stderr.close()


def round_trip(kernel: Kernel, code: str = "1", timeout: float = REPLY_TIMEOUT) -> float:
    """Seconds from execute_request to execute_reply + iopub idle; checks the result."""
    client = kernel.client
    started = time.perf_counter()
    msg_id = client.execute(code)
    result: Any = None
    while True:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "execute_result":
            result = msg["content"]["data"].get("text/plain")
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            break
    while True:
        reply = client.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    elapsed = time.perf_counter() - started
    if reply["content"]["status"] != "ok" or result != code:
        raise RuntimeError(f"{kernel.name}: {code} gave {result!r} ({reply['content']}); "
                           f"its stderr:\n{kernel.stderr_tail()}")
    kernel.line = reply["content"].get("execution_count") or 0
    return elapsed


def timed_cell(kernel: Kernel, code: str) -> tuple[float, int]:
    """Seconds from execute_request to iopub idle + execute_reply, and the length of the
    result's text/plain (0 when there is none)."""
    client = kernel.client
    started = time.perf_counter()
    msg_id = client.execute(code)
    size = 0
    while True:
        msg = client.get_iopub_msg(timeout=REPLY_TIMEOUT)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "execute_result":
            size = len(msg["content"]["data"].get("text/plain", "").encode())
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    while client.get_shell_msg(timeout=REPLY_TIMEOUT)["parent_header"].get("msg_id") != msg_id:
        pass
    return time.perf_counter() - started, size


def large_output(kernel: Kernel, runs: int) -> None:
    """The large-result section (see the module's docstring)."""
    timed_cell(kernel, LARGE + ";")  # Mathics3's first Range of a size is slower: warm it
    shown = [timed_cell(kernel, LARGE) for _ in range(runs)]
    bare = [timed_cell(kernel, LARGE + ";")[0] for _ in range(runs)]
    median = statistics.median(t for t, _ in shown)
    base = statistics.median(bare)
    print(f"{LARGE}: median {median:.3f} s to the notebook, {shown[-1][1]} B of text/plain; "
          f"baseline {LARGE}; (no output) {base:.3f} s, output costs {median - base:.3f} s")
    print(f"goal {LARGE} in the notebook ≤ {LARGE_GOAL:g} s: {median:.3f} s -> "
          f"{'met' if median <= LARGE_GOAL else 'MISSED'}")


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed executions per kernel")
    parser.add_argument("--warmup", type=int, default=5, help="untimed executions first")
    parser.add_argument("--large-runs", type=int, default=3,
                        help=f"timed executions of {LARGE}")
    parser.add_argument("--no-install", action="store_true",
                        help=f"do not pip-install {PEER_PACKAGE} when it is missing")
    args = parser.parse_args(argv)

    print(f"execute round trip of `1`, warm, {args.runs} runs each, kernels alternating; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    names = [OURS]
    why_not = ensure_peer(not args.no_install)
    if why_not:
        print(f"peer kernel unavailable: {why_not}")
    else:
        names.append(PEER)
    if not kernel_exists(OURS):
        print(f"kernelspec {OURS} is not installed; run: make install")
        return 0

    kernels: list[Kernel] = []
    try:
        for name in names:
            kernels.append(start(name))
        for kernel in kernels:
            for _ in range(args.warmup):
                round_trip(kernel)
        for _ in range(args.runs):
            for kernel in kernels:
                kernel.times.append(round_trip(kernel))
        large_output(kernels[0], args.large_runs)
    finally:
        for kernel in kernels:
            stop(kernel)

    header = (f"{'kernel':<17} {'start s':>8} {'min ms':>7} {'median ms':>10} {'p90 ms':>7} "
              f"{'max ms':>7} {'last In[n]':>10}")
    print(header)
    print("-" * len(header))
    for k in kernels:
        print(f"{k.name:<17} {k.start_s:>8.1f} {min(k.times) * 1e3:>7.2f} "
              f"{statistics.median(k.times) * 1e3:>10.2f} {p90(k.times) * 1e3:>7.2f} "
              f"{max(k.times) * 1e3:>7.2f} {k.line:>10}")
    if len(kernels) < 2:
        print("goal not measured: no peer kernel")
        return 0
    ours, peer = kernels
    ratio = statistics.median(ours.times) / statistics.median(peer.times)
    print(f"ratio {OURS}/{PEER}: median {ratio:.2f}, p90 {p90(ours.times) / p90(peer.times):.2f}")
    print(f"goal: median ratio ≤ {GOAL}: {'MET' if ratio <= GOAL else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
