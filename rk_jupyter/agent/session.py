"""One kernel's conversation with one engine, on one channel of a link."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from ..link.expr import Function
from ..link.frames import LinkError
from ..link.packets import packet, packet_name
from .engines import Engine, EngineError, create_engine
from .engines.base import InputAborted

log = logging.getLogger("rk_jupyter.agent")

ENGINE_START_TIMEOUT = 120.0
_QUEUED = {"EnterTextPacket", "RKComplete", "RKInspect"}
_STOP = object()


class Session:
    """Owns an engine; evaluates requests in order on its own thread.

    The link's reader thread calls ``handle`` for each packet of this channel; interrupts act
    at once, everything else queues behind the running evaluation.  ``send`` delivers packets
    to the kernel and is given by the connection.
    """

    def __init__(
        self,
        channel: int,
        engine_name: str,
        options: dict[str, Any],
        send: Callable[[int, Function], None],
        on_closed: Callable[[Session], None],
    ) -> None:
        self.channel = channel
        self.engine_name = engine_name
        self.options = options
        self._send = send
        self._on_closed = on_closed
        self._requests: queue.Queue[Any] = queue.Queue()
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._waiting_input = threading.Event()
        self._closed = threading.Event()
        self.engine: Engine | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"session-{channel}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def emit(self, pkt: Function) -> None:
        try:
            self._send(self.channel, pkt)
        except LinkError as exc:
            log.info("session %d: cannot deliver %s: %s", self.channel, packet_name(pkt), exc)

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
        if name in _QUEUED:
            self._requests.put(expr)
        elif name == "TextPacket" and expr.args and isinstance(expr.args[0], str):
            self._answers.put(expr.args[0])
        elif name in ("RKInterrupt", "RKAbort"):
            log.info("session %d: %s", self.channel, name)
            if self._waiting_input.is_set():
                self._answers.put(None)
            if self.engine is not None:
                self.engine.interrupt()
        elif name == "RKTerminate":
            self.close()
        else:
            log.warning("session %d: ignoring unexpected %r", self.channel, name or expr)

    def close(self) -> None:
        """End the engine and the session thread; idempotent, callable from any thread."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._answers.put(None)
        self._requests.put(_STOP)
        if self.engine is not None:
            self.engine.close()
        log.info("session %d closed", self.channel)
        self._on_closed(self)

    def _run(self) -> None:
        try:
            self.engine = create_engine(self.engine_name, self, self.options)
            info = self.engine.start(float(self.options.get("start_timeout", ENGINE_START_TIMEOUT)))
        except EngineError as exc:
            log.error("session %d: engine %s failed to start: %s",
                      self.channel, self.engine_name, exc)
            self.emit(packet("RKError", str(exc)))
            self.close()
            return
        if self._closed.is_set():
            self.engine.close()
            return
        log.info("session %d: %s %s ready", self.channel, info.name, info.version)
        self.emit(packet("RKSessionReady", asdict(info)))
        while not self._closed.is_set():
            request = self._requests.get()
            if request is _STOP:
                break
            try:
                self._serve(request)
            except EngineError as exc:
                log.error("session %d: engine died: %s", self.channel, exc)
                self.emit(packet("RKEngineDied", str(exc)))
                self.close()

    def _serve(self, request: Function) -> None:
        name = packet_name(request)
        arg = request.args[0] if request.args else ""
        if not isinstance(arg, str):
            self.emit(packet("RKError", f"{name} needs a string argument"))
            return
        assert self.engine is not None
        if name == "EnterTextPacket":
            self.engine.evaluate(arg)
        elif name == "RKComplete":
            self.emit(packet("RKCompletions", self.engine.complete(arg)))
        elif name == "RKInspect":
            self.emit(packet("RKInspection", self.engine.inspect(arg)))
