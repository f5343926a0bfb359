"""The Mathics3 engine: Mathics3 evaluating in a worker process that the agent drives.

Mathics3 runs in ``mathics_worker`` (a separate process in its own session and process group),
because only a signal reliably stops an evaluation stuck inside a long builtin: ``interrupt``
sends SIGINT, the worker's ``MathicsSession(catch_interrupt=True)`` turns it into $Aborted and
keeps every definition, and ``close`` can kill the whole group.  The pipe protocol is described
in ``mathics_worker``; this module imports only the standard library (Mathics3 itself is
imported by the worker, possibly under another interpreter: option ``python``).

Cells: the worker checks the whole cell's syntax first (an error evaluates nothing and gives
MessagePacket + SyntaxPacket), then evaluates each top-level expression in order under one
$Line, so In[n]/Out[n] and % refer to cells; the result is the last expression's (nothing when
it is Null, as after a trailing semicolon); an aborted expression ends the cell with $Aborted.
Results: text/plain is OutputForm; Graphics add image/svg+xml (Mathics3's SVG export;
Graphics3D has no SVG there and stays "-Graphics3D-"); results with math in them (non-List
compound expressions, rationals, complex numbers) add "$$...$$" text/latex, while strings,
numbers, symbols and lists of those stay text only (see ``mathics_worker.wants_tex``).
Print and messages arrive live; Input[]/InputString[] ask the front end via
``EngineHost.read_input``.  Expressions (EvaluatePacket) are evaluated outside In/Out, and their
values travel from the worker as JSON trees that ``from_tagged`` turns into WXF Python values.
"""

from __future__ import annotations

import base64
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from decimal import Decimal
from typing import IO, Any

from ...link.expr import Function, Symbol
from ...link.packets import ABORTED, packet
from ...link.wxf import Delayed, NumericArray
from .base import Engine, EngineError, EngineHost, EngineInfo, InputAborted, describe_exit
from .mathics_worker import encode_frame, take_frame

log = logging.getLogger(__name__)

_WORKER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mathics_worker.py")
# Run the worker by path: the chosen interpreter need not have rk_jupyter installed.
_BOOTSTRAP = "import runpy, sys; runpy.run_path(sys.argv.pop(1), run_name='__main__')"
# In the zipapp deployed by the ssh transport the worker is not a file of its own: then the
# archive goes on sys.path and the worker runs as a module from it.
_ARCHIVE = getattr(__loader__, "archive", None)  # set by zipimport
_ZIP_BOOTSTRAP = (
    "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); runpy.run_module("
    "'rk_jupyter.agent.engines.mathics_worker', run_name='__main__', alter_sys=True)"
)
_WORKER_ARGV = ["-c", _ZIP_BOOTSTRAP, _ARCHIVE] if _ARCHIVE else ["-c", _BOOTSTRAP, _WORKER_PATH]
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
_STDERR_LINES = 50
_FAILED = Symbol("$Failed")


