"""One kernel's conversation with one engine, on one channel of a link."""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from ..link.connection import Link
from ..link.expr import Function
from ..link.frames import LinkError
from ..link.launcher import ENGINE_START_TIMEOUT
from ..link.outbox import ACK, Outbox
from ..link.packets import (
    ABORTED,
    BAD_REQUEST_ERROR,
    ENGINE_START_ERROR,
    ENGINE_STOPPED_ERROR,
    INTERNAL_ERROR,
    UNSUPPORTED_ERROR,
    error_packet,
    line_number,
    packet,
    packet_name,
)
from .engines import Engine, EngineError, create_engine
from .engines.base import EngineEnded, EngineUnsupported, InputAborted

log = logging.getLogger("rk_jupyter.agent")

#: Packets kept for a kernel that acknowledges nothing, before the oldest are forgotten.
MAX_UNACKED = 100_000
#: Bytes of output (roughly: the text they carry) a persistent session (label "persistent")
#: keeps for a kernel that is away, before the oldest packets are forgotten.
MAX_UNACKED_BYTES = 10 << 20
_QUEUED = {"EnterTextPacket", "EvaluatePacket", "RKComplete", "RKInspect"}
#: Requests that a front end waits for the end of (a cell, an expression); a kernel that
#: takes over a session is told which of them it owes the rest of (``Session.owed``).
_EVALUATIONS = ("EnterTextPacket", "EvaluatePacket")
#: What a request that needs no engine is answered with while there is none (a completion
#: or an inspection does not start a fresh engine).
_WITHOUT_ENGINE = {"RKComplete": ("RKCompletions", []), "RKInspect": ("RKInspection", None)}
_HELD = {"OutputNamePacket", "ReturnPacket", "ReturnTextPacket", "InputNamePacket"}
_STOP = object()
QUEUE_TICK = 0.25  # seconds: how soon an interrupt or a request is seen while queued


