"""Chaos test (issue 22): many kernels of one SSH kernelspec, a stream of checked cells each,
and a fault every few seconds; at the end a summary of what was lost, doubled, hung, left dead
and left behind.

Why: each fault type has its own test elsewhere, one kernel at a time; what a cluster user
meets is all of them at once, on a host shared by many kernels (one SSH connection and one
agent per host).  This harness runs that day in miniature, on the real test bed
(``tests/sshbed.py``: a real sshd in a network namespace, reached through a ShapingProxy so
that the network can be cut), with real kernels started as JupyterLab starts them
(jupyter_client's AsyncKernelManager with the rk provisioner, in this process, which plays the
Jupyter server).

Run it::

    python tests/chaos.py --kernels 3 --minutes 1 --every 8       # the short version (CI)
    python tests/chaos.py --kernels 20 --minutes 10 --every 10    # make soak

(as root: the bed makes accounts and a namespace).  The last line printed is the summary,
``SUMMARY_RE`` parses it; the exit status is 0 only when lost, doubled, hung, dead and
leftovers are all 0 and every fault type asked for was injected and proven at least once.

**Cells.** Kernel k's c-th cell is ``Print["kK-cC-a"]; Pause[P]; Print["kK-cC-b"];
{1000*K+C, $ProcessID}``: two prints and a result, all checkable, and the result names the
engine process that ran it (how an engine is found "by its session": the harness asks the
kernel's own engine, then checks on the remote host that the pid is a Mathics3 worker of the
bed's user).  One cell in flight per kernel, ``--pace`` s between cells.  Every iopub and
shell message that comes back is routed to its cell by its parent's msg_id, also when it comes
late, so a repeat is seen wherever it lands.

**Outcomes of a cell** (a cell can be lost and doubled at once; each is counted):

- *complete*: an ``ok`` reply, both prints and exactly one result with the cell's value, in
  that order, nothing else on stdout (stderr is free: the product says on it that an engine or
  agent was replaced).
- *expected error*: an ``error`` reply whose ename names a fault that hit this cell: the
  fault's type lists the ename (``EXPECTED``: EngineEnded after an engine or agent kill,
  EngineStopped while the engine is SIGSTOPped), the fault hit this cell's kernel (an agent
  kill hits every kernel; an engine kill or stop only its own), the cell was sent before the
  fault ended plus ``SLACK`` s and answered after it began.  What came before the error must
  be a prefix of the cell's output (a print cut short is fine, a foreign line is not).
  SSH kills and network cuts expect no errors at all: the link resends, nothing may be lost.
- *lost*: any other answer: an error reply no fault explains (LinkDown, EngineStartFailed, an
  EngineEnded long after the kill, ...), an ok reply with a print or the result missing, out
  of order, or with foreign output, or no idle status after the reply.
- *doubled*: any print, result or reply that came more than once.
- *hung*: no reply within ``--hang-after`` s.  The kernel then waits for it (a shell runs one
  request at a time) until the end of the run; if it never comes the kernel is dead too.

**Dead kernels.** After the fault phase every kernel runs one more cell (a probe) with
``--dead-after`` s to complete it; a kernel is dead when its probe does not complete, when
jupyter_client says its process is not alive (nothing restarts it here), or when it never
started.  Probe cells count in ``cells`` only when they complete; a failed probe counts only
as the dead kernel.

**Faults**, one every ``--every`` s, cycling through ``--faults`` in order (default
``DEFAULT_CYCLE``: the agent kill last), each proven by its effect before it counts (an
unproven one is listed and makes the run fail):

- ``engine-kill``: SIGKILL of one kernel's Mathics3 worker (its pid from the kernel's last
  result, checked to be a worker on the remote); proof: the pid is gone.
- ``agent-kill``: SIGKILL of the agent (every ``--token-stdin`` process of the user on the
  remote: there should be one); proof: the pid is gone.
- ``ssh-kill``: the SSH connection killed, alternately by SIGKILL of the sshd processes that
  hold its socket (``ss -p`` on the remote) and by ``ss -K`` on the remote's established
  port-22 sockets; proof: the connection's 4-tuple is no longer established on the remote
  (and every killed pid is gone).
- ``cut``: the ShapingProxy in front of sshd forwards nothing for ``--cut`` s (no FIN, no
  RST); proof: its byte counters did not move during the cut while bytes were offered (queued
  in its sockets, seen by ``ss``), and after the restore they move again.
- ``stop``: SIGSTOP of one kernel's worker for ``--stop`` s, then SIGCONT; proof: the process
  state read T while stopped and not after.

**Leftovers.** After the probes every kernel is shut down as JupyterLab does (graceful, then
``now``); then, within ``--leftover-wait`` s, nothing new may remain: on the remote host no
process of the bed's user (agent, Mathics3 worker, ``sshd: USER`` session, anything), on this
side no descendant of this process (kernels, ssh masters and mux clients, local agents) nor
any process carrying this run's Jupyter runtime directory in its environment.

**Report.** Every failure names the kernel, the cell, the ename/evalue or what was missing,
and the fault before it (type, number, target, seconds since it); each fault is listed with
its proof and the outcomes of the cells it was followed by; ``--report FILE`` writes all of it
as JSON.  On failure the Jupyter runtime directory (the kernels' launch logs ``rk-<id>.log``
and the agents' logs ``rk-ssh-*.log``) is kept and its path printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for _path in (str(HERE.parent), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from jupyter_client.manager import AsyncKernelManager  # noqa: E402

from rk_jupyter.client.environment import LOG_LEVEL_ENV  # noqa: E402

from kernel_helpers import children_of, cmdline, pid_alive  # noqa: E402
from sshbed import ShapingProxy, SSHBed  # noqa: E402
from test_ssh_reconnect import WORKER, add_spec  # noqa: E402

FAULT_TYPES = ("engine-kill", "agent-kill", "ssh-kill", "cut", "stop")
#: The default cycle: the faults a kernel should shrug off first, the agent kill last, so that
#: the first cycle meets every fault type with healthy kernels even when one type breaks them.
DEFAULT_CYCLE = ("engine-kill", "stop", "cut", "ssh-kill", "agent-kill")
#: The enames a fault of each type may legitimately end a cell with (see the module doc).
EXPECTED: dict[str, frozenset[str]] = {
    "engine-kill": frozenset({"EngineEnded"}),
    "agent-kill": frozenset({"EngineEnded"}),
    "ssh-kill": frozenset(),
    "cut": frozenset(),
    "stop": frozenset({"EngineStopped"}),
}
#: Faults that hit one kernel (the others hit every kernel of the host).
PER_KERNEL = frozenset({"engine-kill", "stop"})
#: A cell sent up to this long after a fault ended may still meet it (the product needs a
#: moment to notice a dead process); later, its error is not the fault's.
SLACK = 3.0
AGENT = r"--token-stdin"
PROOF_TIMEOUT = 10.0  # every proof waits at most this long for its effect
PICK_WAIT = 20.0  # how long an engine fault waits for a kernel whose engine is known
SUMMARY_RE = re.compile(
    r"^chaos: kernels=(?P<kernels>\d+) faults=(?P<faults>\d+) \((?P<by_type>[^)]*)\) "
    r"unproven=(?P<unproven>\d+) cells=(?P<cells>\d+) lost=(?P<lost>\d+) "
    r"doubled=(?P<doubled>\d+) hung=(?P<hung>\d+) dead=(?P<dead>\d+) "
    r"leftovers=(?P<leftovers>\d+)$")


def _now() -> float:
    return time.monotonic()


# -- records ---------------------------------------------------------------------------------


@dataclass
class Fault:
    """One injected fault: what, on what, when (run clock), and how its effect was proven."""

    n: int
    kind: str
    start: float
    end: float = 0.0
    kernel: int | None = None  # the kernel it targets (engine-kill, stop)
    target: str = ""  # pids, connection, duration
    proven: bool = False
    proof: str = ""

    def hits(self, kernel: int) -> bool:
        return self.kind not in PER_KERNEL or self.kernel == kernel

    def label(self) -> str:
        on = f" k{self.kernel}" if self.kernel is not None else ""
        return f"{self.kind}#{self.n}{on}"


@dataclass
class Cell:
    """One execute request and every message that came back for it."""

    kernel: int
    n: int
    code: str
    sent: float
    probe: bool = False
    msg_id: str = ""
    outputs: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    replies: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    idles: list[float] = field(default_factory=list)
    hung_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # judged:
    complete: bool = False
    expected: bool = False
    lost: str = ""
    doubled: str = ""
    hung: bool = False

    @property
    def name(self) -> str:
        return f"k{self.kernel}-c{self.n}"

    @property
    def value(self) -> int:
        return 1000 * self.kernel + self.n

    @property
    def replied(self) -> float | None:
        return self.replies[0][0] if self.replies else None

    @property
    def reply(self) -> dict[str, Any] | None:
        return self.replies[0][1] if self.replies else None

    def engine_pid(self) -> int | None:
        """The pid in the cell's result ``{value, pid}``, if it completed."""
        for _, kind, content in self.outputs:
            if kind == "execute_result":
                m = re.fullmatch(r"\{(\d+), (\d+)\}", content.get("data", {}).get(
                    "text/plain", ""))
                if m and int(m.group(1)) == self.value:
                    return int(m.group(2))
        return None

    def ended(self) -> float:
        return self.replied if self.replied is not None else (self.hung_at or _now())


