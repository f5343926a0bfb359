"""One engine that IPython reaches by itself: a transport and an AgentClient, in-process.

The magics run no second Jupyter kernel: this module starts the agent through the same
transports the provisioner uses, opens a session on it, and translates the session's packets
for the cell that waits, as ``rk_jupyter.kernel.kernel`` does for Jupyter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import threading
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from jupyter_core.paths import jupyter_runtime_dir

from ..client import AgentClient, AgentError, LinkDown
from ..errors import RKError
from ..link.expr import Symbol
from ..link.launcher import ENGINE_START_WAIT
from ..link.packets import ABORTED, packet, packet_name
from ..provisioning.errors import TransportError
from ..provisioning.launch import LaunchObserver, open_session
from ..provisioning.settings import LaunchSettings
from ..provisioning.transports import Transport

POLL = 1.0  # how often a waiting cell checks that the agent is still there
TRANSPORT_GRACE = 120.0  # beyond the agent's own start timeout (an ssh connect, an upload)
STOP_TIMEOUT = 15.0
INTERRUPT_GRACE = 30.0  # for the engine to answer an interrupt
SETTLE_TIMEOUT = 5.0  # for the end of an earlier evaluation that a cell gave up on


class RKernelError(RKError):
    """A failure shown as its message alone: the text names the cause, a traceback would not.
    A launch failure keeps the transport's code (``ssh.refused``, ``settings.choice``, …)."""

    code = "magics.error"

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class Output(Protocol):
    """Where an evaluation's output goes (the IPython side)."""

    def stdout(self, text: str) -> None: ...

    def stderr(self, text: str) -> None: ...

    def display(self, bundle: dict[str, str]) -> None: ...

    def read_input(self, prompt: str) -> str: ...


class _LoopThread:
    """An asyncio loop on its own thread for the transport's coroutines: IPython's loop is busy
    running the cell that waits for them, and a transport may keep loop-bound state between
    ``start`` and ``stop``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="rkernel-transport",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float, what: str) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RKernelError(f"{what} took longer than {timeout:.0f} s") from None
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(STOP_TIMEOUT)
        if not self.thread.is_alive():
            self.loop.close()


class _Started(LaunchObserver):
    """Remembers the launch's transport, to stop it when the launch is abandoned."""

    transport: Transport | None = None

    def begin(self, name: str, transport: Transport, detail: str) -> None:
        self.transport = transport


