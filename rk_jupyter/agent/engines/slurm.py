"""An engine's worker process as a Slurm job step on a compute node, driven from the login node.

Kernelspec key ``slurm`` (the user's own ``srun``/``salloc`` options, e.g. ``"--partition=debug
--time=30 --cpus-per-task=4"``) reaches the engine as its option ``slurm``; the engine then
starts its worker with ``start_step`` instead of ``process.spawn``.  The agent stays on the login
node; the worker runs in the foreground of a job step, its standard input and output being
srun's own (srun forwards them between the login node and the compute node inside the
cluster), so the engine's pipe protocol, its framing and its reader do not change.  No SSH
into compute nodes is needed (often refused: no pam_slurm_adopt), and no port is opened.

What was verified on Slurm 22.05 (tests/test_slurm.py keeps the behaviours the code relies on):

- **I/O.** Without ``--unbuffered`` srun forwards the task's stdout *line by line*: a frame
  without a newline byte would wait for the next one.  With ``--unbuffered`` the task's stdout
  is a raw pseudo-terminal and every byte value (``\\r``, ``\\n``, ``\\x03``, ``\\x04``, NUL)
  passes unchanged in both directions; stdin is a plain pipe and its end is the task's EOF.
  So ``--unbuffered`` is required, and the worker must not depend on its stdout not being a
  terminal (the Mathics3 worker moves the protocol off fds 0/1 at once).
- **Interrupt.** One SIGINT to srun forwards nothing (srun prints the tasks' status); a second
  within a second forwards SIGINT and then *cancels the step*.  So the engine must never signal
  srun for an interrupt: ``interrupt`` runs ``scancel --signal=INT JOB.STEP``, which delivers
  exactly one SIGINT to the task and leaves the step running.
- **End.** SIGTERM to srun cancels the step (the task is killed) and, srun having created the
  job, the job; so does the end of srun's stdin once the worker exits on EOF; SIGKILL of srun
  makes slurmstepd kill the task and end the job within about 2 s.  ``scancel JOB`` sends the
  task SIGTERM, then SIGKILL after ``KillWait``.  ``close`` does the first and the last:
  ``scancel`` by job name (covers a job still pending, whose id may not be known yet) and the
  engine then ends srun as any worker.  A job shows COMPLETING in squeue for a moment after.

Nothing secret enters the job: the argv is the engine's worker command (which carries no token)
behind srun's options, the job name is random, and the environment srun exports is the agent's
own without the token variable (the agent removes it at start; ``_job_environment`` removes it
again).  Standard library only: this runs on the login node with the agent.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import secrets
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from ...link.launcher import TOKEN_ENV
from .base import EngineError
from .process import spawn

log = logging.getLogger(__name__)

#: What every kernel job's name starts with (the rest is random: nothing about the kernel).
JOB_PREFIX = "rk-"
#: srun options the engine needs, after the user's so that they win: one task on one node
#: (two workers would interleave their frames), byte-exact I/O with no line buffering
#: (``_UNBUFFERED``, for a worker that speaks over srun's stdio), no informational chatter on
#: stderr (errors still come), and the job's name.
_FORCED = ("--ntasks=1", "--nodes=1")
_UNBUFFERED = "--unbuffered"
_QUIET = "--quiet"
#: Options that would take the worker's stdin/stdout away from srun (the protocol's pipe) or
#: turn them into a terminal; refused rather than overridden, so the user learns why.
_REFUSED = ("--pty", "--input", "--output", "--error", "--label", "--multi-prog", "--job-name",
            "--jobid", "-i", "-o", "-e", "-l", "-J")
#: The Slurm commands the engine runs on the login node (srun starts it, squeue finds its job,
#: scancel interrupts and ends it); the doctor checks that each is there.
COMMANDS = ("srun", "squeue", "scancel")
COMMAND_TIMEOUT = 15.0  # squeue/scancel: a controller that does not answer is not waited for
STATUS_TIMEOUT = 3.0  # squeue for %rkernel status, which a user waits for
WARN_BEFORE = 300.0  # seconds before a job's time limit that the notebook is warned
_JOB_ID_POLL = 0.2
#: slurmstepd's last words on a cancelled step, which srun passes on the task's stderr.
_CANCELLED = re.compile(r"\*\*\* (?:STEP|JOB) \S+ ON (?P<node>\S+) CANCELLED AT (?P<at>\S+)"
                        r"(?: DUE TO (?P<why>[A-Z ]+?))?(?: \*\*\*|$)")


_BY_SCANCEL = " (scancel, by a user or an administrator)"
#: How the end of a job reads in the next cell's error, by its JobState (``scontrol show job``).
_ENDINGS = {"CANCELLED": "was cancelled", "TIMEOUT": "reached its time limit",
            "PREEMPTED": "was preempted", "NODE_FAIL": "ended: its node failed",
            "OUT_OF_MEMORY": "ran out of memory", "DEADLINE": "reached its deadline",
            "BOOT_FAIL": "ended: its node failed to boot"}


class SlurmError(EngineError):
    """A Slurm placement failure the user fixes in the kernelspec's ``slurm`` options or on
    the login node (srun missing, a refused option)."""

    code = "slurm.error"


def parse_options(options: str) -> list[str]:
    """The user's srun options as argv words; SlurmError (``slurm.options``) for text that
    does not split as a shell would, a word that is neither an option nor the value after one
    (``-p debug``), or an option that would take the engine's standard I/O away (``--pty``,
    ``--input``, ``--output``, …) or its job's name.

    Why refuse a stray word: srun would take it as the command, and the job would run that
    instead of the engine.
    """
    try:
        words = shlex.split(options)
    except ValueError as exc:
        raise SlurmError(f"the kernelspec's slurm options {options!r} do not parse: {exc}",
                         "quote them as in a shell", code="slurm.options") from None
    takes_value = False  # the previous word was an option whose value may follow it
    for word in words:
        if not word.startswith("-") or word == "-":
            if takes_value:  # "-p debug", "--partition debug"
                takes_value = False
                continue
            raise SlurmError(f"the kernelspec's slurm options hold {word!r}, which is neither "
                             "an option nor an option's value (srun would run it as the "
                             "command)", "give only srun options, best each with its value "
                             "after '=' (e.g. --partition=debug --time=30)",
                             code="slurm.options")
        # "--output=f" and "-ofile" (a short option with its value attached) name "--output", "-o"
        name = word.split("=", 1)[0] if word.startswith("--") else word[:2]
        takes_value = "=" not in word and (word.startswith("--") or len(word) == 2)
        if name in _REFUSED:
            raise SlurmError(f"the kernelspec's slurm option {name} cannot be used: the engine "
                             "talks to the agent over srun's own standard input and output, "
                             "and names its job itself", "remove it from the slurm options",
                             code="slurm.options")
    return words


def new_job_name() -> str:
    """A job name no other kernel has (random; it reveals nothing about the kernel)."""
    return f"{JOB_PREFIX}{secrets.token_hex(6)}"


def step_argv(argv: list[str], options: str, job_name: str, srun: str = "srun",
              unbuffered: bool = True) -> list[str]:
    """The command that runs ``argv`` as the one task of a new job's step: srun, the user's
    options, the engine's own (``_FORCED``, ``--unbuffered`` unless the task's stdout is only
    read as text, ``--quiet`` and the job name, after the user's so they win), then ``argv``
    itself.  Raises SlurmError for options ``parse_options`` refuses."""
    own = [*_FORCED, *([_UNBUFFERED] if unbuffered else []), _QUIET]
    return [srun, *parse_options(options), *own, f"--job-name={job_name}", *argv]


def _seconds(text: str) -> float | None:
    """squeue's time ("[[days-]hours:]minutes:seconds", or "UNLIMITED", "NOT_SET",
    "INVALID") in seconds; None for the words."""
    days, _, clock = text.strip().rpartition("-")
    try:
        parts = [int(part) for part in clock.split(":")]
        total = int(days or 0) * 86400
    except ValueError:
        return None
    if not 1 <= len(parts) <= 3:
        return None
    for part, unit in zip(reversed(parts), (1, 60, 3600), strict=False):
        total += part * unit
    return float(total)


def _job_environment() -> dict[str, str]:
    """The environment srun exports to the job: the agent's, never the token."""
    env = dict(os.environ)
    env.pop(TOKEN_ENV, None)
    return env