def cell_code(kernel: int, n: int, pause: float) -> str:
    return (f'Print["k{kernel}-c{n}-a"]; Pause[{pause:g}]; Print["k{kernel}-c{n}-b"]; '
            f'{{{1000 * kernel + n}, $ProcessID}}')


def judge(cell: Cell, faults: list[Fault]) -> None:
    """Set the cell's outcome (see the module doc for the definitions)."""
    want = [f"{cell.name}-a", f"{cell.name}-b"]
    lines: list[str] = []
    order: list[str] = []  # "a", "b", "result" in arrival order
    results: list[str] = []
    for _, kind, content in cell.outputs:
        if kind == "stream" and content.get("name") == "stdout":
            for line in content.get("text", "").splitlines():
                lines.append(line)
                if line in want:
                    order.append(line[-1])
        elif kind == "execute_result":
            results.append(content.get("data", {}).get("text/plain", ""))
            order.append("result")
        elif kind == "display_data":
            lines.append(f"<display {sorted(content.get('data', {}))}>")
    counts = Counter(lines)
    doubled = [f"{line} x{k}" for line, k in counts.items() if line in want and k > 1]
    if len(results) > 1:
        doubled.append(f"{len(results)} results")
    if len(cell.replies) > 1:
        doubled.append(f"{len(cell.replies)} replies")
    cell.doubled = ", ".join(doubled)
    foreign = [line for line in lines if line not in want]
    reply = cell.reply
    if reply is None:
        cell.hung = True
        return
    status = reply.get("status")
    problems: list[str] = []
    if foreign:
        problems.append(f"foreign output {foreign[:3]}")
    if not cell.idles:
        problems.append("no idle status after the reply")
    if status == "ok":
        missing = [w for w in want if w not in counts]
        if missing:
            problems.append(f"missing {missing}")
        if not results:
            problems.append("no result")
        elif not re.fullmatch(rf"\{{{cell.value}, \d+\}}", results[0]):
            problems.append(f"wrong result {results[0]!r}")
        dedup = list(dict.fromkeys(order))
        if not missing and results and dedup != ["a", "b", "result"]:
            problems.append(f"out of order {order}")
        cell.complete = not problems and not cell.doubled
    elif status == "error":
        ename = reply.get("ename", "")
        if any(_explains(f, cell, ename) for f in faults):
            dedup = list(dict.fromkeys(order))
            if results or dedup != ["a", "b"][:len(dedup)]:
                problems.append(f"output before the error is not a prefix: {order}")
            cell.expected = not problems
        else:
            problems.append(f"{ename}: {_short(reply.get('evalue', ''))}")
    else:
        problems.append(f"reply status {status!r}")
    cell.lost = "; ".join(problems)


