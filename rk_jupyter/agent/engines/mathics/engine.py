"""The Mathics3 engine: Mathics3 evaluating in a worker process that the agent drives.

Mathics3 runs in ``worker`` (a separate process in its own session and process group),
because only a signal reliably stops an evaluation stuck inside a long builtin: ``interrupt``
sends SIGINT, the worker's ``MathicsSession(catch_interrupt=True)`` turns it into $Aborted and
keeps every definition, and ``close`` can kill the whole group.  The pipe protocol is described
in ``pipe``; this module imports only the standard library and the link (Mathics3 itself is
imported by the worker, possibly under another interpreter: option ``python``).

Cells: the worker checks the whole cell's syntax first (an error evaluates nothing and gives
MessagePacket + SyntaxPacket), then evaluates each top-level expression in order under one
$Line, so In[n]/Out[n] and % refer to cells; the result is the last expression's (nothing when
it is Null, as after a trailing semicolon); an aborted expression ends the cell with $Aborted.
Results are MIME bundles (``rendering``): text/plain is OutputForm, plus image/svg+xml for
Graphics or "$$...$$" text/latex for math.  Print and messages arrive live; Input[] and
InputString[] ask the front end via ``EngineHost.read_input``.  Expressions (EvaluatePacket)
are evaluated outside In/Out, and their values cross the pipe as WXF (``values``), ready to be
sent on to the kernel.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from ....link.launcher import OUTPUT_LIMIT
from ....link.packets import ABORTED, packet
from ..base import (
    Engine,
    EngineEnded,
    EngineError,
    EngineHost,
    EngineInfo,
    InputAborted,
    stopped_notice,
)
from ..process import (
    OutputTail,
    describe_exit,
    exit_status,
    format_bytes,
    kill_group,
    process_usage,
    python_argv,
    reap,
    spawn,
    wait_exit,
)
from ..slurm import (
    HELD,
    KEEP_IF_LEFT,
    RESTART_HOLD,
    SlurmStep,
    start_step,
    waiting_text,
)
from .forkserver import ROOT, TEMPLATES, Forked
from .pipe import Message, encode_frame, take_frame
from .values import FAILED

log = logging.getLogger(__name__)
_JOB_POLL = 2.0  # seconds between looks at a starting engine's Slurm job (squeue)

_WORKER = "rk_jupyter.agent.engines.mathics.worker"
_INPUT_KINDS = ("InputPacket", "InputStringPacket")
#: How to install Mathics3 for a Python whose pip refuses to (PEP 668 "externally managed":
#: Debian 12, Ubuntu 24.04): into a virtual environment, whose Python then runs the agent.
PEP668_ADVICE = (
    "its pip refuses to install packages (externally-managed-environment, PEP 668). Install "
    "Mathics3 into a virtual environment (on Debian/Ubuntu this needs: apt install "
    "python3-venv) and make that environment's Python the kernelspec's remote_python, by its "
    "full path (rk-jupyter add NAME --host HOST --remote-python /home/USER/rk-venv/bin/python):"
    "\n    python3 -m venv ~/rk-venv && ~/rk-venv/bin/pip install Mathics3"
)
_IDLE, _STARTING, _RUNNING, _CLOSED = "idle", "starting", "running", "closed"
_POLL = 1.0  # how often a wait on the worker checks that it is still alive
_NOP = encode_frame(["nop"])  # ignored by the worker (``_prod``)
_PROD_AFTER = 0.001  # seconds a Slurm worker is quiet during a request before ``_prod``
_STDERR_LINES = 50
_STDERR_WIDTH = 2000  # characters kept of a line: a traceback's lines are shorter


class MathicsEngine(Engine):
    """Mathics3 in a worker process; options: ``python`` (interpreter, default the agent's),
    ``request_timeout`` (seconds for complete/inspect, default 30), ``memory_limit`` (bytes
    of address space for the worker, 0: none), ``output_limit`` (characters of a result's
    text before it is shown in a short form, default ``OUTPUT_LIMIT``), ``warm`` (default
    true: the worker is a fork of the interpreter's Mathics3 template, ``forkserver``; false:
    a cold worker, as when there is no template), ``slurm`` (srun options: the worker runs
    as a Slurm job step, see ``engines/slurm.py``, never forked; default none),
    ``time_warning`` (with ``slurm``: seconds before the job's time limit that the notebook
    is warned; default ``slurm.WARN_BEFORE`` or half the limit if shorter; 0: never),
    ``queue_timeout`` (with ``slurm``: seconds a job may wait in the queue before it is
    cancelled with an error; default none: as long as Slurm keeps it).

    A Slurm job still PENDING at the first look (``_JOB_POLL`` s after srun) makes ``start``
    return at once with ``extra["queued"]`` (the job: id, state, reason, partition, expected
    start, position): the session is ready, and ``wait_queued`` waits for the worker.
    ``start_timeout`` counts from when the job leaves the queue."""

    def __init__(self, host: EngineHost, options: dict[str, Any]) -> None:
        super().__init__(host, options)
        self.python = str(options.get("python") or sys.executable)
        self.request_timeout = float(options.get("request_timeout", 30.0))
        self.memory_limit = int(options.get("memory_limit") or 0)
        self.output_limit = int(options.get("output_limit") or OUTPUT_LIMIT)
        self.slurm = str(options.get("slurm") or "")
        self._step: SlurmStep | None = None  # the worker's Slurm job step, with option slurm
        # Forked from a template on this host: no (a job step's worker runs on a node).
        self.warm = bool(options.get("warm", True)) and not self.slurm
        # Seconds before the Slurm job's time limit that the notebook is warned (None: the
        # default of slurm.WARN_BEFORE or half the limit; 0: no warning).
        warning = options.get("time_warning")
        self.time_warning = None if warning is None else float(warning)
        queue_timeout = options.get("queue_timeout")
        self.queue_timeout = float(queue_timeout) if queue_timeout else None
        self._start_timeout = 0.0
        self._ready_by = 0.0  # when the start fails unless the worker said ready
        self._next_look = 0.0  # when _look_at_job runs next
        self._pending_since: float | None = None
        self._proc: subprocess.Popen[bytes] | Forked | None = None
        self._inbox = bytearray()  # worker frames read but not yet taken by _next_event
        self._ended = False  # the worker closed its end of the pipe
        self._stderr: OutputTail | None = None
        # Guards _state/_pending_interrupt/_closed, so that SIGINT is sent only while the
        # worker runs the cell it was meant for (between its "started" and "done").
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one frame at a time into the worker's stdin
        self._state = _IDLE
        self._pending_interrupt = False
        self._began = False  # the worker said "started" for the current request
        self._said_stopped = False  # the running cell was told that the worker is stopped
        self._closed = False
        self._next_id = 0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float) -> EngineInfo:
        deadline = time.monotonic() + timeout
        config = {"memory_limit": self.memory_limit, "output_limit": self.output_limit}
        # A fork of the interpreter's template when there is one (warm: milliseconds), else a
        # cold worker (seconds); the template's own wait counts against the same timeout.
        forked = TEMPLATES.fork(self.python, config, timeout) if self.warm else None
        # The kernel's previous engine's job step, kept across a restart (its worker is
        # starting afresh in it): no new job, no queue.
        held = HELD.take(self._hold_key()) if self.slurm else None
        with self._lock:
            if self._closed or self._proc is not None:
                if forked is not None:
                    reap(forked, "Mathics3 worker")
                if held is not None:
                    held.close()
                raise EngineError("the Mathics3 engine was already started or closed")
            try:  # in the agent's working directory (Directory[]), which is off its sys.path
                argv = [*python_argv(self.python, _WORKER, ROOT), json.dumps(config)]
                streams = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE,
                           "stderr": subprocess.PIPE}
                if forked is not None:
                    self._proc = forked
                elif held is not None:
                    self._step, self._proc = held._step, held._proc
                    self._stderr, self._inbox = held._stderr, held._inbox
                    log.info("slurm job %s kept across the restart: a fresh engine in it",
                             self._step.job_id(timeout=1.0) if self._step else "?")
                elif self.slurm:  # srun is the process read, written, watched and ended
                    self._step = start_step(argv, self.slurm, **streams)
                    self._proc = self._step.proc
                else:
                    self._proc = spawn(argv, **streams)
            except OSError as exc:
                raise EngineError(
                    f"cannot run the Python interpreter {self.python!r} for Mathics3: {exc}; "
                    "set the engine option python to an interpreter that has Mathics3 installed"
                ) from exc
        proc = self._proc
        assert proc.stdout is not None and proc.stderr is not None
        if held is None:
            self._stderr = OutputTail(proc.stderr, lines=_STDERR_LINES, width=_STDERR_WIDTH,
                                      label=f"mathics worker {proc.pid}")
        now = time.monotonic()
        self._start_timeout = timeout
        self._ready_by = max(deadline, now + 1.0)
        self._next_look = now + _JOB_POLL
        info = self._until_ready(None)
        assert info is not None
        return info

    def wait_queued(self, timeout: float) -> EngineInfo | None:
        return self._until_ready(time.monotonic() + timeout)

    def queue_notice(self) -> str:
        return waiting_text(self.job)

    def _until_ready(self, tick: float | None) -> EngineInfo | None:
        """Wait for the worker's "ready": its EngineInfo.  ``start`` (``tick`` None) gets the
        queued info instead when the Slurm job is still PENDING at the first look;
        ``wait_queued`` gets None when ``tick`` passes first.  EngineError (the engine closed)
        when the start fails or times out."""
        while True:
            now = time.monotonic()
            if self._step is not None and now >= self._next_look:
                self._look_at_job(now)
                if tick is None and self.job.get("state") == "PENDING":
                    return EngineInfo(name="Mathics3", version="",
                                      extra={"python": self.python, "queued": dict(self.job)})
            until = min(self._ready_by, tick or self._ready_by)
            if self._step is not None:
                until = min(until, self._next_look)
            try:
                event = self._next_event(until)
            except EngineError as exc:
                raise EngineError(f"Mathics3 failed to start: {exc}") from None
            if event is not None:
                return self._ready(event)
            now = time.monotonic()
            if now >= self._ready_by:
                self._timed_out()
            if tick is not None and now >= tick:
                return None

    def _look_at_job(self, now: float) -> None:
        """squeue's view of the starting engine's job, kept in ``job`` (state changes go to
        the agent's log, which %rkernel log and a failed start's log tail show).  While the
        job is PENDING the start's own timeout does not run; ``queue_timeout`` bounds it."""
        assert self._step is not None
        job = self._step.describe()
        self._next_look = time.monotonic() + _JOB_POLL
        if job.get("state") == "PENDING":
            job["position"] = self._step.position(job)
            self._pending_since = self._pending_since or now
            self._ready_by = max(self._ready_by, now + self._start_timeout)
            waited = now - self._pending_since
            if self.queue_timeout is not None and waited >= self.queue_timeout:
                self.close()
                raise EngineError(
                    f"the engine's Slurm job {job['id']} waited {waited:.0f} s in the queue "
                    f"(PENDING, reason {job.get('reason')}), longer than the kernelspec's "
                    f"queue_timeout of {self.queue_timeout:g} s, and is cancelled",
                    "run the cell again to queue a new job, ask for less (time, CPUs, "
                    "memory) or another partition in the kernelspec's slurm options, or raise "
                    "the engine option queue_timeout", code="slurm.queued")
        if job.get("state") and {k: job.get(k) for k in ("state", "reason", "node")} != \
                {k: self.job.get(k) for k in ("state", "reason", "node")}:
            log.info("slurm job %s %s (%s) on %s", job["id"], job["state"], job.get("reason"),
                     job.get("node") or "no node yet")
        self.job = job

    def _timed_out(self) -> None:
        """The start took longer than start_timeout: end it and say what was seen."""
        job = self._step.describe() if self._step is not None else None
        self.close()
        where = f" (Slurm job {job['id']} {job.get('state', '')})" if job else ""
        raise EngineError(f"Mathics3 did not start within {self._start_timeout:g} s{where}"
                          f"{self._tail()}")

    def _ready(self, event: Message) -> EngineInfo:
        """The worker's first event: its EngineInfo when it is "ready", else EngineError
        (the engine closed) saying what is missing."""
        proc = self._proc
        assert proc is not None
        match event:
            case ["ready", version, _python, _pid]:
                if self._step is not None:
                    self._step.job_id(timeout=1.0)  # known from now on: its end names it
                    self._step.warn_before_limit(self.time_warning, self._warn)
                extra: dict[str, Any] = {"python": self.python, "pid": proc.pid}
                if self._pending_since is not None:
                    extra["queued"] = {**self.job, "state": "RUNNING",
                                       "waited": round(time.monotonic() - self._pending_since)}
                    extra["queued"]["node"] = self._step.describe().get("node", "") \
                        if self._step is not None else ""
                return EngineInfo(name="Mathics3", version=str(version), extra=extra)
            case ["fatal", missing, error, externally_managed]:
                self.close()
                if missing:
                    how = (PEP668_ADVICE if externally_managed else
                           f"install it with:\n    {self.python} -m pip install Mathics3")
                    raise EngineError(f"Mathics3 is not installed for the Python interpreter "
                                      f"{self.python} ({error}); {how}")
                raise EngineError(
                    f"Mathics3 cannot be imported by {self.python}: {error}; reinstall it with:\n"
                    f"    {self.python} -m pip install --force-reinstall Mathics3{self._tail()}"
                )
        self.close()
        raise EngineError(f"the Mathics3 worker sent {event!r} instead of ready")

    def _warn(self, text: str) -> None:
        """A warning for the notebook, now (in the running cell) or before the next cell."""
        self.host.emit(packet("MessagePacket", "Slurm", "timelimit", text))

    def alive(self) -> bool:
        proc = self._proc
        return proc is not None and exit_status(proc) is None

    def ended(self) -> EngineEnded:
        return self._died()

    def usage(self) -> dict[str, Any]:
        proc = self._proc
        if proc is None:
            return {}
        ended = exit_status(proc) is not None
        if self._step is not None:  # proc is srun here: the worker runs on the job's node
            usage: dict[str, Any] = {"state": "ended"} if ended else {
                "state": "running", "slurm": self._step.describe()}
        else:
            usage = {"state": "ended"} if ended else process_usage(proc.pid)
        if self.memory_limit:
            usage["limit"] = self.memory_limit
        return usage

    def stopped(self) -> bool:
        # /proc only, also with Slurm (a stopped srun stops the engine's I/O): usage() would
        # ask squeue before every cell.
        proc = self._proc
        return proc is not None and process_usage(proc.pid).get("state") == "stopped"

    def stopped_notice(self) -> str:
        proc = self._proc  # the process stopped() looked at (srun, with Slurm)
        return stopped_notice(proc.pid if proc is not None else None)

    def _hold_key(self) -> tuple[str, ...]:
        """What a job step kept across a restart is filed under: the kernel (engine option
        ``kernel``, set by the agent) and everything that placed and configured the worker."""
        return (str(self.options.get("kernel") or ""), self.slurm, self.python,
                str(self.memory_limit), str(self.output_limit))

    def close_for_restart(self) -> None:
        """With ``slurm``: an idle engine whose job has time left keeps the job for the
        kernel's next engine (``HELD``): its worker re-executes itself in its step (a fresh
        Mathics3, all definitions gone) and the next ``start`` of the same kernel takes it.
        Anything else, and a job not taken within ``RESTART_HOLD`` s, is closed as ever."""
        step = self._step
        times = step.times() if step is not None and self.options.get("kernel") else None
        with self._lock:
            keep = (times is not None and times[0] > KEEP_IF_LEFT and self._state == _IDLE
                    and not self._closed and self.alive())
            if keep:
                self._closed, self._state = True, _CLOSED
        if not keep:
            self.close()
            return
        try:
            self._send(["renew"])
        except EngineError:
            self._closed = False
            self.close()
            return
        held = MathicsEngine(self.host, self.options)  # the parts, for the next start
        held._step, held._proc, held._stderr, held._inbox = step, self._proc, self._stderr, \
            self._inbox
        HELD.hold(self._hold_key(), held, held.close, RESTART_HOLD)
        log.info("slurm job %s kept %g s for the kernel's next engine (restart)",
                 step.job_id(timeout=1.0) if step else "?", RESTART_HOLD)

    def close(self) -> None:
        with self._lock:
            proc = None if self._closed else self._proc
            self._closed = True
            self._state = _CLOSED
        if proc is None:
            return
        if self._step is not None:  # cancel the job first: ending srun alone may leave it queued
            self._step.close()
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except (OSError, ValueError):
                pass
        # The worker is not reaped before the group is killed, so its pid (= the group id)
        # cannot have been reused by then.
        kill_group(proc, signal.SIGTERM)
        wait_exit(proc, 2.0)
        reap(proc, "Mathics3 worker")
        if proc.stdout is not None:
            proc.stdout.close()
        if self._stderr is not None and self._stderr.wait(1.0) and proc.stderr is not None:
            proc.stderr.close()

    # -- requests -------------------------------------------------------------------------

    def evaluate(self, code: str) -> None:
        self._run("eval", code)

    def evaluate_expression(self, code: str) -> None:
        self._run("expr", code)

    def _run(self, op: str, code: str) -> None:
        """Send an eval/expr request; turn the worker's events into packets until it is done."""
        with self._lock:
            if self._closed:
                raise EngineError("the Mathics3 engine was closed")
            self._state = _STARTING
            self._began = False
            self._pending_interrupt = False
            self._said_stopped = False
        try:
            self._send([op, code])
            returned = False
            while True:
                event = self._next_event(None)
                assert event is not None  # no deadline: _next_event waits or raises
                if event[0] == "done":
                    _, next_line, outcome = event
                    if outcome is not None:
                        returned = self._dispatch(outcome) or returned
                    break
                returned = self._dispatch(event) or returned
            if op == "eval":
                self.host.emit(packet("InputNamePacket", f"In[{next_line}]:= "))
            elif not returned:  # the worker failed (its message says why): still one answer
                self.host.emit(packet("ReturnPacket", FAILED))
        except BaseException as exc:
            with self._lock:
                if isinstance(exc, EngineEnded) and not self._began:
                    exc.unserved = True  # it never said "started": the cell did not run
                if self._state != _CLOSED:
                    self._state = _IDLE
            raise

    def complete(self, prefix: str) -> list[str]:
        names = self._request("complete", prefix)
        return [str(name) for name in names] if isinstance(names, list) else []

    def inspect(self, name: str) -> dict[str, str] | None:
        bundle = self._request("inspect", name)
        if isinstance(bundle, dict) and bundle:
            return {str(key): str(value) for key, value in bundle.items()}
        return None

    def interrupt(self) -> None:
        with self._lock:
            if self._state == _RUNNING:
                self._signal_worker()
            elif self._state == _STARTING:
                self._pending_interrupt = True

    # -- internals ------------------------------------------------------------------------

    def _dispatch(self, event: Message) -> bool:
        """Turn one worker event of a request into packets; True if it was the ReturnPacket."""
        emit = self.host.emit
        match event:
            case ["print", text]:
                emit(packet("TextPacket", str(text)))
            case ["message", symbol, tag, text]:
                emit(packet("MessagePacket", str(symbol), str(tag), str(text)))
            case ["syntax", position]:
                emit(packet("SyntaxPacket", int(position)))
            case ["display", display_id, bundle]:
                emit(packet("RKDisplay", str(display_id), dict(bundle) if bundle else None))
            case ["input", request_id, kind, prompt]:
                self._answer_input(request_id, kind, prompt)
            case ["result", line, bundle]:
                emit(packet("OutputNamePacket", f"Out[{line}]= "))
                emit(packet("ReturnPacket", dict(bundle)))
                return True
            case ["value", value]:
                emit(packet("ReturnPacket", value))
                return True
            case ["aborted"]:
                emit(packet("ReturnPacket", ABORTED))
                return True
            case _:  # a stale reply to a complete/inspect request that timed out
                log.debug("Mathics3 worker: dropped %r during a request", event[0])
        return False

    def _answer_input(self, request_id: Any, kind: Any, prompt: Any) -> None:
        answer: str | None = None
        if kind in _INPUT_KINDS:
            try:
                answer = self.host.read_input(packet(str(kind), str(prompt)))
            except InputAborted:
                answer = None
        # None aborts the worker's Input[]; if SIGINT got there first it drops the answer.
        self._send(["input", request_id, answer])

    def _request(self, op: str, argument: str) -> Any:
        """Send complete/inspect and wait (bounded) for its reply; later stray replies are
        recognised by id and dropped."""
        self._next_id += 1
        request_id = self._next_id
        self._send([op, request_id, argument])
        deadline = time.monotonic() + self.request_timeout
        while True:
            event = self._next_event(deadline)
            if event is None:
                raise EngineError(
                    f"Mathics3 did not answer a {op} request within {self.request_timeout:g} s"
                )
            match event:
                case ["reply", replied, value] if replied == request_id:
                    return value

    def _send(self, message: Message) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise EngineError("the Mathics3 engine is not started")
        try:
            with self._write_lock:
                proc.stdin.write(encode_frame(message))
                proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise self._died() from exc

    def _prod(self) -> None:
        """While a request runs and a Slurm worker has been quiet for ``_PROD_AFTER`` s: a
        no-op frame to srun's stdin, never blocking.

        Why: slurmstepd forwards the task's output to srun over TCP with Nagle's algorithm,
        and srun acknowledges late (delayed ACK): a frame written while an earlier one is
        unacknowledged waits ~40 ms — every cell whose worker writes twice (STARTED, then
        its result) did.  Data from srun to slurmstepd carries the acknowledgement at once
        (measured on the Slurm bed: 44 ms → 1.0 ms for three writes per round trip).  Only
        while a request runs: the request's later output then acknowledges the no-op in
        turn, so the next request that srun sends is not itself held (a no-op sent after the
        last output held the next request for 40 ms instead).  The worker ignores the frame;
        when its stdin is full, no frame is sent rather than one waited for."""
        proc = self._proc
        if proc is None or proc.stdin is None or not self._write_lock.acquire(blocking=False):
            return
        try:
            fd = proc.stdin.fileno()
            if select.select([], [fd], [], 0)[1]:
                os.write(fd, _NOP)  # < PIPE_BUF: written whole or not at all
        except (OSError, ValueError):
            pass  # the worker's end is seen by the reader
        finally:
            self._write_lock.release()

    def _next_event(self, deadline: float | None) -> Message | None:
        """The worker's next event; None once ``deadline`` passes; EngineError if it died.

        Only the session's thread waits for events, so it reads the pipe itself: a reader
        thread in between would cost every event a thread switch (measurable in the round
        trip of a cell).  "started" is taken here, for ``interrupt``, and never returned.
        """
        dead_since: float | None = None
        while True:
            event = self._take_event()
            if event is not None:
                if self._track(event):
                    return event
                continue
            if self._ended:
                raise self._died()
            wait = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            if wait <= 0:
                return None
            if self._fill(wait):
                continue
            if deadline is None:
                self._say_if_stopped()
            # The end of the pipe reports a dead worker at once; this is the backstop.
            proc = self._proc
            if proc is not None and exit_status(proc) is not None:
                dead_since = dead_since or time.monotonic()
                if time.monotonic() - dead_since > 2 * _POLL:
                    raise self._died() from None

    def _say_if_stopped(self) -> None:
        """Tell the running cell, once per stop, that the worker is stopped by a signal: a
        SIGSTOP that lands just after the session's check before the request would otherwise
        leave the cell silent until someone interrupts it."""
        stopped = self.stopped()
        if stopped and not self._said_stopped:
            log.warning("the Mathics3 worker is stopped by a signal while a cell waits on it")
            self.host.emit(packet("MessagePacket", "General", "stopped",
                                  self.stopped_notice()))
        self._said_stopped = stopped

    def _take_event(self) -> Message | None:
        """The first whole frame of the inbox, decoded (a broken one ends the worker)."""
        try:
            return take_frame(self._inbox)
        except ValueError as exc:
            log.error("Mathics3 worker protocol broken: %s", exc)
            self._ended = True
            raise EngineError(f"the Mathics3 worker broke the pipe protocol: {exc}"
                              f"{self._tail()}") from None

    def _fill(self, wait: float) -> bool:
        """Read what the worker wrote within ``wait`` s; False if it wrote nothing."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        try:
            fd = proc.stdout.fileno()
            if self._step is not None and self._state != _IDLE and wait > _PROD_AFTER:
                if not select.select([fd], [], [], _PROD_AFTER)[0]:
                    self._prod()  # a request in flight and a quiet worker: see _prod
                    wait -= _PROD_AFTER
                    if not select.select([fd], [], [], wait)[0]:
                        return False
            elif not select.select([fd], [], [], wait)[0]:
                return False
            chunk = os.read(fd, 1 << 16)
        except (OSError, ValueError):  # closed by close() meanwhile
            chunk = b""
        if not chunk:
            self._ended = True
            with self._lock:
                if self._state != _CLOSED:
                    self._state = _IDLE
        self._inbox += chunk
        return True

    def _died(self) -> EngineEnded:
        """The error for a worker that has ended, with its last words (and the memory limit,
        when a signal may have been the kernel's answer to it)."""
        if self._closed:
            return EngineEnded("the Mathics3 engine was closed")
        proc = self._proc
        assert proc is not None
        status = wait_exit(proc, 2.0)
        how = "closed its end of the pipe" if status is None else describe_exit(status)
        if status is not None and status < 0 and self.memory_limit:
            how += f" (its memory_limit is {format_bytes(self.memory_limit)})"
        if self._stderr is not None:
            self._stderr.wait(1.0)  # let it catch the last lines
        if self._step is not None and status != 0:
            lines = self._stderr.lines() if self._stderr is not None else []
            return EngineEnded(f"{self._step.ended(lines)} (srun {how}); a fresh engine runs in "
                               f"a new job, queued again{self._tail()}")
        return EngineEnded(f"the Mathics3 worker (pid {proc.pid}) {how}{self._tail()}",
                           requested=status == 0)

    def _tail(self) -> str:
        lines = self._stderr.lines() if self._stderr is not None else []
        if not lines:
            return " (it wrote nothing on stderr)"
        return "; its last lines on stderr:\n" + "\n".join(lines)

    def _signal_worker(self) -> None:
        if self._step is not None:  # never SIGINT srun: a second one cancels the step
            self._step.interrupt()
            return
        proc = self._proc
        if proc is not None:
            try:
                os.kill(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def _track(self, event: Message) -> bool:
        """Follow the worker's cell state (for ``interrupt``); False for "started", which
        concerns only that state."""
        kind = event[0]
        if kind not in ("started", "done"):
            return True
        with self._lock:
            if self._state == _CLOSED:
                pass
            elif kind == "done":
                self._state = _IDLE
            else:
                self._state = _RUNNING
                self._began = True
                if self._pending_interrupt:
                    self._pending_interrupt = False
                    self._signal_worker()
        return kind == "done"

