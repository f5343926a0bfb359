"""Benchmark a kernel that launches itself (VS Code, Positron) against the provisioner's launch.

Run as ``python benchmarks/bench_selflaunch.py`` (``--help`` for options).  One measure: the
time to the first result, from the start of the launch to holding the execute_result of ``1``
(what a user waits for after opening a notebook):

- provisioner: jupyter_client's KernelManager starts the kernelspec (its provisioner launches
  the agent and engine, then the kernel process), as JupyterLab does;
- self-launch: the kernelspec's argv run directly with ``{connection_file}`` substituted, as
  VS Code and Positron do; the kernel process launches the agent and engine itself.

Both on the same kernelspecs (written by ``rk-jupyter add`` into a Jupyter tree of this run's
own), alternately, ``--runs`` times each, locally (rk-local, Mathics3) and over SSH on the
OpenSSH test bed (tests/sshbed.py; skipped with the reason when the bed cannot start).  Goal:
median(self-launch) ≤ 1.1 × median(provisioner) on each.  Exit status 0 whenever it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

GOAL = 1.1
TIMEOUT = 180.0
CONNECTION_DIR = tempfile.mkdtemp(prefix="rkj-bench-editor-")


def use_private_jupyter() -> str:
    root = tempfile.mkdtemp(prefix="rkj-bench-self-")
    os.environ.update({"JUPYTER_PATH": f"{root}/share/jupyter",
                       "JUPYTER_RUNTIME_DIR": f"{root}/runtime",
                       "JUPYTER_DATA_DIR": f"{root}/data"})
    return root


def seconds_to_first_result(client: Any, started: float) -> float:
    """Start ``client``'s channels, wait for the kernel, evaluate ``1``: the seconds since
    ``started`` until its result is in."""
    from kernel_helpers import execute

    client.start_channels()
    client.wait_for_ready(timeout=TIMEOUT)
    run = execute(client, "1", timeout=TIMEOUT)
    assert run.results()[0]["data"]["text/plain"] == "1", run.outputs
    return time.perf_counter() - started


def by_provisioner(spec: str) -> float:
    """KernelManager start → first result; the kernel is shut down after the clock stops."""
    from jupyter_client.manager import KernelManager

    started = time.perf_counter()
    km = KernelManager(kernel_name=spec)
    km.start_kernel()
    kc = km.client()
    try:
        return seconds_to_first_result(kc, started)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def by_itself(spec: str) -> float:
    """The argv run directly → first result; then a shutdown_request (and a kill should the
    process linger: the clock has stopped by then)."""
    from jupyter_client import BlockingKernelClient
    from jupyter_client.connect import write_connection_file
    from jupyter_client.kernelspec import KernelSpecManager

    started = time.perf_counter()
    resource_dir = KernelSpecManager().get_kernel_spec(spec).resource_dir
    with open(os.path.join(resource_dir, "kernel.json")) as handle:
        kernel_json = json.load(handle)
    connection_file, _ = write_connection_file(  # the editor's own directory for them
        os.path.join(CONNECTION_DIR, f"kernel-bench-{time.monotonic_ns()}.json"))
    argv = [a.replace("{connection_file}", connection_file) for a in kernel_json["argv"]]
    proc = subprocess.Popen(argv, env={**os.environ, **kernel_json.get("env", {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kc = BlockingKernelClient()
    kc.load_connection_file(connection_file)
    try:
        return seconds_to_first_result(kc, started)
    finally:
        kc.shutdown()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:  # ipykernel's shutdown race: the engine has ended
            proc.kill()
            proc.wait()
        kc.stop_channels()


def compare(label: str, spec: str, runs: int) -> list[str]:
    """Alternate the two launches ``runs`` times each (after one warm-up of each)."""
    ways: dict[str, Callable[[str], float]] = {"provisioner": by_provisioner,
                                               "self-launch": by_itself}
    for way in ways.values():
        way(spec)  # warm-up: imports, page cache, an ssh master's first connection
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(runs):
        for name, way in ways.items():
            times[name].append(way(spec))
    med = {name: statistics.median(values) for name, values in times.items()}
    ratio = med["self-launch"] / med["provisioner"]
    rows = [f"{name:<12} median {med[name]:.2f} s (min {min(v):.2f}, max {max(v):.2f}, "
            f"{len(v)} runs)" for name, v in times.items()]
    rows.append(f"goal: {label} self-launch/provisioner ≤ {GOAL}: {ratio:.3f} -> "
                f"{'met' if ratio <= GOAL else 'MISSED'}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="launches of each kind per place")
    args = parser.parse_args(argv)
    root = use_private_jupyter()

    from rk_jupyter.cli import main as cli

    assert cli(["add", "local", "--local", "--engine", "mathics", "--prefix", root]) == 0
    print("1. local (rk-local, Mathics3): time to first result")
    for row in compare("local", "rk-local", args.runs):
        print("  " + row, flush=True)

    from sshbed import SSHBed, unavailable_reason

    print("\n2. over SSH (the OpenSSH test bed, ssh_client auto): time to first result")
    reason = unavailable_reason()
    if reason:
        print(f"  skipped: {reason}")
        return 0
    os.environ.pop("SSH_AUTH_SOCK", None)
    with SSHBed(users=["rkjtest"]) as bed:
        assert cli(["add", "bench", "--host", f"{bed.user}@{bed.host}:{bed.port}",
                    "--identity", bed.key_file, "--known-hosts", bed.known_hosts,
                    "--remote-python", bed.remote_python, "--prefix", root]) == 0
        for row in compare("ssh", "rk-bench", args.runs):
            print("  " + row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