def _explains(fault: Fault, cell: Cell, ename: str) -> bool:
    replied = cell.replied or _now()
    return (ename in EXPECTED[fault.kind] and fault.hits(cell.kernel)
            and cell.sent <= (fault.end or _now()) + SLACK and replied >= fault.start)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


# -- one kernel ------------------------------------------------------------------------------


class KernelRun:
    """One kernel: its manager and client, its cells, and the tasks that read its channels."""

    def __init__(self, index: int, spec: str, clock: Clock) -> None:
        self.index = index
        self.spec = spec
        self.clock = clock
        self.km: AsyncKernelManager | None = None
        self.kc: Any = None
        self.kernel_id = ""
        self.start_error = ""
        self.start_seconds = 0.0
        self.cells: list[Cell] = []
        self.by_msg: dict[str, Cell] = {}
        self.engine_pid: int | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.abandon = asyncio.Event()  # stop waiting for a hung cell
        self.dead = ""  # why the kernel counts as dead
        self.stray = 0  # messages for no cell of ours

    async def start(self, timeout: float) -> None:
        started = _now()
        self.km = AsyncKernelManager(kernel_name=self.spec)
        try:
            await asyncio.wait_for(self.km.start_kernel(), timeout)
            self.kernel_id = self.km.kernel_id or ""
            self.kc = self.km.client()
            # No heartbeat channel: its thread can block for ever in a send to a dead
            # kernel, and stop_channels then joins it for ever (seen in the first soak);
            # is_alive asks the manager (the provisioner) anyway, as JupyterLab's server does.
            self.kc.start_channels(hb=False)
            await asyncio.wait_for(self.kc.wait_for_ready(timeout=timeout), timeout + 5)
        except BaseException as exc:  # noqa: BLE001 - a failed start is a result, not a crash
            if isinstance(exc, asyncio.CancelledError):
                raise
            self.start_error = f"{type(exc).__name__}: {_short(str(exc), 600)}"
            self.kernel_id = self.kernel_id or getattr(self.km, "kernel_id", "") or ""
            return
        finally:
            self.start_seconds = _now() - started
        self.tasks = [asyncio.create_task(self._read(self.kc.get_iopub_msg, "iopub")),
                      asyncio.create_task(self._read(self.kc.get_shell_msg, "shell"))]

    async def _read(self, get: Any, channel: str) -> None:
        """Route every message of a channel to its cell, for the kernel's whole life."""
        while True:
            try:
                msg = await get(timeout=0.5)
            except queue.Empty:
                continue
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - channels closed at shutdown
                await asyncio.sleep(0.5)
                continue
            t = self.clock()
            cell = self.by_msg.get(msg.get("parent_header", {}).get("msg_id", ""))
            kind = msg.get("msg_type", "")
            if cell is None:
                if kind in ("stream", "execute_result", "error", "execute_reply"):
                    self.stray += 1
                continue
            if channel == "shell":
                if kind == "execute_reply":
                    cell.replies.append((t, msg["content"]))
            elif kind == "status":
                if msg["content"].get("execution_state") == "idle":
                    cell.idles.append(t)
            elif kind in ("stream", "execute_result", "display_data", "error"):
                cell.outputs.append((t, kind, msg["content"]))
            if cell.replies and cell.idles:
                cell.done.set()

    def send(self, pause: float, probe: bool = False) -> Cell:
        n = len(self.cells) + 1
        cell = Cell(self.index, n, cell_code(self.index, n, pause), self.clock(), probe=probe)
        cell.msg_id = self.kc.execute(cell.code)
        self.by_msg[cell.msg_id] = cell
        self.cells.append(cell)
        return cell

    async def wait(self, cell: Cell, hang_after: float) -> None:
        """Wait for the cell's reply and idle; past ``hang_after`` mark it hung, then go on
        waiting (the kernel's shell is busy with it) until it comes or ``abandon``."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(cell.done.wait(), hang_after)
            return
        cell.hung_at = self.clock()
        done = asyncio.create_task(cell.done.wait())
        give_up = asyncio.create_task(self.abandon.wait())
        await asyncio.wait({done, give_up}, return_when=asyncio.FIRST_COMPLETED)
        for task in (done, give_up):
            task.cancel()

    async def drive(self, stop: asyncio.Event, pause: float, pace: float, hang_after: float,
                    rng: random.Random) -> None:
        """Cells one after another until ``stop``: the kernel's share of the workload."""
        while not stop.is_set():
            cell = self.send(pause)
            await self.wait(cell, hang_after)
            pid = cell.engine_pid()
            if pid is not None:
                self.engine_pid = pid
            if self.abandon.is_set():
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), pace * rng.uniform(0.5, 1.5))

    async def probe(self, pause: float, bound: float) -> Cell | None:
        """The last cell: does this kernel still complete a cell within ``bound`` s?"""
        if self.kc is None:
            self.dead = f"never started: {self.start_error}"
            return None
        if not await self.km.is_alive():
            self.dead = "jupyter_client: the kernel process is not alive (not restarted)"
            return None
        cell = self.send(pause, probe=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(cell.done.wait(), bound)
        return cell

    async def shutdown(self) -> str:
        """Shut the kernel down as JupyterLab does; '' or what went wrong."""
        problem = ""
        for task in self.tasks:
            task.cancel()
        if self.kc is not None:
            await _bounded_in_thread(self.kc.stop_channels, 10)
        if self.km is None or not self.km.has_kernel:
            return problem
        try:
            await asyncio.wait_for(self.km.shutdown_kernel(now=False), 60)
        except BaseException as exc:  # noqa: BLE001
            problem = f"graceful shutdown failed: {type(exc).__name__}: {_short(str(exc))}"
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self.km.shutdown_kernel(now=True), 30)
        return problem


