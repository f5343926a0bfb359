"""Benchmark kernels whose engine runs in a Slurm job (issue 13) against the same engine on the
login node, in one run on the real Slurm test bed (tests/slurmbed.py: slurmctld and two
one-CPU slurmd beside the SSH test bed's sshd, which is the login node).

Run as ``python benchmarks/bench_slurm.py`` (``--help`` for options); root, like the beds.
Kernelspecs are written by ``rk-jupyter add`` into a Jupyter tree of this run's own and driven
by jupyter_client as JupyterLab does.  Three measures, each with its baseline from this run:

1. cell round trip (execute of ``1`` → its reply), median of ``--cells`` cells: engine on a
   compute node (``--slurm``) against the same engine on the login node, started cold as a
   Slurm engine is (``warm: false``; the login node's forked engine is shown too).
   Goal: ≤ login node + 1 ms.
2. restart (``restart_kernel`` → result of ``1``), median of ``--runs``: a Slurm kernel
   against a login-node kernel whose engine is started cold (``warm: false``: a Slurm engine
   is never a fork), i.e. the engine's own start.  Goal: ≤ engine start + 0.5 s.  A restart
   keeps the kernel's job (its worker starts afresh in the same step), so no queue is
   involved whether the cluster is busy or not.
3. queue: both nodes taken, a kernel starts with its job PENDING, a cell waits; a node frees
   up (scancel of a filler) → the cell's result, against the start of a Slurm kernel on an
   idle cluster (start → result of ``1``).  Goal: ≤ that start (the wait costs nothing once
   the node is free).

Exit status 0 whenever it ran (a missed goal is reported, not a failure).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

OPTIONS = "--partition=debug --time=5 --cpus-per-task=1"
USER = "rkjslurm"
TIMEOUT = 120.0
ROUND_TRIP_GOAL = 0.001  # s more than on the login node
RESTART_GOAL = 0.5  # s more than the engine's start
rows: list[str] = []


def report(line: str) -> None:
    rows.append(line)
    print(line, flush=True)


def verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def use_private_jupyter() -> str:
    root = tempfile.mkdtemp(prefix="rkj-bench-slurm-")
    os.environ.update({"JUPYTER_PATH": f"{root}/share/jupyter",
                       "JUPYTER_RUNTIME_DIR": f"{root}/runtime",
                       "JUPYTER_DATA_DIR": f"{root}/data"})
    return root


def result_of_one(kc: Any) -> None:
    from kernel_helpers import execute

    run = execute(kc, "1", timeout=TIMEOUT)
    assert run.results()[0]["data"]["text/plain"] == "1", run.outputs


def start(spec: str) -> tuple[Any, Any, float]:
    """(manager, client, seconds from start to the result of 1)."""
    from jupyter_client.manager import start_new_kernel

    started = time.perf_counter()
    km, kc = start_new_kernel(kernel_name=spec, startup_timeout=TIMEOUT)
    result_of_one(kc)
    return km, kc, time.perf_counter() - started


def stop(km: Any, kc: Any) -> None:
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def round_trips(kc: Any, cells: int) -> list[float]:
    times = []
    for _ in range(cells):
        started = time.perf_counter()
        kc.execute("1")
        kc.get_shell_msg(timeout=TIMEOUT)  # the reply; iopub is drained below
        times.append(time.perf_counter() - started)
    while True:
        try:
            kc.get_iopub_msg(timeout=0.2)
        except Exception:
            break
    return times


def restarts(km: Any, kc: Any, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=TIMEOUT)
        result_of_one(kc)
        times.append(time.perf_counter() - started)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    root = use_private_jupyter()
    os.environ.pop("SSH_AUTH_SOCK", None)

    from slurmbed import SlurmBed, missing_programs
    from sshbed import SSHBed, unavailable_reason

    reason = unavailable_reason() or (", ".join(missing_programs()) and
                                      f"missing {', '.join(missing_programs())}")
    if reason:
        print(f"skipped: {reason}")
        return 0
    print(f"Slurm kernels vs the login node (load {os.getloadavg()[0]:.2f})")
    with SSHBed(users=[USER]) as ssh, SlurmBed(ssh) as bed:
        from kernel_helpers import add_remote_spec

        login = add_remote_spec(ssh, root, "bslogin")
        cold = add_remote_spec(ssh, root, "bscold", engine_options={"warm": False})
        node = add_remote_spec(ssh, root, "bsnode", f"--slurm={OPTIONS}")

        # 1. round trip, alternately in blocks so that drift hits each alike; the baseline is
        # the same worker on the login node started cold, as a Slurm engine's is (a forked
        # one, the login node's default, is shown too)
        kernels = {"node": start(node), "cold": start(cold), "login": start(login)}
        got: dict[str, list[float]] = {name: [] for name in kernels}
        for _, kc, _ in kernels.values():
            round_trips(kc, 20)  # warm up
        block = max(1, args.cells // 6)
        for _ in range(6):
            for name, (_, kc, _) in kernels.items():
                got[name] += round_trips(kc, block)
        rt = {name: median(times) * 1e3 for name, times in got.items()}
        print(f"1. cell round trip, median of {len(got['node'])}: login node {rt['cold']:.2f} "
              f"ms (cold worker; forked {rt['login']:.2f} ms), compute node {rt['node']:.2f} ms")
        report(f"goal: compute node ≤ login node + {ROUND_TRIP_GOAL * 1e3:.0f} ms: "
               f"+{rt['node'] - rt['cold']:.2f} ms -> "
               f"{verdict(rt['node'] - rt['cold'] <= ROUND_TRIP_GOAL * 1e3)}")

        # 2. restart: the Slurm kernel's against the cold engine's on the login node
        km_n, kc_n, _ = kernels["node"]
        km_c, kc_c, _ = kernels["cold"]
        node_restarts = restarts(km_n, kc_n, args.runs)
        cold_restarts = restarts(km_c, kc_c, args.runs)
        for km, kc, _ in kernels.values():
            stop(km, kc)
        bed.wait_no_jobs(30)
        print(f"2. restart → result of 1, median of {args.runs}: engine start (cold, login "
              f"node) {median(cold_restarts):.2f} s, Slurm kernel {median(node_restarts):.2f} s"
              f"   runs {[round(t, 2) for t in node_restarts]}")
        over = median(node_restarts) - median(cold_restarts)
        report(f"goal: Slurm restart ≤ engine start + {RESTART_GOAL} s: {over:+.2f} s -> "
               f"{verdict(over <= RESTART_GOAL)}")

        # 3. the queue: start on an idle cluster (baseline), then a node freeing up
        starts = []
        for _ in range(args.runs):
            km, kc, took = start(node)
            starts.append(took)
            stop(km, kc)
            bed.wait_no_jobs(30)
        fillers = []
        for _ in bed.nodes:
            out = ssh.run_remote("sbatch --parsable --job-name=rkj-filler --time=5 "
                                 "--output=/dev/null --wrap='sleep 300'")
            fillers.append(out.stdout.strip())
        deadline = time.monotonic() + 30
        while [j["state"] for j in bed.jobs("rkj-filler")] != ["RUNNING", "RUNNING"]:
            assert time.monotonic() < deadline, bed.jobs()
            time.sleep(0.2)
        km, kc = start_queued(node)
        try:
            from kernel_helpers import collect

            msg_id = kc.execute("1")
            time.sleep(3.0)  # the cell waits, showing the queue
            freed = time.perf_counter()
            bed.run(["scancel", fillers[0]])
            run = collect(kc, msg_id, timeout=TIMEOUT)
            waited = time.perf_counter() - freed
            assert run.results()[0]["data"]["text/plain"] == "1", run.outputs
        finally:
            stop(km, kc)
            bed.run(["scancel", *fillers])
            bed.wait_no_jobs(30)
        print(f"3. a node frees up → the queued cell's result {waited:.2f} s; start of a Slurm "
              f"kernel on an idle cluster {median(starts):.2f} s   runs "
              f"{[round(t, 2) for t in starts]}")
        report(f"goal: queued cell ≤ a start on an idle cluster: {waited:.2f} s vs "
               f"{median(starts):.2f} s -> {verdict(waited <= median(starts))}")
    print("\n".join(["summary:", *rows]))
    return 0


def start_queued(spec: str) -> tuple[Any, Any]:
    """A kernel whose job is queued: it starts without waiting for the job."""
    from jupyter_client.manager import start_new_kernel

    return start_new_kernel(kernel_name=spec, startup_timeout=TIMEOUT)


if __name__ == "__main__":
    sys.exit(main())