class Connection:
    """A session on an agent that this process started; ``evaluate`` is for the cell's thread."""

    def __init__(self, label: str, transport: Transport, client: AgentClient,
                 loop: _LoopThread) -> None:
        self.label = label
        self.transport = transport
        self.client = client
        self._loop = loop
        self._closed = False
        # The packet that ends a request the last cell gave up on, while it is still due.
        self._unfinished: str | None = None

    @classmethod
    def open(cls, label: str, settings: LaunchSettings) -> Connection:
        """Open an engine session through the launch path a kernel start takes
        (``rk_jupyter.provisioning.launch.open_session``).

        Raises RKernelError with the launch's own explanation and code.
        """
        kernel_id = f"magics-{os.getpid()}-{secrets.token_hex(4)}"
        runtime = jupyter_runtime_dir()
        os.makedirs(runtime, exist_ok=True)
        log_path = os.path.join(runtime, f"rk-{kernel_id}-agent.log")
        token = secrets.token_urlsafe(32).encode()
        loop = _LoopThread()
        started = _Started()
        timeout = settings.agent_start_timeout + TRANSPORT_GRACE + ENGINE_START_WAIT
        try:
            launched = loop.run(open_session(settings, kernel_id, token, log_path, started),
                                timeout, f"starting the agent ({settings.transport}) and its "
                                "engine")
        except BaseException as exc:
            if started.transport is not None:  # a launch cut short by the timeout
                try:
                    loop.run(started.transport.stop(), STOP_TIMEOUT, "stopping the agent")
                except Exception:  # the start's failure is the one to report
                    pass
            loop.close()
            if isinstance(exc, TransportError):
                raise RKernelError(exc.cause, exc.fix, code=exc.code) from None
            raise
        return cls(label, launched.transport, launched.client, loop)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End the session and stop the agent (its engine ends with it); idempotent."""
        if self._closed:
            return
        self._closed = True
        self.client.close()
        try:
            self._loop.run(self.transport.stop(), STOP_TIMEOUT, "stopping the agent")
        finally:
            self._loop.close()

    def evaluate(self, code: str, output: Output, expression: bool = False) -> Any:
        """Evaluate ``code``: EnterTextPacket (output displayed), or with ``expression``
        EvaluatePacket, whose value is returned.

        Print and messages go to ``output`` as they come.  A KeyboardInterrupt (IPython's
        interrupt) is passed on to the engine, and the evaluation ends with its $Aborted.
        Raises RKernelError for a syntax error, an aborted evaluation, or a lost engine.
        """
        if self._closed:
            raise RKernelError(f"the connection to {self.label} is closed; %rkernel connect again")
        self._settle()
        end = "ReturnPacket" if expression else "InputNamePacket"
        self._send(packet("EvaluatePacket" if expression else "EnterTextPacket", code))
        self._unfinished = end
        messages: list[str] = []
        failure: str | None = None
        value: Any = None
        interrupted: float | None = None
        while True:
            try:
                pkt = self._next(interrupted)
                name = packet_name(pkt)
                if name == end:
                    self._unfinished = None
                if name == "TextPacket":
                    output.stdout(pkt.args[0])
                elif name == "MessagePacket":
                    symbol, tag, text = (list(pkt.args) + ["", "", ""])[:3]
                    messages.append(f"{symbol}::{tag}: {text}")
                    output.stderr(messages[-1])
                elif name == "SyntaxPacket":
                    failure = messages[-1] if messages else "syntax error"
                elif name == "ReturnPacket":
                    result = pkt.args[0] if pkt.args else None
                    if isinstance(result, Symbol) and result == ABORTED:
                        failure = "$Aborted: the evaluation was aborted"
                    elif expression:
                        value = result
                    elif isinstance(result, dict):
                        output.display(result)
                elif name in ("InputPacket", "InputStringPacket"):
                    self._send(packet("TextPacket", output.read_input(pkt.args[0])))
                if name == end:
                    break
            except KeyboardInterrupt:
                self._send(packet("RKInterrupt"))
                interrupted = interrupted or time.monotonic()
        if failure:
            raise RKernelError(failure)
        return value

    def _next(self, interrupted: float | None) -> Any:
        """The next packet of the running evaluation; raises RKernelError when it cannot come."""
        while True:
            pkt = self.client.next_packet(POLL)
            if pkt is not None:
                break
            if not self.transport.alive():
                reason = self.transport.death_reason()
                self.close()
                raise RKernelError(f"the agent is gone: {reason}; %rkernel connect again")
            if interrupted is not None and time.monotonic() - interrupted > INTERRUPT_GRACE:
                raise RKernelError(
                    f"the engine did not stop within {INTERRUPT_GRACE:.0f} s of the interrupt; "
                    "wait and run the cell again, or %rkernel disconnect"
                )
        name = packet_name(pkt)
        if isinstance(pkt, LinkDown) or name == "RKEngineDied":
            reason = pkt.reason if isinstance(pkt, LinkDown) else pkt.args[0]
            self.close()
            raise RKernelError(f"{reason}; %rkernel connect again")
        if name == "RKError":
            self._unfinished = None
            raise RKernelError(pkt.args[0])
        return pkt

    def _settle(self) -> None:
        """Skip what is left of an evaluation an earlier cell gave up on, so that its output
        does not land in this cell."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while self._unfinished is not None:
            remaining = deadline - time.monotonic()
            pkt = self.client.next_packet(max(remaining, 0.0))
            if pkt is None:
                raise RKernelError(
                    "the engine is still busy with an evaluation that an earlier cell gave up "
                    "on; wait, or %rkernel disconnect"
                )
            if isinstance(pkt, LinkDown) or packet_name(pkt) in (self._unfinished, "RKError",
                                                                  "RKEngineDied"):
                self._unfinished = None

    def _send(self, pkt: Any) -> None:
        try:
            self.client.send(pkt)
        except AgentError as exc:
            self.close()
            raise RKernelError(f"{exc}; %rkernel connect again") from None