async def _bounded_in_thread(fn: Any, timeout: float) -> bool:
    """Run a blocking call in a daemon thread and wait at most ``timeout`` s for it (a
    thread of asyncio's executor that never returns would hold up asyncio.run's end)."""
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def target() -> None:
        with contextlib.suppress(Exception):
            fn()
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=target, name="chaos-bounded", daemon=True).start()
    try:
        await asyncio.wait_for(done.wait(), timeout)
        return True
    except asyncio.TimeoutError:
        return False


class Clock:
    """Seconds since the run began (all times in records and reports)."""

    def __init__(self) -> None:
        self.t0 = _now()

    def __call__(self) -> float:
        return _now() - self.t0


# -- the remote and local process tables -----------------------------------------------------


def proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "-"


def remote_table(bed: SSHBed) -> dict[int, str]:
    """The bed user's processes on the remote host: pid → command line."""
    return dict(bed.remote_processes())


def remote_kind(cmd: str) -> str:
    if re.search(AGENT, cmd):
        return "agent"
    if re.search(WORKER, cmd):
        return "worker"
    if re.search(r"^sshd:", cmd):
        return "sshd"
    return "other"


def established(bed: SSHBed) -> set[str]:
    """The remote's established port-22 connections, as 'local peer' strings."""
    res = bed.run_in_namespace(["ss", "-Htn", "state", "established",
                                f"( sport = :{bed.port} )"])
    return {" ".join(line.split()[2:4]) for line in res.stdout.splitlines() if line.strip()}


def socket_owners(bed: SSHBed) -> dict[str, list[int]]:
    """The remote's established port-22 connections ('local peer', as ``established``) and
    the pids that hold each one's socket (its sshd processes), but for a connection the
    bed's sshd listener still holds."""
    res = bed.run_in_namespace(["ss", "-Htnp", "state", "established",
                                f"( sport = :{bed.port} )"])
    owners: dict[str, list[int]] = {}
    for line in res.stdout.splitlines():
        fields = line.split()
        pids = [int(pid) for pid in re.findall(r"pid=(\d+)", line)]
        # The listener holds a connection it has just accepted until its child takes it:
        # such a connection is left alone (killing the listener would end the bed).
        if len(fields) >= 4 and pids and bed.sshd_pid not in pids:
            owners[" ".join(fields[2:4])] = pids
    return owners


def local_table(exclude: set[int], runtime_dir: str) -> dict[int, str]:
    """This side's processes of the run: our descendants (minus the bed's sshd and its
    sessions) and any process whose environment names this run's runtime directory."""
    me = os.getpid()
    found = set(children_of(me)) - exclude
    tag = f"JUPYTER_RUNTIME_DIR={runtime_dir}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (me, *exclude):
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if tag in fh.read().split(b"\0"):
                    found.add(int(entry))
    return {pid: cmdline(pid) for pid in found if pid_alive(pid)}


def bed_exclusions(bed: SSHBed) -> set[int]:
    return {bed.sshd_pid, *children_of(bed.sshd_pid)}


def proxy_queued(proxy: ShapingProxy) -> int:
    """Bytes waiting in the proxy's client-side sockets (offered, not forwarded)."""
    res = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{proxy.port} )"],
                         capture_output=True, text=True, timeout=10, check=False)
    total = 0
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            total += int(parts[0])  # Recv-Q: what the client sent and the proxy did not read
    return total