class Session:
    """Owns an engine; evaluates requests in order on its own thread.

    A session has a name unique in its agent and is bound to at most one (link, channel) at a
    time: the link's reader thread calls ``handle`` for each packet of that channel;
    interrupts act at once, everything else queues behind the running evaluation.  When its
    link goes, a session with ``keep`` > 0 waits that long to be attached again (the
    provisioner opens it before the kernel process exists; a kernel whose network dropped
    comes back); otherwise it ends.

    Nothing is lost across links: both sides count the session's packets (every packet on its
    channel but RKAck and RKAttached, ``rk_jupyter.link.outbox``), the session keeps what it
    sent until the kernel acknowledges it (RKAck[count], after every evaluation) and, on
    attach, sends again exactly what the kernel has not seen, while telling it how many of its
    packets arrived.

    An engine that ends (Quit[], a crash, a signal, memory) does not end the session: the
    request it was serving ends with RKEngineDied, and the next request that needs an engine
    starts a fresh one the same way the first was started (``_start_engine``), announced by
    RKEngineRestarted.  So no request of a kernel ever waits on an engine that is gone.
    """

    def __init__(
        self,
        name: str,
        engine_name: str,
        options: dict[str, Any],
        on_closed: Callable[[Session], None],
        keep: float = 0.0,
        label: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.engine_name = engine_name
        self.options = options
        self.keep = keep
        # What the launcher said this session is (a persistent kernel's notebook, kernelspec
        # and user: how a later kernel of the same notebook finds it, ``summary``).
        self.label = dict(label or {})
        self.started_at = time.time()
        self.last_active = self.started_at
        self.detached_at: float | None = None
        self.line: int | None = None  # n of the last In[n] the engine asked for
        # The evaluation requests taken, oldest first, each with the count of its last packet
        # once it ended: those whose end the kernel has not acknowledged are ``owed``.
        self._asked: deque[list[Any]] = deque()
        self.info: dict[str, Any] | None = None
        self.channel = 0
        self._link: Link | None = None
        self._outbox = Outbox(MAX_UNACKED,
                              MAX_UNACKED_BYTES if self.label.get("persistent") else None)
        self._held: list[Function] = []
        self._bind_lock = threading.Lock()
        self._on_closed = on_closed
        self._requests: queue.Queue[Any] = queue.Queue()
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._waiting_input = threading.Event()
        self._closed = threading.Event()
        self.engine: Engine | None = None
        self.restarts = 0
        self.last_end = ""  # why the last engine ended
        self._ended: EngineEnded | None = None  # the current engine ended, not yet replaced
        # A queued engine (its start returned before it can evaluate, e.g. a PENDING Slurm
        # job): the request that waits for it, an interrupt that stops that wait, and the
        # display in that request's cell that shows the wait.
        self._queued = False
        self._waiting: Function | None = None
        self._stop_waiting = threading.Event()
        self._wait_display: tuple[str, str] | None = None  # (display id, text shown)
        self._thread = threading.Thread(target=self._run, name=f"session-{name}", daemon=True)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def received(self) -> int:
        """How many of the kernel's packets arrived (RKAttached tells the kernel)."""
        return self._outbox.received

    @property
    def forgotten(self) -> int:
        """How many of our packets were forgotten unacknowledged (``MAX_UNACKED_BYTES``)."""
        return self._outbox.forgotten

    @property
    def bound(self) -> bool:
        return self._link is not None

    def bind(self, link: Link, channel: int, seen: int | None = None) -> None:
        """Deliver this session's packets over ``link`` on ``channel`` from now on.

        ``seen`` is how many of our packets the kernel has: the rest is sent again first.
        A previous link is closed, so that a send stuck on a dead network lets go at once.
        """
        old = self._link
        if old is not None and old is not link:
            old.close()
        with self._bind_lock:
            self._link, self.channel = link, channel
            self.detached_at = None
            self._held = []
            resend = self._outbox.resend(seen)
            if resend:
                self._deliver(link, channel, *resend)

    def unbind(self, link: Link) -> bool:
        """Forget ``link``; False if the session was bound to another one meanwhile."""
        with self._bind_lock:
            if self._link is not link:
                return False
            self._link = None
            self.detached_at = time.time()
            return True

    def start(self) -> None:
        self._thread.start()

    def emit(self, pkt: Function) -> None:
        """Send a packet now, except the end of a cell (Out[n] name, result, next In[n] name),
        which waits for the request to end and then travels in one frame with our RKAck:
        one header, one flush and one wake-up of the kernel."""
        with self._bind_lock:
            if not self._outbox.record(pkt):
                log.warning("session %s: more output waits for the kernel than the agent "
                            "keeps: the oldest is forgotten", self.name)
            if packet_name(pkt) == "InputNamePacket" and pkt.args:
                self.line = line_number(pkt.args[0]) or self.line
            self._held.append(pkt)
            if packet_name(pkt) not in _HELD:
                self._flush_locked()

    def _flush_locked(self, *extra: Function) -> None:
        batch, self._held = [*self._held, *extra], []
        if batch and self._link is not None:
            self._deliver(self._link, self.channel, *batch)

    def _deliver(self, link: Link, channel: int, *pkts: Function) -> bool:
        try:
            link.send_many(channel, pkts)
            return True
        except LinkError as exc:
            log.info("session %s: %d packet(s) kept for the kernel: %s", self.name, len(pkts),
                     exc)
            return False

    def acknowledged(self) -> int:
        """How many of our packets are acknowledged (by any link): a kernel that attaches
        counts on from there, also when another client (the provisioner) saw the first."""
        with self._bind_lock:
            return self._outbox.acknowledged()

    def owed(self) -> list[str]:
        """The evaluation requests (their packet names, oldest first) whose answers the kernel
        has not all acknowledged: running, queued, or ended with output it may not have seen.
        A kernel process that takes over the session (a persistent kernel re-attached by a
        new Jupyter server) shows their output, which the attach sends again, and waits for
        their ends before its own (``Evaluator.adopt``)."""
        with self._bind_lock:
            acknowledged = self._outbox.acknowledged()
            return [name for name, end in self._asked if end is None or end > acknowledged]

    def summary(self) -> dict[str, Any]:
        """What ``rk-jupyter sessions`` shows of this session (RKSessions)."""
        with self._bind_lock:
            running = any(end is None for _, end in self._asked)
            attached = self._link is not None
            detached_at = self.detached_at
        return {"name": self.name, "label": self.label, "engine": self.engine_name,
                "started": self.started_at, "last_active": self.last_active,
                "state": "running" if running else "idle", "attached": attached,
                "keep": self.keep,
                "expires": None if attached or detached_at is None or self.keep <= 0
                else detached_at + self.keep,
                "line": self.line, "restarts": self.restarts}

    def _end_request(self, request: Any = None) -> None:
        """Send what was held, and tell the kernel how many of its packets arrived, so it can
        forget them.  ``request``: the one that ended (None: an evaluation)."""
        with self._bind_lock:
            self._flush_locked(self._outbox.ack())
            if request is None or packet_name(request) in _EVALUATIONS:
                self._ended_evaluation()

    def _ended_evaluation(self) -> None:
        """The oldest evaluation not ended has ended with the last packet sent; forget those
        whose ends the kernel acknowledged (under the bind lock)."""
        self.last_active = time.time()
        for entry in self._asked:
            if entry[1] is None:
                entry[1] = self._outbox.sent
                break
        acknowledged = self._outbox.acknowledged()
        while self._asked and self._asked[0][1] is not None \
                and self._asked[0][1] <= acknowledged:
            self._asked.popleft()

    def read_input(self, prompt: Function) -> str:
        while not self._answers.empty():
            self._answers.get_nowait()
        self._waiting_input.set()
        try:
            self.emit(prompt)
            answer = self._answers.get()
        finally:
            self._waiting_input.clear()
        if answer is None:
            raise InputAborted()
        return answer

    def handle(self, expr: Any) -> None:
        name = packet_name(expr)
        if name == ACK:
            with self._bind_lock:  # emit changes the kept packets too
                self._outbox.take(expr)
            return
        self._outbox.take(expr)  # counted: this reader thread alone writes the count
        if name in _QUEUED:
            self.last_active = time.time()
            if name in _EVALUATIONS:
                with self._bind_lock:
                    self._asked.append([name, None])
            self._requests.put(expr)
        elif name == "TextPacket" and expr.args and isinstance(expr.args[0], str):
            self._answers.put(expr.args[0])
        elif name in ("RKInterrupt", "RKAbort"):
            log.info("session %s: %s", self.name, name)
            if self._waiting_input.is_set():
                self._answers.put(None)
            if self._queued:
                self._stop_waiting.set()
            elif self.engine is not None:
                self.engine.interrupt()
                if self.engine.stopped():
                    self.emit(packet("MessagePacket", "General", "stopped",
                                     self.engine.stopped_notice()))
        elif name == "RKEngineState":  # answered now, also while a cell runs
            self.emit(packet("RKEngineStatus", self.engine_status()))
        elif name == "RKTerminate":
            how = expr.args[0] if expr.args and isinstance(expr.args[0], dict) else {}
            self.close(restart=how.get("restart") is True)
        else:
            log.warning("session %s: ignoring unexpected %r", self.name, name or expr)

    def close(self, restart: bool = False) -> None:
        """End the engine and the session thread; idempotent, callable from any thread.
        ``restart``: the kernel restarts, and its engine may keep a costly placement (a
        Slurm job) for the kernel's next session (``Engine.close_for_restart``)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._answers.put(None)
        self._requests.put(_STOP)
        if self.engine is not None:
            if restart and not self._queued and self._ended is None:
                self.engine.close_for_restart()
            else:
                self.engine.close()
        log.info("session %s closed", self.name)
        self._on_closed(self)

    def engine_status(self) -> dict[str, Any]:
        """RKEngineStatus's association: the engine process's state, memory and limit (where
        the engine knows them), how many times the engine was replaced and why the last
        one ended."""
        engine = self.engine
        status: dict[str, Any] = {"state": "ended" if self._ended else "running"}
        if engine is not None and self._ended is None:
            status.update(engine.usage())
        status.update(restarts=self.restarts, last_end=self.last_end)
        return status

    def _start_engine(self) -> dict[str, Any]:
        """Create and start an engine (the first, or a fresh one after an end); its info.
        Raises EngineError naming why it did not start."""
        self.engine = create_engine(self.engine_name, self, self.options)
        info = self.engine.start(float(self.options.get("start_timeout", ENGINE_START_TIMEOUT)))
        self._queued = "queued" in info.extra
        if self._queued:
            log.info("session %s: %s queued: %s", self.name, info.name, info.extra["queued"])
        else:
            log.info("session %s: %s %s ready", self.name, info.name, info.version)
        self._ended = None
        return asdict(info)

    def _run(self) -> None:
        try:
            self.info = self._start_engine()
        except EngineError as exc:
            log.error("session %s: engine %s failed to start: %s",
                      self.name, self.engine_name, exc)
            self.emit(error_packet(str(exc), ENGINE_START_ERROR))
            self.close()
            return
        if self._closed.is_set():
            self.engine.close()
            return
        self.emit(packet("RKSessionReady", self.info))
        while not self._closed.is_set():
            request = None
            try:
                if self._queued:
                    self._wait_for_engine()
                    continue
                request = self._requests.get()
                if request is _STOP:
                    break
                self._handle(request)
            except Exception as exc:  # a bug: the request is still answered, the session lives
                request, self._waiting = request or self._waiting, None
                if self._queued:  # the wait itself failed: the next request starts afresh
                    self._queued = False
                    self._engine_ended(EngineEnded(f"the agent failed while waiting for the "
                                                   f"queued engine ({exc!r})"))
                log.exception("session %s: failed while serving %s", self.name,
                              packet_name(request) if request is not None else "no request")
                if request is not None:
                    self.emit(error_packet(
                        f"the agent failed while serving this request ({exc!r}); this is a "
                        "bug in rk_jupyter: %rkernel log shows where, and a restart of the "
                        "kernel starts afresh", INTERNAL_ERROR))
                    self._end_request(request)

    def _handle(self, request: Function) -> None:
        """Serve one request; an engine that ends meanwhile answers it with RKEngineDied
        (or, when it ended before it began the request, a fresh engine serves it)."""
        try:
            try:
                self._serve(request)
            except EngineEnded as exc:
                if not exc.unserved:
                    raise
                self._engine_ended(exc)  # it ended just before: a fresh one serves it
                self._serve(request)
        except EngineError as exc:
            if not isinstance(exc, EngineEnded) and self.engine is not None \
                    and self.engine.alive():
                self.emit(error_packet(str(exc), exc.code))
            else:
                ended = exc if isinstance(exc, EngineEnded) else self.engine.ended()
                self._engine_ended(ended)
                name = packet_name(request)
                if name in _WITHOUT_ENGINE:  # its answer, as if there were no engine
                    self.emit(packet(*_WITHOUT_ENGINE[name]))
                else:
                    self.emit(packet("RKEngineDied", str(exc), ended.requested))
        self._end_request(request)

    def _wait_for_engine(self) -> None:
        """One round (about ``QUEUE_TICK`` s) of the wait for a queued engine.

        The kernel is up meanwhile: the first cell request waits (its cell shows the wait,
        updated in place), completions and inspections are answered as without an engine, an
        interrupt ends the waiting cell with $Aborted while the job stays queued.  When the
        engine can evaluate, RKEngineRestarted says so and the waiting cell runs; when its
        start fails (queue_timeout, the job cancelled), the waiting cell or else the next one
        gets the cause and the request after starts (queues) a fresh engine.
        """
        assert self.engine is not None
        if self._waiting is None:
            try:
                request = self._requests.get(timeout=QUEUE_TICK)
            except queue.Empty:
                request = None
            if request is _STOP:
                return
            if request is not None and packet_name(request) in _WITHOUT_ENGINE:
                self.emit(packet(*_WITHOUT_ENGINE[packet_name(request)]))
                self._end_request(request)
                return
            if request is not None:
                self._waiting = request
                self._stop_waiting.clear()
        if self._waiting is not None and self._stop_waiting.is_set():
            self._stop_waiting.clear()
            self._abandon_wait()
            return
        try:
            info = self.engine.wait_queued(QUEUE_TICK)
        except EngineError as exc:
            self._queued = False
            if not self._closed.is_set():
                self._queue_failed(exc)
            return
        if info is None:
            if self._waiting is not None:
                self._show_wait(self.engine.queue_notice())
            return
        self._queued = False
        self._show_wait(None)
        self.info = asdict(info)
        log.info("session %s: %s %s ready after the queue", self.name, info.name, info.version)
        self.emit(packet("RKEngineRestarted",
                         {**self.info, "restarts": self.restarts, "cause": self.last_end}))
        request, self._waiting = self._waiting, None
        if request is not None:
            self._handle(request)

    def _show_wait(self, text: str | None) -> None:
        """Show ``text`` in the waiting cell (a temporary display, replaced in place when the
        text changes); None removes it."""
        shown = self._wait_display
        if text is None:
            if shown is not None:
                self.emit(packet("RKDisplay", shown[0], None))
            self._wait_display = None
        elif shown is None or shown[1] != text:
            display_id = shown[0] if shown else f"rk-queue-{secrets.token_hex(4)}"
            self.emit(packet("RKDisplay", display_id, {"text/plain": text}))
            self._wait_display = (display_id, text)

    def _abandon_wait(self) -> None:
        """An interrupt while the cell waits for a queued engine: the cell ends with $Aborted
        (the job stays queued; the next cell waits for it again)."""
        request, self._waiting = self._waiting, None
        assert request is not None
        self._wait_display = None  # the cell's end removes its displays
        log.info("session %s: stopped waiting for the queued engine", self.name)
        self.emit(packet("MessagePacket", "General", "queued",
                         "Stopped waiting for the engine. Its job stays queued and the next "
                         "cell waits for it again; restart or shut down the kernel to cancel "
                         "it."))
        self.emit(packet("ReturnPacket", ABORTED))
        if packet_name(request) == "EnterTextPacket":
            self.emit(packet("InputNamePacket", "In[1]:= "))
        self._end_request()

    def _queue_failed(self, exc: EngineError) -> None:
        """A queued engine did not start: the waiting cell gets the cause; without one, the
        next cell does (as the end of an engine), and the request after queues a fresh one."""
        log.error("session %s: the queued engine did not start: %s", self.name, exc)
        self._wait_display = None
        self._engine_ended(EngineEnded(str(exc)))
        request, self._waiting = self._waiting, None
        if request is not None:
            self.emit(error_packet(str(exc), ENGINE_START_ERROR))
            self._end_request()

    def _engine_ended(self, why: EngineEnded) -> None:
        """The engine is gone: remember why (status, the fresh engine's notice), end what is
        left of its processes."""
        if self._ended is not None:
            return
        log.warning("session %s: the engine ended: %s", self.name, why)
        self._ended, self.last_end = why, why.cause
        if self.engine is not None:
            self.engine.close()

    def _restart(self) -> bool:
        """Start a fresh engine in place of the one that ended; False (and the start error
        sent as the request's answer) if it does not start."""
        try:
            self.info = self._start_engine()
        except EngineError as exc:
            log.error("session %s: a fresh engine failed to start: %s", self.name, exc)
            self.emit(error_packet(f"the engine ended ({self.last_end}) and a fresh one did "
                                   f"not start: {exc}", ENGINE_START_ERROR))
            return False
        self.restarts += 1
        if not self._queued:  # else when it can evaluate (_wait_for_engine)
            self.emit(packet("RKEngineRestarted",
                             {**self.info, "restarts": self.restarts, "cause": self.last_end}))
        return True

    def _serve(self, request: Function) -> None:
        name = packet_name(request)
        arg = request.args[0] if request.args else ""
        if not isinstance(arg, str):
            self.emit(error_packet(f"{name} needs a string argument", BAD_REQUEST_ERROR))
            return
        if self._ended is None and self.engine is not None and not self.engine.alive():
            self._engine_ended(self.engine.ended())  # it ended between requests
        if self._ended is not None:
            if name in _WITHOUT_ENGINE:
                self.emit(packet(*_WITHOUT_ENGINE[name]))
                return
            if not self._restart():
                return
            if self._queued:  # the fresh engine waits in a queue: so does the request
                self._waiting = request
                self._stop_waiting.clear()
                return
        assert self.engine is not None
        if self.engine.stopped():
            self.emit(error_packet(self.engine.stopped_notice(), ENGINE_STOPPED_ERROR))
            return
        if name == "EnterTextPacket":
            self.engine.evaluate(arg)
        elif name == "EvaluatePacket":
            try:
                self.engine.evaluate_expression(arg)
            except EngineUnsupported as exc:
                self.emit(error_packet(str(exc), UNSUPPORTED_ERROR))
        elif name == "RKComplete":
            self.emit(packet("RKCompletions", self.engine.complete(arg)))
        elif name == "RKInspect":
            self.emit(packet("RKInspection", self.engine.inspect(arg)))