def _user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def _command(argv: list[str], timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client command, bounded; an OSError or timeout is a failed result."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, -1, "", str(exc))


def waiting_text(job: dict[str, str]) -> str:
    """What a cell that waits for its engine's pending job shows (``describe`` with
    ``position``): the job, Slurm's reason, its place in the queue, the expected start, and
    what the user can do meanwhile."""
    where = f" in partition {job['partition']}" if job.get("partition") else ""
    place = f", {job['position']} in its queue" if job.get("position") else ""
    start = job.get("start", "")
    expected = (f"; Slurm expects it to start at {start}" if start and start[0].isdigit()
                else "; Slurm gives no expected start yet")
    return (f"Waiting for the engine: Slurm job {job.get('id', '?')} is "
            f"{job.get('state', 'not listed yet')} ({job.get('reason', '?')}){where}{place}"
            f"{expected}. The cell runs as soon as the job starts; interrupt to stop waiting "
            "(the job stays queued), restart or shut down the kernel to cancel it.")


class SlurmStep:
    """The worker running as step 0 of its own job (srun creates the job).

    ``proc`` is srun: the engine reads and writes it, watches its exit and ends it like any
    worker (SIGTERM to srun cancels the step).  ``interrupt`` and ``close`` are what differ.
    """

    def __init__(self, proc: subprocess.Popen[bytes], job_name: str) -> None:
        self.proc = proc
        self.job_name = job_name
        self.user = _user()
        self._job_id: str | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._watch = threading.Event()  # set: the current watch's engine no longer runs

    def job_id(self, timeout: float = 5.0) -> str | None:
        """The job's id, from squeue by the job's name (cached once known); None if squeue
        lists no such job within ``timeout`` s (still being submitted, or already over)."""
        if self._job_id is not None:
            return self._job_id
        deadline = time.monotonic() + timeout
        while True:
            result = _command(["squeue", "-h", "-o", "%i", f"--name={self.job_name}",
                               f"--user={self.user}"])
            ids = result.stdout.split()
            if result.returncode == 0 and ids:
                self._job_id = ids[0]
                return self._job_id
            if time.monotonic() >= deadline:
                return None
            time.sleep(_JOB_ID_POLL)

    def describe(self, timeout: float = STATUS_TIMEOUT) -> dict[str, str]:
        """What ``%rkernel status`` shows of the job: ``id``, and from squeue ``state``
        (PENDING, RUNNING, …), ``node``, ``time_left``, ``reason`` (why it is pending) and
        ``time_limit``, ``partition`` and ``start`` (when it started, or is expected to:
        Slurm's estimate, "N/A" when it has none); only ``id`` (may be "?") when squeue does
        not list it within ``timeout`` s."""
        job = self.job_id(timeout=min(timeout, 1.0))
        if job is None:
            return {"id": "?"}
        result = _command(["squeue", "-h", "-j", job, "-o", "%T|%N|%L|%r|%l|%P|%S"], timeout)
        fields = result.stdout.strip().split("|")
        keys = ("state", "node", "time_left", "reason", "time_limit", "partition", "start")
        if result.returncode != 0 or len(fields) != len(keys):
            return {"id": job}
        return {"id": job, **dict(zip(keys, fields, strict=True))}

    def position(self, job: dict[str, str], timeout: float = STATUS_TIMEOUT) -> str:
        """Where the pending ``job`` (``describe``) stands in its partition's queue: "2 of 5"
        (Slurm's order: priority, then submission), "" when squeue does not say."""
        result = _command(["squeue", "-h", "-t", "PENDING", "-p", job.get("partition", ""),
                           "--sort=-p,i", "-o", "%i"], timeout)
        ids = result.stdout.split()
        if result.returncode != 0 or job.get("id") not in ids:
            return ""
        return f"{ids.index(job['id']) + 1} of {len(ids)}"

    def times(self) -> tuple[float, float] | None:
        """(seconds left, time limit in seconds) of the job; None when unknown or
        unlimited."""
        job = self.describe()
        left, limit = _seconds(job.get("time_left", "")), _seconds(job.get("time_limit", ""))
        return None if left is None or limit is None else (left, limit)

    def warn_before_limit(self, before: float | None, warn: Callable[[str], None]) -> None:
        """Call ``warn`` once with a warning, ``before`` seconds before the job's time limit
        (None: ``WARN_BEFORE``, or half the limit when that is shorter; 0: never), from a
        thread of its own that ends with the job (``close``)."""
        self._watch.set()  # a step handed to a new engine: only its engine is warned
        self._watch = ended = threading.Event()
        if before == 0:
            return

        def watch() -> None:
            times = self.times()
            if times is None:
                return
            left, limit = times
            ahead = min(WARN_BEFORE, limit / 2) if before is None else float(before)
            if ended.wait(max(0.0, left - ahead)):
                return
            times = self.times()  # an administrator may have changed the limit meanwhile
            if times is None or ended.is_set():
                return
            at = time.strftime("%H:%M:%S", time.localtime(time.time() + times[0]))
            warn(f"The engine's Slurm job {self._job_id} reaches its time limit in "
                 f"{times[0]:.0f} s (at {at} on the login node); Slurm then cancels it and "
                 "every definition is lost. Save what you need now (Export, DumpSave); a "
                 "restart of the kernel queues a new job.")

        threading.Thread(target=watch, daemon=True, name=f"slurm-limit-{self.job_name}").start()

    def ended(self, stderr: list[str]) -> str:
        """Why the job ended, for the error of the next cell: its id, and what slurmstepd
        said on the task's stderr (``*** STEP 12.0 ON c1 CANCELLED AT … DUE TO TIME LIMIT
        ***``: a time limit, preemption, ``scancel`` by the user or an administrator), or
        else what ``scontrol show job`` still knows of it (srun does not always pass that
        line on before it exits)."""
        what = f"the engine's Slurm job {self._job_id or self.job_name}"
        said = next((m for line in reversed(stderr) if (m := _CANCELLED.search(line))), None)
        if said is not None:
            why = f" due to {said['why'].lower()}" if said["why"] else _BY_SCANCEL
            return f"{what} was cancelled on {said['node']} at {said['at']}{why}"
        job = self._record()
        state = job.get("JobState", "")
        if state in _ENDINGS:
            where = f" on {job['NodeList']}" if job.get("NodeList") not in (None, "(null)") \
                else ""
            return f"{what} {_ENDINGS[state]}{where} at {job.get('EndTime', '?')}" \
                f"{_BY_SCANCEL if state == 'CANCELLED' else ''}"
        return f"{what} ended"

    def _record(self) -> dict[str, str]:
        """``scontrol show job -o``'s fields of the job (kept by slurmctld for MinJobAge,
        300 s by default, after its end); {} when it has none."""
        if self._job_id is None:
            return {}
        result = _command(["scontrol", "show", "job", "-o", self._job_id], STATUS_TIMEOUT)
        if result.returncode != 0:
            return {}
        return dict(word.split("=", 1) for word in result.stdout.split() if "=" in word)

    def interrupt(self) -> None:
        """Deliver one SIGINT to the worker (``scancel --signal=INT JOB.0``), without blocking
        the caller (it holds the engine's lock): the command runs on a thread of its own.

        Never a signal to srun: a second SIGINT within a second would cancel the step.
        """
        threading.Thread(target=self._signal_step, args=("INT",), daemon=True,
                         name=f"slurm-interrupt-{self.job_name}").start()

    def _signal_step(self, signal_name: str) -> None:
        job = self.job_id(timeout=2.0)
        target = [f"{job}.0"] if job else [f"--name={self.job_name}", f"--user={self.user}"]
        result = _command(["scancel", f"--signal={signal_name}", *target])
        if result.returncode != 0:
            log.warning("scancel --signal=%s %s failed: %s", signal_name, " ".join(target),
                        result.stderr.strip())

    def close(self) -> None:
        """Cancel the job, whatever state it is in (pending, running); idempotent.  Bounded by
        ``COMMAND_TIMEOUT``.  By name and user, so that a job whose id is not known yet (still
        pending, or being submitted) is cancelled too; the engine then ends srun itself."""
        self._watch.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        result = _command(["scancel", f"--name={self.job_name}", f"--user={self.user}"])
        if result.returncode != 0:
            log.warning("scancel of job %s failed: %s", self.job_name, result.stderr.strip())
        else:
            log.info("slurm job %s (%s) cancelled", self._job_id or "?", self.job_name)


class Held:
    """Job steps kept for a kernel's next engine across a restart (``hold``/``take``), each
    ended by its ``end`` when nobody takes it within ``RESTART_HOLD`` s.

    Why: a restart would otherwise cancel the job and queue a new one (minutes on a busy
    cluster).  An idle engine's worker re-executes itself in its step (``worker.renew``)
    and waits here, keyed by the kernel's id and what placed it, for the kernel's next
    session.  The agent's end ends them all the usual way (srun's stdin)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[str, ...],
                         tuple[Any, threading.Timer, Callable[[], None]]] = {}

    def hold(self, key: tuple[str, ...], value: Any, end: Callable[[], None],
             seconds: float) -> None:
        def expire() -> None:
            with self._lock:
                if key not in self._held or self._held[key][0] is not value:
                    return
                del self._held[key]
            log.info("slurm: the job step kept for %s was not taken within %g s: ended",
                     key[0], seconds)
            end()

        timer = threading.Timer(seconds, expire)
        timer.daemon = True
        with self._lock:
            old = self._held.pop(key, None)
            self._held[key] = (value, timer, end)
        timer.start()
        if old is not None:  # a second restart before the first was taken: keep the newest
            old[1].cancel()
            threading.Thread(target=old[2], daemon=True).start()

    def take(self, key: tuple[str, ...]) -> Any | None:
        with self._lock:
            held = self._held.pop(key, None)
        if held is None:
            return None
        held[1].cancel()
        return held[0]


#: Seconds a job step kept across a restart waits for the kernel's next engine.
RESTART_HOLD = 60.0
#: A job with less time left than this is not kept across a restart (its next engine would
#: hardly start before Slurm ends it).
KEEP_IF_LEFT = 60.0
HELD = Held()


def start_step(argv: list[str], options: str, unbuffered: bool = True,
               **streams: Any) -> SlurmStep:
    """Start ``argv`` as the one task of a new Slurm job (srun, in the foreground of its
    step), its standard I/O the given ``streams`` (Popen's stdin/stdout/stderr), srun in a
    process group of its own (``process.spawn``).  Returns at once: the job may still be
    pending.  ``unbuffered``: see ``step_argv``.  Raises SlurmError when the options are
    refused or srun cannot be run."""
    srun = shutil.which("srun")
    if srun is None:
        raise SlurmError("the kernelspec asks for a Slurm job (slurm options), but srun is not "
                         "on the login node's PATH", "run the kernel on a Slurm login node, or "
                         "add srun's directory to PATH in the login shell's startup files",
                         code="slurm.no-srun")
    job_name = new_job_name()
    command = step_argv(argv, options, job_name, srun, unbuffered)
    try:
        proc = spawn(command, env=_job_environment(), **streams)
    except OSError as exc:
        raise SlurmError(f"cannot run {srun}: {exc}", code="slurm.no-srun") from exc
    log.info("slurm: started %s as job %s", shlex.join(command[:len(command) - len(argv)]),
             job_name)
    return SlurmStep(proc, job_name)