def wait_until(predicate: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = _now() + timeout
    while _now() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


# -- faults ----------------------------------------------------------------------------------


class Injector:
    """Injects the faults and proves each by its effect (blocking parts run in threads)."""

    def __init__(self, bed: SSHBed, proxy: ShapingProxy, kernels: list[KernelRun],
                 clock: Clock, options: argparse.Namespace, rng: random.Random) -> None:
        self.bed = bed
        self.proxy = proxy
        self.kernels = kernels
        self.clock = clock
        self.options = options
        self.rng = rng
        self.faults: list[Fault] = []
        self._next_kernel = 0
        self._ssh_variant = 0
        self.stopped_pid: int | None = None  # to SIGCONT in any case

    async def run(self, begin: float, stop_at: float) -> None:
        """Faults from ``begin`` until ``stop_at`` (run clock), one every ``--every`` s, one
        at a time: a fault that holds (a cut, a stop) delays the next."""
        kinds = self.options.faults
        at = begin + min(self.options.every / 2, 5.0)
        i = 0
        while True:
            now = self.clock()
            if at > stop_at:
                break
            if at > now:
                await asyncio.sleep(at - now)
            fault = Fault(len(self.faults) + 1, kinds[i % len(kinds)], self.clock())
            self.faults.append(fault)
            try:
                await getattr(self, "_" + fault.kind.replace("-", "_"))(fault)
            except Exception as exc:  # noqa: BLE001 - a failed injection is reported
                fault.proof = f"injection failed: {type(exc).__name__}: {exc}"
            fault.end = fault.end or self.clock()
            print(f"  t={fault.start:6.1f}s fault {fault.label()} {fault.target}: "
                  f"{'proven' if fault.proven else 'NOT PROVEN'}: {fault.proof}", flush=True)
            i += 1
            at += self.options.every

    def _pick_engine(self) -> tuple[KernelRun, int] | None:
        """The next kernel (round robin) whose last result named a live worker of the bed;
        waits up to PICK_WAIT s for one (after an agent kill every kernel's engine is new, and
        known only once the kernel completes a cell on it)."""
        deadline = _now() + PICK_WAIT
        while True:
            workers = {pid for pid, _ in self.bed.remote_processes(WORKER)}
            live = [k for k in self.kernels if k.kc is not None]
            for offset in range(len(live)):
                k = live[(self._next_kernel + offset) % len(live)]
                if k.engine_pid in workers:
                    self._next_kernel = (self._next_kernel + offset + 1) % len(live)
                    return k, k.engine_pid
            if _now() > deadline:
                return None
            time.sleep(0.5)

    def _no_engine(self) -> str:
        known = {f"k{k.index}": k.engine_pid for k in self.kernels if k.kc is not None}
        return (f"no kernel's engine is known: for {PICK_WAIT:g}s no kernel completed a cell "
                "on its current engine "
                f"(pids from their last complete cells: {known}; live workers on the remote: "
                f"{[pid for pid, _ in self.bed.remote_processes(WORKER)]})")

    async def _engine_kill(self, fault: Fault) -> None:
        picked = await asyncio.to_thread(self._pick_engine)
        if picked is None:
            fault.proof = self._no_engine()
            return
        kernel, pid = picked
        fault.kernel, fault.target = kernel.index, f"worker pid {pid}"
        waited = self.clock() - fault.start
        fault.start = self.clock()  # the fault is the kill, not the wait for a known engine
        os.kill(pid, signal.SIGKILL)
        gone = await asyncio.to_thread(wait_until, lambda: not pid_alive(pid), PROOF_TIMEOUT)
        fault.end = self.clock()
        fault.proven = gone
        fault.proof = (f"pid {pid} gone {fault.end - fault.start:.2f}s after the kill" if gone
                       else f"pid {pid} still alive ({proc_state(pid)}) after "
                       f"{PROOF_TIMEOUT:g}s") + (f" (waited {waited:.1f}s for a kernel whose "
                                                 "engine is known)" if waited > 1 else "")

    async def _agent_kill(self, fault: Fault) -> None:
        table = await asyncio.to_thread(remote_table, self.bed)
        agents = sorted(pid for pid, cmd in table.items() if remote_kind(cmd) == "agent")
        workers = sum(1 for cmd in table.values() if remote_kind(cmd) == "worker")
        if not agents:
            fault.proof = "no agent on the remote"
            return
        fault.target = f"agent pid {','.join(map(str, agents))} ({workers} workers)"
        for pid in agents:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        gone = await asyncio.to_thread(
            wait_until, lambda: not any(pid_alive(p) for p in agents), PROOF_TIMEOUT)
        fault.end = self.clock()
        fault.proven = gone
        fault.proof = (f"{len(agents)} agent(s) gone after {fault.end - fault.start:.2f}s"
                       + (" (more than one agent on the host)" if len(agents) > 1 else "")
                       if gone else f"agent still alive after {PROOF_TIMEOUT:g}s")

    async def _ssh_kill(self, fault: Fault) -> None:
        before = await asyncio.to_thread(established, self.bed)
        if not before:
            fault.proof = "no established SSH connection on the remote"
            return
        variant = ("sshd", "ss -K")[self._ssh_variant % 2]
        self._ssh_variant += 1
        killed: list[int] = []
        if variant == "sshd":
            # The processes that hold each established connection's socket (``ss -p``): the
            # sshd of a connection whatever its state (a session's monitor and child, or one
            # still authenticating a reconnect).  Counting session processes instead once
            # missed a connection whose sshd was between the two.
            owners = await asyncio.to_thread(socket_owners, self.bed)
            killed = sorted({pid for pids in owners.values() for pid in pids})
            if killed:
                before = set(owners)
                for pid in killed:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                fault.target = f"SIGKILL sshd pid {','.join(map(str, killed))}"
            else:
                variant = "ss -K"
        if variant == "ss -K":
            res = await asyncio.to_thread(self.bed.run_in_namespace, [
                "ss", "-K", "-tn", "state", "established", f"( sport = :{self.bed.port} )"])
            failed = f" (ss: {res.stderr.strip()})" if res.returncode else ""
            fault.target = f"ss -K ({len(before)} connection(s)){failed}"

        def proven() -> bool:
            return (not (before & established(self.bed))
                    and not any(pid_alive(p) for p in killed))

        gone = await asyncio.to_thread(wait_until, proven, PROOF_TIMEOUT, 0.1)
        fault.end = self.clock()
        fault.proven = gone and (variant != "sshd" or bool(killed))
        fault.proof = (f"connection(s) {sorted(before)} no longer established after "
                       f"{fault.end - fault.start:.2f}s" if fault.proven else
                       f"still established: {sorted(before & established(self.bed))}, "
                       f"killed pids alive: {[p for p in killed if pid_alive(p)]}")

    async def _cut(self, fault: Fault) -> None:
        low, high = self.options.cut
        seconds = self.rng.uniform(low, high)
        fault.target = f"{seconds:.1f}s"
        lease = _lease(self.kernels)
        self.proxy.cut()
        try:
            await asyncio.sleep(0.3)  # a chunk read just before the cut may still be counted
            counted = (self.proxy.bytes_up, self.proxy.bytes_down)
            queued = 0
            link_down = False
            deadline = _now() + seconds - 0.3
            while _now() < deadline:
                queued = max(queued, await asyncio.to_thread(proxy_queued, self.proxy))
                link_down = link_down or bool(getattr(getattr(lease, "shared", None),
                                                      "reconnecting_since", None))
                await asyncio.sleep(min(0.5, max(deadline - _now(), 0)))
            still = (self.proxy.bytes_up, self.proxy.bytes_down)
        finally:
            self.proxy.restore()
        fault.end = self.clock()
        moved = await asyncio.to_thread(
            wait_until, lambda: (self.proxy.bytes_up, self.proxy.bytes_down) != still, 15, 0.1)
        fault.proven = still == counted and queued > 0 and moved
        fault.proof = (f"forwarded bytes frozen at {counted} for {seconds:.1f}s "
                       f"{'(unchanged)' if still == counted else f'BUT moved to {still}'}, "
                       f"{queued} bytes offered and held, "
                       f"{'forwarding resumed' if moved else 'NOTHING forwarded after restore'}"
                       f"{', the SSH connection was reconnecting' if link_down else ''}")

    async def _stop(self, fault: Fault) -> None:
        picked = await asyncio.to_thread(self._pick_engine)
        if picked is None:
            fault.proof = self._no_engine()
            return
        kernel, pid = picked
        low, high = self.options.stop
        seconds = self.rng.uniform(low, high)
        fault.kernel, fault.target = kernel.index, f"worker pid {pid} for {seconds:.1f}s"
        fault.start = self.clock()  # the fault is the stop, not the wait for a known engine
        self.stopped_pid = pid
        os.kill(pid, signal.SIGSTOP)
        try:
            stopped = await asyncio.to_thread(wait_until, lambda: proc_state(pid) == "T", 5)
            await asyncio.sleep(seconds)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            self.stopped_pid = None
        fault.end = self.clock()
        resumed = await asyncio.to_thread(
            wait_until, lambda: proc_state(pid) not in ("T", "t"), 5)
        fault.proven = stopped and resumed
        fault.proof = (f"state T while stopped: {'yes' if stopped else 'NO'}; "
                       f"after SIGCONT: {proc_state(pid)}")

    def release(self) -> None:
        """Undo whatever a fault holds (the run is ending, maybe by an error)."""
        self.proxy.restore()
        if self.stopped_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.stopped_pid, signal.SIGCONT)