class MathicsEngine(Engine):
    """Mathics3 in a worker process; options: ``python`` (interpreter, default the agent's),
    ``request_timeout`` (seconds for complete/inspect, default 30)."""

    def __init__(self, host: EngineHost, options: dict[str, Any]) -> None:
        super().__init__(host, options)
        self.python = str(options.get("python") or sys.executable)
        self.request_timeout = float(options.get("request_timeout", 30.0))
        self._proc: subprocess.Popen[bytes] | None = None
        self._inbox = bytearray()  # worker frames read but not yet taken by _next_event
        self._ended = False  # the worker closed its end of the pipe
        self._stderr: deque[str] = deque(maxlen=_STDERR_LINES)
        self._stderr_reader: threading.Thread | None = None
        # Guards _state/_pending_interrupt/_closed, so that SIGINT is sent only while the
        # worker runs the cell it was meant for (between its "started" and "done").
        self._lock = threading.Lock()
        self._state = _IDLE
        self._pending_interrupt = False
        self._closed = False
        self._next_id = 0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float) -> EngineInfo:
        with self._lock:
            if self._closed or self._proc is not None:
                raise EngineError("the Mathics3 engine was already started or closed")
            try:
                self._proc = subprocess.Popen(
                    [self.python, *_WORKER_ARGV],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            except OSError as exc:
                raise EngineError(
                    f"cannot run the Python interpreter {self.python!r} for Mathics3: {exc}; "
                    "set the engine option python to an interpreter that has Mathics3 installed"
                ) from exc
        proc = self._proc
        assert proc.stdout is not None and proc.stderr is not None
        self._stderr_reader = threading.Thread(
            target=self._read_stderr, args=(proc.stderr,), daemon=True,
            name=f"mathics-stderr-{proc.pid}")
        self._stderr_reader.start()
        try:
            event = self._next_event(time.monotonic() + timeout)
        except EngineError as exc:
            raise EngineError(f"Mathics3 failed to start: {exc}") from None
        if event is None:
            self.close()
            raise EngineError(f"Mathics3 did not start within {timeout:g} s{self._tail()}")
        if event.get("ev") == "fatal":
            self.close()
            error = event.get("error", "")
            if event.get("missing"):
                how = (PEP668_ADVICE if event.get("externally_managed") else
                       f"install it with:\n    {self.python} -m pip install Mathics3")
                raise EngineError(f"Mathics3 is not installed for the Python interpreter "
                                  f"{self.python} ({error}); {how}")
            raise EngineError(
                f"Mathics3 cannot be imported by {self.python}: {error}; reinstall it with:\n"
                f"    {self.python} -m pip install --force-reinstall Mathics3{self._tail()}"
            )
        if event.get("ev") != "ready":
            self.close()
            raise EngineError(f"the Mathics3 worker sent {event!r} instead of ready")
        return EngineInfo(
            name="Mathics3",
            version=str(event.get("version", "")),
            extra={"python": self.python, "pid": proc.pid},
        )

    def alive(self) -> bool:
        proc = self._proc
        return proc is not None and _exit_status(proc) is None

    def close(self) -> None:
        with self._lock:
            proc = None if self._closed else self._proc
            self._closed = True
            self._state = _CLOSED
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except (OSError, ValueError):
                pass
        # The worker is not reaped before the group is killed, so its pid (= the group id)
        # cannot have been reused by then.
        _kill_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 2.0
        while _exit_status(proc) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        _kill_group(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            log.error("Mathics3 worker %d did not end after SIGKILL", proc.pid)
        if proc.stdout is not None:
            proc.stdout.close()
        if self._stderr_reader is not None:
            self._stderr_reader.join(timeout=1.0)
            if proc.stderr is not None and not self._stderr_reader.is_alive():
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
            self._pending_interrupt = False
        try:
            self._send({"op": op, "code": code})
            returned = False
            while True:
                event = self._next_event(None)
                assert event is not None  # no deadline: _next_event waits or raises
                if event.get("ev") == "done":
                    break
                returned = self._dispatch(event) or returned
            if op == "eval":
                self.host.emit(packet("InputNamePacket", f"In[{event.get('next')}]:= "))
            elif not returned:  # the worker failed (its message says why): still one answer
                self.host.emit(packet("ReturnPacket", _FAILED))
        except BaseException:
            with self._lock:
                if self._state != _CLOSED:
                    self._state = _IDLE
            raise

    def complete(self, prefix: str) -> list[str]:
        names = self._request("complete", prefix=prefix)
        return [str(name) for name in names] if isinstance(names, list) else []

    def inspect(self, name: str) -> dict[str, str] | None:
        bundle = self._request("inspect", name=name)
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

    def _dispatch(self, event: dict[str, Any]) -> bool:
        """Turn one worker event of a request into packets; True if it was the ReturnPacket."""
        kind = event.get("ev")
        emit = self.host.emit
        if kind == "print":
            emit(packet("TextPacket", str(event.get("text", ""))))
        elif kind == "message":
            emit(packet("MessagePacket", str(event.get("symbol", "")), str(event.get("tag", "")),
                        str(event.get("text", ""))))
        elif kind == "syntax":
            emit(packet("SyntaxPacket", int(event.get("pos", 0))))
        elif kind == "input":
            self._answer_input(event)
        elif kind == "result":
            if event.get("aborted"):
                emit(packet("ReturnPacket", ABORTED))
            else:
                emit(packet("OutputNamePacket", f"Out[{event.get('line')}]= "))
                emit(packet("ReturnPacket", dict(event.get("bundle") or {})))
            return True
        elif kind == "value":
            try:
                value = from_tagged(event.get("value"))
            except (ValueError, TypeError, KeyError) as exc:
                log.error("Mathics3 worker sent a malformed value: %r", exc)
                emit(packet("MessagePacket", "EvaluatePacket", "value",
                            f"the engine sent a malformed value ({exc})"))
                value = _FAILED
            emit(packet("ReturnPacket", value))
            return True
        return False

    def _answer_input(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        answer: str | None = None
        if kind in _INPUT_KINDS:
            try:
                answer = self.host.read_input(packet(str(kind), str(event.get("prompt", ""))))
            except InputAborted:
                answer = None
        # null aborts the worker's Input[]; if SIGINT got there first it drops the answer.
        self._send({"op": "input", "id": event.get("id"), "text": answer})

    def _request(self, op: str, **fields: Any) -> Any:
        """Send complete/inspect and wait (bounded) for its reply; later stray replies are
        recognised by id and dropped."""
        self._next_id += 1
        request_id = self._next_id
        self._send({"op": op, "id": request_id, **fields})
        deadline = time.monotonic() + self.request_timeout
        while True:
            event = self._next_event(deadline)
            if event is None:
                raise EngineError(
                    f"Mathics3 did not answer a {op} request within {self.request_timeout:g} s"
                )
            if event.get("ev") == "reply" and event.get("id") == request_id:
                return event.get("value")

    def _send(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise EngineError("the Mathics3 engine is not started")
        try:
            proc.stdin.write(encode_frame(message))
            proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise self._died() from exc

    def _next_event(self, deadline: float | None) -> dict[str, Any] | None:
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
            # The end of the pipe reports a dead worker at once; this is the backstop.
            proc = self._proc
            if proc is not None and _exit_status(proc) is not None:
                dead_since = dead_since or time.monotonic()
                if time.monotonic() - dead_since > 2 * _POLL:
                    raise self._died() from None

    def _take_event(self) -> dict[str, Any] | None:
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
            if not select.select([fd], [], [], wait)[0]:
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

    def _died(self) -> EngineError:
        """The error for a worker that has ended, with its last words."""
        if self._closed:
            return EngineError("the Mathics3 engine was closed")
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + 2.0
        while (status := _exit_status(proc)) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        how = "closed its end of the pipe" if status is None else describe_exit(status)
        if self._stderr_reader is not None:
            self._stderr_reader.join(timeout=1.0)  # let it catch the last lines
        return EngineError(f"the Mathics3 worker (pid {proc.pid}) {how}{self._tail()}")

    def _tail(self) -> str:
        lines = list(self._stderr)
        if not lines:
            return " (it wrote nothing on stderr)"
        return "; its last lines on stderr:\n" + "\n".join(lines)

    def _signal_worker(self) -> None:
        proc = self._proc
        if proc is not None:
            try:
                os.kill(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def _track(self, event: dict[str, Any]) -> bool:
        """Follow the worker's cell state (for ``interrupt``); False for "started", which
        concerns only that state."""
        kind = event.get("ev")
        if kind not in ("started", "done"):
            return True
        with self._lock:
            if self._state == _CLOSED:
                pass
            elif kind == "done":
                self._state = _IDLE
            else:
                self._state = _RUNNING
                if self._pending_interrupt:
                    self._pending_interrupt = False
                    self._signal_worker()
        return kind == "done"

    def _read_stderr(self, stream: IO[bytes]) -> None:
        """Reader thread: keep the worker's last stderr lines for error reports."""
        try:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip()
                self._stderr.append(line)
                log.debug("mathics worker: %s", line)
        except (OSError, ValueError):
            pass


def _exit_status(proc: subprocess.Popen[bytes]) -> int | None:
    """The worker's exit code (negative: killed by that signal), or None while it runs.

    Uses WNOWAIT, so the worker stays unreaped: its pid cannot be reused until ``close``.
    """
    if proc.returncode is not None:
        return proc.returncode
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return proc.poll()
    if info is None:
        return None
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return -info.si_status


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def from_tagged(node: Any) -> Any:
    """The WXF Python value of a worker's ``value`` tree (format: ``mathics_worker``)."""
    if isinstance(node, list):
        return [from_tagged(item) for item in node]
    if not isinstance(node, dict):
        return node  # None, True, False, int, float, str
    if "symbol" in node:
        return Symbol(str(node["symbol"]))
    if "head" in node:
        return Function(from_tagged(node["head"]), *(from_tagged(a) for a in node["args"]))
    if "assoc" in node:
        return {
            _dict_key(from_tagged(key)): Delayed(from_tagged(value)) if delayed
            else from_tagged(value)
            for key, value, delayed in node["assoc"]
        }
    if "array" in node:
        data = base64.b64decode(node["data"], validate=True)
        return NumericArray(str(node["array"]), node["dims"], data, packed=True)
    if "int" in node:
        return int(node["int"], 16)
    if "decimal" in node:
        return Decimal(str(node["decimal"]))
    if "complex" in node:
        real, imag = node["complex"]
        return complex(real, imag)
    if "bytes" in node:
        return base64.b64decode(node["bytes"], validate=True)
    raise ValueError(f"unknown value tag in {sorted(node)}")


def _dict_key(key: Any) -> Any:
    """A hashable stand-in for an association key, as WXF decoding makes: list → tuple,
    association → ``Association[Rule[k, v], ...]``."""
    if isinstance(key, list):
        return tuple(_dict_key(item) for item in key)
    if isinstance(key, dict):
        rule = Symbol("Rule")
        return Function(Symbol("Association"),
                        *(Function(rule, k, _dict_key(v)) for k, v in key.items()))
    return key
