"""WolframEngine: a licensed Wolfram kernel (WolframKernel) driven over WSTP through ctypes.

The engine opens a listening link, starts the kernel itself in its own process group with
``-wstp -linkprotocol P -linkconnect -linkname NAME`` (as Wolfram's own wstp-rs does) and waits
for it to connect.  Starting the process ourselves, rather than with ``-linkmode launch``, gives
its pid and process group (to kill it and every subkernel), and its stdout/stderr: the words a
kernel without a licence prints before it exits.  ``WSActivate`` waits forever for a kernel that
never connects, so it runs in a thread under a watchdog that watches the process and the clock.

One reader thread owns reading: it polls ``WSReady`` and turns each packet into an event on a
queue.  The evaluation thread sends requests and runs the conversation (``session``) over those
events; ``interrupt`` (from any thread) only queues an event, so that the conversation, on the
evaluation thread, sends the WSTP messages and answers the menus.  Every WSTP call holds the
link's lock.  Cells are evaluated by the helper package ``agent/wl/RKJupyter.wl``, loaded at
start: EvaluatePacket[RKJupyter`Evaluate["cell text"]], and text evaluated for its value (the
link's EvaluatePacket, a Manipulate's view) as EvaluatePacket[RKJupyter`EvaluateExpression[…]].

Who is at the other end: WSTP links do not authenticate, and the link's name is on the
kernel's command line, which every user of the host can read in ``ps``; the WSTP reference
promises nothing about who may connect to a SharedMemory (or TCPIP) link.  So before anything
else crosses the link, the engine asks its peer for ``Environment["RK_WSTP_NONCE"]``: a random
value put only in the environment of the kernel it started (``/proc/PID/environ`` is readable
by the process's owner alone).  A peer that cannot answer it is not our kernel — another user
connected first — and the start fails (code ``engine.link-impostor``) with nothing sent to it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pkgutil
import queue
import re
import secrets
import shlex
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from ....link.expr import Function, Symbol
from ....link.launcher import OUTPUT_LIMIT
from ....link.packets import packet
from ..base import Engine, EngineError, EngineHost, EngineInfo
from ..process import OutputTail, describe_exit, exit_status, kill_group, reap, spawn, wait_exit
from ..slurm import SlurmStep, start_step
from . import discovery, wstp
from .session import (
    AT_DEADLINE,
    NOT_ANSWERING,
    Call,
    Cell,
    Conversation,
    Escalation,
    Event,
    Expression,
    converse,
    prompt_failure,
    start_failure,
    start_prompt,
)

log = logging.getLogger(__name__)

HELPER = Path(__file__).resolve().parents[2] / "wl" / "RKJupyter.wl"
HELPER_RESOURCE = ("rk_jupyter.agent", "wl/RKJupyter.wl")
DEFAULT_PROTOCOL = "SharedMemory"
REQUEST_TIMEOUT = 30.0
_MIN_POLL, _MAX_POLL = 0.001, 0.05  # reader's WSReady polling, backing off while idle
_MAX_ILLEGAL = 100  # unreadable packets in a row before the link counts as broken
_OUTPUT_LINES = 100
_OUTPUT_WIDTH = 500  # characters kept of a line
#: Seconds to wait for the link's lock before a write counts as stuck (the reader holds it
#: only while a packet is read).
LOCK_WAIT = 10.0
# A symbol name or its beginning: letters, digits, $ and context marks (no pattern syntax).
_SYMBOLISH = re.compile(r"(?:[$`]|[^\W_])+")
#: The kernel's environment variable with the value that proves it is the peer of our link.
NONCE_ENV = "RK_WSTP_NONCE"
#: The error code of a start whose link peer is not the kernel we started.
IMPOSTOR = "engine.link-impostor"



def helper_file() -> Path:
    """The helper package as a file the kernel can ``Get``.

    Inside the agent's zipapp (ssh deploy) it is no file of its own: it is then written once,
    by content, next to the zipapp's cache."""
    if HELPER.is_file():
        return HELPER
    try:
        data = pkgutil.get_data(*HELPER_RESOURCE)
    except OSError:
        data = None
    if not data:
        raise EngineError(f"rk_jupyter's helper package is missing: {HELPER}; reinstall "
                          "rk_jupyter on this host")
    target = (Path.home() / ".cache" / "rk_jupyter"
              / f"RKJupyter-{hashlib.sha256(data).hexdigest()[:16]}.wl")
    if not target.is_file() or target.read_bytes() != data:  # loaded is what was deployed
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        partial.replace(target)
    return target