def _lease(kernels: list[KernelRun]) -> Any:
    """The shared SSH connection's lease (provisioner internals; evidence only)."""
    for k in kernels:
        with contextlib.suppress(AttributeError):
            return k.km.provisioner.transport.lease
    return None


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Result:
    kernels: int
    faults: Counter[str]
    unproven: int
    cells: int
    lost: int
    doubled: int
    hung: int
    dead: int
    leftovers: int
    missing_types: list[str]
    summary: str
    report: str
    seconds: float

    @property
    def ok(self) -> bool:
        return not (self.lost or self.doubled or self.hung or self.dead or self.leftovers
                    or self.unproven or self.missing_types)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=1.0, help="length of the fault phase")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between faults")
    parser.add_argument("--faults", default=",".join(DEFAULT_CYCLE),
                        help=f"comma-separated, cycled in this order; from {FAULT_TYPES}")
    parser.add_argument("--cut", default="3,20", help="min,max seconds of a network cut")
    parser.add_argument("--stop", default="2,6", help="min,max seconds an engine is stopped")
    parser.add_argument("--pace", type=float, default=1.0, help="mean seconds between cells")
    parser.add_argument("--pause", type=float, default=0.3, help="Pause[] between the prints")
    parser.add_argument("--hang-after", type=float, default=60.0)
    parser.add_argument("--dead-after", type=float, default=60.0)
    parser.add_argument("--leftover-wait", type=float, default=20.0)
    parser.add_argument("--start-timeout", type=float, default=240.0)
    parser.add_argument("--grace", type=float, default=60.0, help="kernelspec reconnect_grace")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--report", help="write every record as JSON here")
    parser.add_argument("--kernel-log", default="", metavar="LEVEL",
                        help="the kernels' rk_jupyter records at this level (INFO) on stderr")
    args = parser.parse_args(argv)
    args.faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    bad = [f for f in args.faults if f not in FAULT_TYPES]
    if bad or not args.faults:
        parser.error(f"unknown fault type(s) {bad}; choose from {FAULT_TYPES}")
    args.cut = tuple(float(x) for x in args.cut.split(","))
    args.stop = tuple(float(x) for x in args.stop.split(","))
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    return args


def run(argv: list[str] | None = None, bed: SSHBed | None = None) -> Result:
    """Run the chaos test on ``bed`` (a started SSHBed; one of our own when None)."""
    options = parse_args(argv)
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "JUPYTER_RUNTIME_DIR",
                                            "JUPYTER_DATA_DIR", "SSH_AUTH_SOCK",
                                            LOG_LEVEL_ENV)}
    root = tempfile.mkdtemp(prefix="rkj-chaos-")
    os.environ.update({"JUPYTER_PATH": f"{root}/share/jupyter",
                       "JUPYTER_RUNTIME_DIR": f"{root}/runtime",
                       "JUPYTER_DATA_DIR": f"{root}/data"})
    os.environ.pop("SSH_AUTH_SOCK", None)  # only the keys the kernelspec names
    if options.kernel_log:  # the kernels' reconnects and reopened sessions, on our stderr
        os.environ[LOG_LEVEL_ENV] = options.kernel_log
    own = bed is None
    result: Result | None = None
    try:
        if own:
            bed = SSHBed(users=["rkjtest"]).start()
        assert bed is not None
        result = asyncio.run(_run(options, bed, root))
        return result
    finally:
        if own and bed is not None:
            bed.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if result is not None and result.ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"chaos: logs kept in {root}/runtime (launch logs rk-<kernel id>.log, "
                  "agents' logs rk-ssh-*.log)", flush=True)


async def _run(options: argparse.Namespace, bed: SSHBed, root: str) -> Result:
    began = _now()
    rng = random.Random(options.seed)
    clock = Clock()
    runtime = f"{root}/runtime"
    proxy = bed.proxy(delay_ms=1, rate_bps=None)
    print(f"chaos: seed={options.seed} kernels={options.kernels} minutes={options.minutes:g} "
          f"every={options.every:g}s faults={','.join(options.faults)} bed={bed!r} "
          f"proxy=127.0.0.1:{proxy.port}", flush=True)
    spec = add_spec(bed, root, "chaos", proxy.port, reconnect_grace=options.grace)
    remote_before = set(remote_table(bed))
    local_before = set(local_table(bed_exclusions(bed), runtime))
    kernels = [KernelRun(i, spec, clock) for i in range(1, options.kernels + 1)]
    injector = Injector(bed, proxy, kernels, clock, options, rng)
    peaks: Counter[str] = Counter()
    others: set[str] = set()
    shutdown_problems: list[str] = []
    leftovers: dict[str, dict[int, str]] = {}
    probes: list[Cell | None] = []
    phase: dict[str, float] = {}
    sampler: asyncio.Task[None] | None = None
    try:
        await asyncio.gather(*(k.start(options.start_timeout) for k in kernels))
        phase["start"] = clock()
        failed = [k for k in kernels if k.start_error]
        print(f"chaos: {len(kernels) - len(failed)}/{len(kernels)} kernels started in "
              f"{phase['start']:.1f}s" + "".join(f"\n  k{k.index} start FAILED: {k.start_error}"
                                                 for k in failed), flush=True)
        sampler = asyncio.create_task(_sample(bed, peaks, others))
        stop = asyncio.Event()
        fault_start = clock()
        drivers = [asyncio.create_task(k.drive(stop, options.pause, options.pace,
                                               options.hang_after, rng))
                   for k in kernels if k.kc is not None]
        # Give every kernel a first result (its engine pid) before the faults begin.
        await asyncio.sleep(min(2.0, options.every / 2))
        await injector.run(fault_start, fault_start + options.minutes * 60)
        phase["faults"] = clock()
        stop.set()
        _, pending = await asyncio.wait(drivers, timeout=options.hang_after + 5) if drivers \
            else (set(), set())
        for k in kernels:
            k.abandon.set()
        if pending:
            await asyncio.wait(pending, timeout=5)
        phase["drain"] = clock()
        probes = list(await asyncio.gather(*(k.probe(options.pause, options.dead_after)
                                             for k in kernels)))
        phase["probe"] = clock()
    finally:
        injector.release()
        if sampler is not None:
            sampler.cancel()
        shutdown_problems = [f"k{k.index}: {p}" for k, p in zip(
            kernels, await asyncio.gather(*(k.shutdown() for k in kernels)), strict=True) if p]
        phase["shutdown"] = clock()
        leftovers = await asyncio.to_thread(_leftovers, bed, runtime, remote_before,
                                            local_before, options.leftover_wait)
        phase["leftovers"] = clock()
        proxy.stop()
    return _summarize(options, kernels, injector.faults, probes, leftovers, peaks, others,
                      shutdown_problems, phase, _now() - began)


async def _sample(bed: SSHBed, peaks: Counter[str], others: set[str]) -> None:
    """Peak numbers of agents, workers and sshd sessions on the remote during the run (issue
    22 saw 40 workers and 2 agents for fewer than 20 kernels), and what the others were."""
    while True:
        with contextlib.suppress(Exception):
            table = await asyncio.to_thread(remote_table, bed)
            counts = Counter(remote_kind(cmd) for cmd in table.values())
            for kind, n in counts.items():
                peaks[kind] = max(peaks[kind], n)
            others.update(_short(cmd, 80) for cmd in table.values()
                          if remote_kind(cmd) == "other")
        await asyncio.sleep(3.0)


def _leftovers(bed: SSHBed, runtime: str, remote_before: set[int], local_before: set[int],
               bound: float) -> dict[str, dict[int, str]]:
    """What is still running ``bound`` s after the shutdown, on either side."""
    found: dict[str, dict[int, str]] = {}

    def none_left() -> bool:
        remote = {p: c for p, c in remote_table(bed).items() if p not in remote_before}
        local = {p: c for p, c in local_table(bed_exclusions(bed), runtime).items()
                 if p not in local_before}
        found.update(remote=remote, local=local)
        return not remote and not local

    wait_until(none_left, bound, 0.5)
    return found


def _attribute(t: float, faults: list[Fault], kernel: int | None = None) -> str:
    """The fault before time ``t`` (preferring one that hit ``kernel``), and how long before."""
    before = [f for f in faults if f.start <= t and (kernel is None or f.hits(kernel))]
    if not before:
        return "no fault before it"
    f = before[-1]
    return f"after {f.label()} ({f.target}) at t={f.start:.1f}s, {t - f.start:+.1f}s"


def _runs(group: list[Cell], why: Any, faults: list[Fault], limit: int = 40) -> list[str]:
    """One line per run of consecutive cells of a kernel that failed the same way: which
    cells, when sent and answered, what, and the fault before the first of them."""
    runs: list[list[Cell]] = []
    for c in sorted(group, key=lambda c: (c.kernel, c.n)):
        last = runs[-1][-1] if runs else None
        if last is not None and last.kernel == c.kernel and last.n + 1 == c.n \
                and why(last) == why(c):
            runs[-1].append(c)
        else:
            runs.append([c])
    lines = []
    for run in runs[:limit]:
        first, end = run[0], run[-1]
        cells = first.name if len(run) == 1 else f"{first.name}..c{end.n} ({len(run)} cells)"
        sent = f"{first.sent:.1f}" + (f"..{end.sent:.1f}" if len(run) > 1 else "")
        answered = ", ".join(f"{c.replied:.1f}" for c in (first, end)[:len(run)]
                             if c.replied is not None) or "never"
        lines.append(f"  {cells} sent t={sent}s answered t={answered}s: {why(first)}; "
                     f"{_attribute(first.sent, faults, first.kernel)}")
    if len(runs) > limit:
        lines.append(f"  ... and {len(runs) - limit} more runs")
    return lines