#: How a kernel in a Slurm job gets the link's peer-check value: the first line of srun's
#: stdin, read by the shell that then becomes the kernel (``sh -c … rk-wolfram KERNEL ARGS``).
_NONCE_FROM_STDIN = f'IFS= read -r {NONCE_ENV} && export {NONCE_ENV} && exec "$@"'


class WolframEngine(Engine):
    """A Wolfram kernel.  Options: ``kernel_path`` (executable or installation directory),
    ``kernel_args`` (extra command-line arguments, e.g. ``["-pwfile", path]``),
    ``link_protocol`` (``SharedMemory``, the default, or ``TCPIP``), ``warm_spare`` (keep a
    started kernel idle for the next engine of this configuration, ``spare``; default
    false: a spare holds a licence seat), ``request_timeout``
    (seconds for completion and inspection, default 30), ``kill_after`` (seconds after an
    interrupt the kernel does not answer before it is ended; default: never, the cell is
    released and ending the kernel is the user's choice), ``slurm`` (srun options: the kernel
    runs on a compute node as a Slurm job step, see ``start``).

    With ``slurm`` the kernel connects back over a TCPIP link to the listening link on the
    login node, and the link's peer check (``NONCE_ENV``) authenticates it; the value reaches
    the kernel's environment through srun's stdin (``_NONCE_FROM_STDIN``), never through a
    command line or the environment srun exports, so Slurm records no secret.  Not run
    against a licensed kernel (none here): tested with fake kernels on the real Slurm bed.
    Unlike the Mathics3 engine, a start waits for a queued job within ``start_timeout``."""

    def __init__(self, host: EngineHost, options: dict[str, Any]) -> None:
        super().__init__(host, options)
        self.request_timeout = float(options.get("request_timeout", REQUEST_TIMEOUT))
        kill_after = options.get("kill_after")
        self.escalation = Escalation(
            kill_after=None if kill_after in (None, "") else float(kill_after))
        self.installation: discovery.Installation | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._link: wstp.Link | None = None
        self._events: queue.Queue[Event] = queue.Queue()
        self._output: OutputTail | None = None
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()  # guards _closed, _in_flight, _next_id
        self._closed = False
        self._in_flight: int | None = None
        self._next_id = 0
        # A released conversation whose answer the kernel still owes; whoever converses (a
        # request, or an interrupt while idle) holds _conversing.
        self._pending: Conversation | None = None
        self._conversing = threading.Lock()
        self._start_words: list[str] | None = None  # what the kernel says between start calls
        self.slurm = str(options.get("slurm") or "")
        self._step: SlurmStep | None = None  # with slurm: the kernel's job step (srun)
        self._prestarted: EngineInfo | None = None  # started as a spare, not yet taken

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def prestart(self, timeout: float) -> None:
        """Start now, for a ``start`` later that returns at once (a warm spare, ``spare``)."""
        self._prestarted = self._start(timeout)

    def start(self, timeout: float) -> EngineInfo:
        info, self._prestarted = self._prestarted, None
        if info is not None:
            return EngineInfo(info.name, info.version, {**info.extra, "warm_spare": True})
        return self._start(timeout)

    def _start(self, timeout: float) -> EngineInfo:
        deadline = time.monotonic() + timeout
        if self._closed or self._proc is not None:
            raise EngineError("the Wolfram engine was already started or closed")
        helper = helper_file()
        inst = discovery.locate(self.options.get("kernel_path"))
        self.installation = inst
        library = wstp.load(inst.library, inst.api)
        protocol = str(self.options.get("link_protocol") or DEFAULT_PROTOCOL)
        if self.slurm:
            protocol = "TCPIP"  # the kernel runs on a compute node: no shared memory
        try:
            link = wstp.Link.listen(library, protocol)
            with link.lock:
                name = link.name()
        except wstp.WSTPError as exc:
            raise EngineError(f"cannot open a {protocol} link with {inst.library}: {exc}") from None
        extra = self.options.get("kernel_args") or []
        extra = shlex.split(extra) if isinstance(extra, str) else [str(a) for a in extra]
        argv = [str(inst.kernel), inst.link_flag, "-linkprotocol", protocol, "-linkconnect",
                "-linkname", name, *extra]
        nonce = secrets.token_hex(16)
        try:
            if self.slurm:
                self._step = start_step(["sh", "-c", _NONCE_FROM_STDIN, "rk-wolfram", *argv],
                                        self.slurm, unbuffered=False, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                self._proc = self._step.proc
                assert self._proc.stdin is not None
                self._proc.stdin.write(f"{nonce}\n".encode())
                self._proc.stdin.close()
            else:
                self._proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, env={**os.environ, NONCE_ENV: nonce})
        except (OSError, EngineError) as exc:
            with link.lock:
                link.close()
            if self._step is not None:
                self._step.close()
            if isinstance(exc, EngineError):
                raise
            raise EngineError(f"cannot run the Wolfram kernel {inst.kernel}: {exc}") from None
        assert self._proc.stdout is not None
        # A kernel talks over WSTP; what it writes on stdout is the exceptional: licence
        # trouble, and the errors of a front end it launches (UsingFrontEnd), for the log.
        self._output = OutputTail(self._proc.stdout, lines=_OUTPUT_LINES, width=_OUTPUT_WIDTH,
                                  label=f"wolfram kernel {self._proc.pid}", level=logging.INFO)
        self._start_words = []
        try:
            self._activate(link, deadline, timeout)
            self._link = link
            self._reader = threading.Thread(target=self._read_packets, daemon=True,
                                            name=f"wolfram-link-{self._proc.pid}")
            self._reader.start()
            check = self._starting(Function(Symbol("Environment"), NONCE_ENV), deadline)
            if check.aborted:
                said = "\n".join(check.output) or "nothing"
                raise EngineError(f"the Wolfram kernel {inst.kernel} did not answer its first "
                                  f"evaluation within {timeout:g} s; it said: {said}")
            self._check_peer(check.value, nonce)
            limit = int(self.options.get("output_limit") or OUTPUT_LIMIT)
            call = self._starting(Function(Symbol("CompoundExpression"),
                                           Function(Symbol("Get"), str(helper)),
                                           Function(Symbol("Set"),
                                                    Symbol("RKJupyter`Private`$maxText"), limit),
                                           Function(Symbol("RKJupyter`Info"))), deadline)
        except EngineError as exc:
            self.close()
            if self._step is None:
                raise
            kernel = self.installation.kernel if self.installation else "WolframKernel"
            raise EngineError(f"{exc.cause} (the kernel ran on a compute node, as a Slurm job "
                              f"step: srun {self.slurm}; what it says there shows with `srun "
                              f"{self.slurm} {kernel} -licenseinfo` on the login node)",
                              exc.fix, code=exc.code) from None
        except BaseException:
            self.close()
            raise
        finally:
            self._start_words = None
        info = call.value
        if not isinstance(info, dict):
            self.close()
            said = "\n".join(call.output) or "nothing"
            if call.aborted:
                raise EngineError(f"the Wolfram kernel {inst.kernel} did not finish starting "
                                  f"(loading {helper}) within {timeout:g} s; it said: {said}")
            raise EngineError(f"the Wolfram kernel {inst.kernel} could not load rk_jupyter's "
                              f"helper {helper}: it answered {info!r}; it said: {said}")
        return EngineInfo(
            name="Wolfram",
            version=str(info.get("version", "")),
            extra={"kernel": str(inst.kernel), "library": str(inst.library),
                   "pid": self._proc.pid, "system_id": str(info.get("systemID", "")),
                   "protocol": protocol},
        )

    def alive(self) -> bool:
        proc = self._proc
        return (not self._closed and self._link is not None and proc is not None
                and exit_status(proc) is None)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        proc, link = self._proc, self._link
        if self._step is not None:  # the job ends, queued or running: Slurm ends the kernel
            self._step.close()  # and every process of its step (subkernels) on the node
        if proc is not None and exit_status(proc) is None:
            if link is not None and link.message_lock.acquire(timeout=1.0):
                try:
                    link.put_message(wstp.TERMINATE_MESSAGE)  # ask first: it may save nothing,
                except wstp.WSTPError:  # but it can end its subkernels cleanly
                    pass
                finally:
                    link.message_lock.release()
            wait_exit(proc, 2.0)
        if proc is not None:
            reap(proc, "Wolfram kernel")
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        if link is not None and not (self._reader and self._reader.is_alive()):
            if link.lock.acquire(timeout=1.0):
                try:
                    if link.message_lock.acquire(timeout=1.0):
                        try:
                            link.close()
                        finally:
                            link.message_lock.release()
                finally:
                    link.lock.release()
        self._events.put(("LinkDied", ("the engine was closed",)))  # wakes a waiting request

    # -- requests -------------------------------------------------------------------------

    def evaluate(self, code: str) -> None:
        cell = Cell(self.host, _LinkKernel(self), time.monotonic, self.escalation)
        self._run(cell, Function(Symbol("RKJupyter`Evaluate"), code))

    def evaluate_expression(self, code: str) -> None:
        """EvaluatePacket: the value of the text (also a Manipulate's view, whose text is
        ``RKJupyter`ManipulateView[id, values]``), through the helper, so that it is parsed
        one expression at a time and a syntax error evaluates nothing, as in a cell."""
        expression = Expression(self.host, _LinkKernel(self), time.monotonic, self.escalation)
        self._run(expression, Function(Symbol("RKJupyter`EvaluateExpression"), code))

    def complete(self, prefix: str) -> list[str]:
        if not _SYMBOLISH.fullmatch(prefix) or prefix[0].isdigit():
            return []
        names = self._request(Function(Symbol("RKJupyter`Complete"), prefix))
        return [str(name) for name in names] if isinstance(names, list) else []

    def inspect(self, name: str) -> dict[str, str] | None:
        if not _SYMBOLISH.fullmatch(name) or name[0].isdigit() or name.endswith("`"):
            return None
        bundle = self._request(Function(Symbol("RKJupyter`Inspect"), name))
        if isinstance(bundle, dict) and bundle:
            return {str(key): str(value) for key, value in bundle.items()}
        return None

    def interrupt(self) -> None:
        """Interrupt the request in flight.  While idle with a released cell (the kernel
        answered no interrupt), this is the user's second interrupt: the kernel is ended, on a
        thread of its own (its escalation needs someone to converse)."""
        with self._lock:
            request = self._in_flight
        if request is not None:
            self._events.put(("RKInterrupt", (request,)))
        elif self._pending is not None:
            threading.Thread(target=self._end_pending, daemon=True,
                             name="wolfram-second-interrupt").start()

    def _end_pending(self) -> None:
        while not self._conversing.acquire(timeout=0.05):
            with self._lock:
                request = self._in_flight
            if request is not None:  # a request has taken the released cell up: its turn
                self._events.put(("RKInterrupt", (request,)))
                return
        try:
            pending = self._pending
            if pending is None or pending.done:
                return
            pending.interrupt()
            request = self._begin_request()
            try:
                converse(pending, lambda wait: self._next_event(request, wait))
            finally:
                self._end_request()
            self._pending = None
        except EngineError:
            pass  # the link is gone: the session learns it from alive()
        finally:
            self._conversing.release()

    # -- internals ------------------------------------------------------------------------

    def _starting(self, expr: Any, deadline: float) -> Call:
        """Evaluate ``expr`` during ``start``, within the start's deadline; a kernel that dies
        meanwhile (no licence, no free kernel process) or asks a question (a licence prompt)
        is reported in its own words."""
        call = Call(_LinkKernel(self), time.monotonic, AT_DEADLINE,
                    max(0.0, deadline - time.monotonic()), starting=True)
        try:
            self._run(call, expr)
        except EngineError as exc:
            if self._proc is None or self._output is None:
                raise
            kernel = str(self._proc.args[0])
            prompt = exc.prompt if isinstance(exc, _Prompted) else call.prompt
            if prompt is None and call.died is None:
                raise
            self._wait_output(1.0)
            words = "\n".join([*(self._start_words or []), *call.output,
                               *self._output.lines()])
            if prompt is not None:
                raise prompt_failure(kernel, prompt, words) from None
            if call.aborted or call.interrupted:
                raise EngineError(f"the Wolfram kernel {kernel} did not answer within the "
                                  "start timeout and was stopped; it said: "
                                  f"{words or 'nothing'}",
                                  "run the kernel by hand on this host to see why it is slow; "
                                  "a slow licence server may need a larger engine option "
                                  "start_timeout") from None
            raise start_failure(kernel, words, exit_status(self._proc)) from None
        return call

    @staticmethod
    def _check_peer(answer: Any, nonce: str) -> None:
        """Make sure the link's peer is the kernel we started (see the module's docstring):
        it answered ``Environment[NONCE_ENV]`` with the value only that kernel was given."""
        if answer != nonce:
            raise EngineError(
                "the process at the other end of the Wolfram kernel's WSTP link is not the "
                "kernel rk_jupyter started (it did not know the value only that kernel was "
                "given): another process on this host connected to the link first",
                "nothing was sent to it and the kernel was stopped; start the kernel again, "
                "and if this recurs tell the host's administrator, since another user may be "
                "trying to intercept Wolfram kernels", code=IMPOSTOR)

    def _request(self, expr: Any) -> Any:
        if self._pending is not None:
            return None  # the kernel is still busy with a released cell: no answer now
        call = Call(_LinkKernel(self), time.monotonic, self.escalation, self.request_timeout)
        self._run(call, expr)
        if call.aborted:
            log.warning("Wolfram kernel: request %s aborted after %g s", expr.head.name,
                        self.request_timeout)
            return None
        return call.value

    def _run(self, conversation: Conversation, expr: Any) -> None:
        """Send EvaluatePacket[expr] and converse until it is answered; EngineError if the
        kernel died meanwhile, or (code NOT_ANSWERING) if it answered no interrupt and the
        conversation was released.

        A conversation released earlier is taken up first: the kernel answers requests in
        order, so this one waits for that answer (an interrupt meanwhile is the second one,
        which ends the kernel)."""
        with self._conversing:
            if self._closed or self._link is None:
                raise EngineError("the Wolfram engine is not running")
            request = self._begin_request()
            try:
                pending = self._pending
                if pending is not None:
                    converse(pending, lambda wait: self._next_event(request, wait))
                    self._pending = None
                    if pending.died is not None:
                        raise EngineError(pending.died)
                self._drain_idle_events()
                conversation.kernel.evaluate(expr)
                converse(conversation, lambda wait: self._next_event(request, wait))
            finally:
                self._end_request()
            if conversation.died is not None:
                raise EngineError(conversation.died)
            if conversation.released:
                self._pending = conversation
                raise EngineError(
                    f"the kernel is not answering the interrupt ({conversation.waited:.0f} s): "
                    "it is still computing, with all its definitions",
                    "interrupt again to end it (its definitions are then lost and the next "
                    "cell starts a fresh kernel), or run the next cell to wait for it; "
                    "restarting the kernel also ends it", code=NOT_ANSWERING)

    def _begin_request(self) -> int:
        with self._lock:
            self._next_id += 1
            self._in_flight = self._next_id
            return self._next_id

    def _end_request(self) -> None:
        with self._lock:
            self._in_flight = None

    def _next_event(self, request: int, wait: float) -> Event | None:
        try:
            name, args = self._events.get(timeout=max(0.0, wait))
        except queue.Empty:
            return None
        if name == "RKInterrupt":
            return ("RKInterrupt", ()) if args == (request,) else None
        if name == "LinkDied":
            self._events.put((name, args))  # every later wait sees it too
        return name, args

    def _drain_idle_events(self) -> None:
        """Deal with what the kernel sent between requests: text from background tasks is
        shown, a menu is answered, anything else left over is dropped."""
        message: tuple[Any, ...] | None = None
        while True:
            try:
                name, args = self._events.get_nowait()
            except queue.Empty:
                return
            if name == "LinkDied":
                self._events.put((name, args))
                raise EngineError(str(args[0]))
            starting = self._start_words is not None
            prompt = start_prompt(name, args) if starting else None
            if prompt is not None:
                _LinkKernel(self).message(wstp.TERMINATE_MESSAGE)
                raise _Prompted(prompt)
            if name == "MenuPacket":
                _LinkKernel(self).answer("a")
            elif name == "MessagePacket":
                message = args
            elif name == "TextPacket" and args:
                text = str(args[0]).removesuffix("\n")
                if starting and self._start_words is not None:
                    self._start_words.append(text)  # the start error quotes it
                elif message is not None and len(message) == 2:
                    symbol, tag = (getattr(x, "name", x) for x in message)
                    self.host.emit(packet("MessagePacket", str(symbol), str(tag), text))
                else:
                    self.host.emit(packet("TextPacket", text))
                message = None
            else:
                log.debug("Wolfram kernel: dropping %s%r sent between requests", name, args)

    def _activate(self, link: wstp.Link, deadline: float, timeout: float) -> None:
        """Wait for the kernel to connect, or for it to end, or for the deadline.

        ``WSActivate`` blocks until the other side comes, so it is called only once
        ``WSReady`` says that side exists (the reference: "When called on an inactive link,
        WSReady() can be used to determine whether the other side of the link has been
        created"); a kernel that never connects leaves no thread behind, and the link is
        closed."""
        proc, inst = self._proc, self.installation
        assert proc is not None and inst is not None
        try:
            while True:
                with link.lock:
                    connected = link.ready()
                if connected:
                    break
                code = exit_status(proc)
                if code is not None:
                    self._wait_output(2.0)
                    raise start_failure(str(inst.kernel), self._words(), code)
                if time.monotonic() >= deadline:
                    self._kill()
                    self._wait_output(2.0)
                    words = self._words()
                    error = start_failure(str(inst.kernel), words, None) if words else None
                    raise EngineError(
                        f"the Wolfram kernel {inst.kernel} did not connect within {timeout:g} s "
                        "and was stopped"
                        + (f"; {error}" if error else ": it printed nothing. Check that it "
                           f"starts when run by hand on this host: `{inst.kernel}`")
                    )
                time.sleep(0.02)
            self._activate_connected(link, deadline, timeout)
        except BaseException:
            if link.lock.acquire(timeout=1.0):  # not held: no WSActivate is running
                try:
                    link.close()
                finally:
                    link.lock.release()
            raise

    def _activate_connected(self, link: wstp.Link, deadline: float, timeout: float) -> None:
        """WSActivate on a link whose other side exists: it should return at once, but is
        still watched (a kernel that connects and then stops would block it)."""
        proc, inst = self._proc, self.installation
        assert proc is not None and inst is not None
        done = threading.Event()
        failure: list[wstp.WSTPError] = []

        def activate() -> None:
            try:
                with link.lock:
                    link.activate()
            except wstp.WSTPError as exc:
                failure.append(exc)
            finally:
                done.set()

        threading.Thread(target=activate, daemon=True, name=f"wstp-activate-{proc.pid}").start()
        while not done.wait(0.05):
            if exit_status(proc) is not None or time.monotonic() >= deadline:
                self._kill()
                self._wait_output(2.0)
                raise EngineError(f"the Wolfram kernel {inst.kernel} connected but did not "
                                  f"complete the WSTP connection within {timeout:g} s; it "
                                  f"said: {self._words() or 'nothing'}",
                                  f"check that `{inst.kernel}` starts when run by hand on this "
                                  "host, then start the kernel again")
        if failure:
            code = wait_exit(proc, 1.0)
            self._wait_output(1.0)
            if code is not None:
                raise start_failure(str(inst.kernel), self._words(), code)
            raise EngineError(f"the WSTP connection with {inst.kernel} failed: {failure[0]}"
                              + (f"; the kernel said:\n{self._words()}" if self._words() else ""))

    def _read_packets(self) -> None:
        """Reader thread: the kernel's packets, decoded, become events; then LinkDied."""
        link, proc = self._link, self._proc
        assert link is not None and proc is not None
        poll, illegal = _MIN_POLL, 0
        while not self._stop.is_set():
            try:
                with link.lock:
                    event = link.read_packet() if link.ready() else None
                    if event is None and link.error() != wstp.WSEOK:
                        raise link.failure("the link to the kernel failed")
                illegal = illegal + 1 if event and event[0] == "IllegalPacket" else 0
                if illegal > _MAX_ILLEGAL:
                    raise wstp.WSTPError(f"{illegal} unreadable packets in a row")
            except wstp.WSTPError as exc:
                self._events.put(("LinkDied", (self._death(str(exc)),)))
                return
            if event is not None:
                name, args = event
                self._events.put((name, tuple(wstp.to_python(a) for a in args)))
                poll = _MIN_POLL
            elif exit_status(proc) is not None:
                self._events.put(("LinkDied", (self._death("its link closed"),)))
                return
            else:
                self._stop.wait(poll)
                poll = min(poll * 2, _MAX_POLL)

    def _death(self, reason: str) -> str:
        """Why the kernel is gone, with its last words."""
        proc = self._proc
        assert proc is not None
        code = wait_exit(proc, 2.0)
        self._wait_output(1.0)
        if self._closed:
            return "the Wolfram engine was closed"
        if code is None:
            how = f"broke its link ({reason})"
        elif code > 0:
            how = f"{describe_exit(code)} ({reason})"
        else:
            how = describe_exit(code)
        words = self._words()
        return f"the Wolfram kernel (pid {proc.pid}) {how}" + (
            f"; its last words:\n{words}" if words else "")

    def _kill(self) -> None:
        """Kill the kernel's process group (its subkernels too), unless it was reaped."""
        if self._proc is not None:
            kill_group(self._proc)

    def _wait_output(self, timeout: float) -> None:
        """Let the output reader catch the kernel's last words (its output has ended)."""
        if self._output is not None:
            self._output.wait(timeout)

    def _words(self) -> str:
        return self._output.text() if self._output is not None else ""