def _summarize(options: argparse.Namespace, kernels: list[KernelRun], faults: list[Fault],
               probes: list[Cell | None], leftovers: dict[str, dict[int, str]],
               peaks: Counter[str], others: set[str], shutdown_problems: list[str],
               phase: dict[str, float], seconds: float) -> Result:
    lines: list[str] = []
    cells = [c for k in kernels for c in k.cells if not c.probe]
    for c in cells:
        judge(c, faults)
    # Probes decide who is dead.
    dead: list[str] = []
    completed_probes = 0
    for k, probe in zip(kernels, probes or [None] * len(kernels), strict=True):
        if probe is not None:
            judge(probe, faults)
            if probe.complete:
                completed_probes += 1
                continue
            k.dead = (f"its last cell {probe.name} did not complete within "
                      f"{options.dead_after:g}s: "
                      + (probe.lost or probe.doubled or "no reply"))
        if not k.dead:
            k.dead = "no probe ran (the run ended early)"
        ok = [c for c in k.cells if c.complete]
        last_ok = f"last complete cell {ok[-1].name} at t={ok[-1].sent:.1f}s" if ok \
            else "no cell ever completed"
        bad = [c for c in k.cells if not c.complete and not c.expected and c is not probe]
        first = (f"; first failure {bad[0].name} at t={bad[0].sent:.1f}s "
                 f"({bad[0].lost or bad[0].doubled or 'hung'}), "
                 f"{_attribute(bad[0].sent, faults, k.index)}") if bad else ""
        dead.append(f"k{k.index} ({k.kernel_id or '-'}): {k.dead}; {last_ok}{first}")
    lost = [c for c in cells if c.lost]
    doubled = [c for c in cells if c.doubled]
    hung = [c for c in cells if c.hung or c.hung_at is not None]
    expected = [c for c in cells if c.expected]
    complete = [c for c in cells if c.complete]
    remote_left = leftovers.get("remote", {})
    local_left = leftovers.get("local", {})
    proven = [f for f in faults if f.proven]
    by_type = Counter(f.kind for f in proven)
    missing_types = [t for t in options.faults if not by_type[t]]
    unproven = [f for f in faults if not f.proven]

    lines.append(f"chaos: phases: kernels ready t={phase.get('start', 0):.1f}s, faults until "
                 f"t={phase.get('faults', 0):.1f}s, drained t={phase.get('drain', 0):.1f}s, "
                 f"probed t={phase.get('probe', 0):.1f}s, shut down "
                 f"t={phase.get('shutdown', 0):.1f}s, leftovers counted "
                 f"t={phase.get('leftovers', 0):.1f}s")
    lines.append(f"chaos: cells {len(cells)}: {len(complete)} complete, {len(expected)} "
                 f"expected errors ({dict(Counter(c.reply['ename'] for c in expected))}), "
                 f"{len(lost)} lost, {len(doubled)} doubled, {len(hung)} hung; probes "
                 f"{completed_probes}/{len(kernels)} complete")
    lines.append(f"chaos: remote peaks during the run: {dict(peaks)} for {len(kernels)} "
                 "kernels (one agent per host expected, one worker per kernel)"
                 + (f"; other processes seen: {sorted(others)}" if others else ""))
    lines.append("chaos: faults (proof; outcomes of the cells that ended in the next "
                 f"{options.every:g}s on the kernels it hit):")
    for i, f in enumerate(faults):
        until = faults[i + 1].start if i + 1 < len(faults) else f.start + options.every
        hit = [c for c in cells if f.hits(c.kernel) and f.start <= c.ended() < until]
        outcome = Counter("complete" if c.complete else "expected" if c.expected else
                          "hung" if c.hung or c.hung_at else "lost" for c in hit)
        lines.append(f"  t={f.start:6.1f}s {f.label():16s} {f.target}: "
                     f"{'proven' if f.proven else 'NOT PROVEN'} ({f.proof}); cells: "
                     f"{dict(outcome)}")
    for title, group, why in (("lost", lost, lambda c: c.lost),
                              ("doubled", doubled, lambda c: c.doubled),
                              ("hung", hung, lambda c: f"no reply {options.hang_after:g}s "
                               f"after it was sent" + (
                                   " (it came later)" if c.replied else " (it never came)"))):
        if group:
            lines.append(f"chaos: {title} cells ({len(group)}), by kernel: cells in a row with "
                         "the same fate as one line, with the fault before the first:")
            lines.extend(_runs(group, why, faults))
    if dead:
        lines.append(f"chaos: dead kernels ({len(dead)}):")
        lines.extend(f"  {d}" for d in dead)
    if remote_left or local_left:
        lines.append(f"chaos: leftovers {options.leftover_wait:g}s after the shutdown:")
        lines.extend(f"  remote {remote_kind(c)} pid {p}: {c}" for p, c in remote_left.items())
        lines.extend(f"  local pid {p}: {c}" for p, c in local_left.items())
    if shutdown_problems:
        lines.append("chaos: shutdown problems: " + "; ".join(shutdown_problems))
    strays = sum(k.stray for k in kernels)
    if strays:
        lines.append(f"chaos: {strays} output messages for no cell of ours")
    if missing_types:
        lines.append(f"chaos: fault types never injected and proven: {missing_types}")
    n_left = len(remote_left) + len(local_left)
    summary = (f"chaos: kernels={len(kernels)} faults={len(proven)} ("
               + " ".join(f"{t}={by_type[t]}" for t in FAULT_TYPES if t in options.faults)
               + f") unproven={len(unproven)} cells={len(cells) + completed_probes} "
               f"lost={len(lost)} doubled={len(doubled)} hung={len(hung)} dead={len(dead)} "
               f"leftovers={n_left}")
    report = "\n".join(lines)
    if options.report:
        Path(options.report).write_text(json.dumps({
            "summary": summary, "seed": options.seed, "phases": phase,
            "faults": [{k: v for k, v in f.__dict__.items()} for f in faults],
            "cells": [_cell_json(c) for k in kernels for c in k.cells],
            "kernels": [{"index": k.index, "id": k.kernel_id, "start_error": k.start_error,
                         "start_seconds": k.start_seconds, "dead": k.dead} for k in kernels],
            "leftovers": leftovers, "peaks": dict(peaks)}, indent=1, default=str))
    return Result(len(kernels), by_type, len(unproven), len(cells) + completed_probes,
                  len(lost), len(doubled), len(hung), len(dead), n_left, missing_types,
                  summary, report, seconds)


def _cell_json(c: Cell) -> dict[str, Any]:
    return {"cell": c.name, "probe": c.probe, "sent": c.sent, "replied": c.replied,
            "hung_at": c.hung_at, "reply": c.reply, "outputs": c.outputs,
            "replies": len(c.replies), "idles": c.idles, "complete": c.complete,
            "expected": c.expected, "lost": c.lost, "doubled": c.doubled}


def main(argv: list[str] | None = None) -> int:
    """Run, print the report and the summary (last line); 0 only when all is well."""
    result = run(argv)
    print(result.report)
    print(f"chaos: {result.seconds:.0f}s in all")
    print(result.summary, flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