class _Prompted(EngineError):
    """The kernel asked a question between the start's requests (a licence prompt)."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        super().__init__(f"the kernel asked “{prompt}” before it could evaluate")


class _LinkKernel:
    """``session.Kernel`` over the engine's link; a failed write means the link is broken."""

    def __init__(self, engine: WolframEngine) -> None:
        self.engine = engine

    def evaluate(self, expr: Any) -> None:
        self._put(lambda link: link.put_packet(Function(Symbol("EvaluatePacket"), expr)))

    def answer(self, text: str) -> None:
        self._put(lambda link: link.put_answer(text))

    def enter_text(self, text: str) -> None:
        self._put(lambda link: link.put_packet(Function(Symbol("EnterTextPacket"), text)))

    def reply(self, expr: Any) -> None:
        self._put(lambda link: link.put_packet(Function(Symbol("ReturnPacket"), expr)))

    def message(self, code: int) -> None:
        """Out of band, under the link's message lock: never behind a read (see wstp)."""
        self._put(lambda link: link.put_message(code), message=True)

    def kill(self) -> None:
        self.engine._kill()

    def _put(self, write: Any, message: bool = False) -> None:
        link = self.engine._link
        if link is None:
            raise EngineError("the Wolfram engine is not running")
        lock = link.message_lock if message else link.lock
        if not lock.acquire(timeout=LOCK_WAIT):
            raise EngineError(f"the link to the Wolfram kernel is stuck: a read did not end "
                              f"within {LOCK_WAIT:g} s",
                              "interrupt the cell (the kernel is ended if it does not answer) "
                              "or restart the kernel")
        try:
            if link.closed:
                raise EngineError("the Wolfram engine was closed")
            write(link)
        except wstp.WSTPError as exc:
            raise EngineError(self.engine._death(str(exc))) from None
        finally:
            lock.release()
