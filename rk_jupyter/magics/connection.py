"""One engine that IPython reaches by itself: a transport and an AgentClient, in-process.

The magics run no second Jupyter kernel: this module starts the agent through the same
transports the provisioner uses, opens a session on it, and evaluates cells through the
client layer's loop (``rk_jupyter.client.evaluate``), as the Jupyter kernel does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import threading
from collections.abc import Coroutine
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

from ..client import AgentClient, AgentError, EvaluationError, Evaluator, SessionLost
from ..client.agent import NOT_CONNECTED
from ..client.evaluate import ABORTED_CODE, INTERRUPT_TIMEOUT, Output
from ..errors import RKError
from ..link.launcher import ENGINE_START_WAIT
from ..provisioning.errors import TransportError
from ..provisioning.launch import LaunchObserver, open_session
from ..provisioning.settings import LaunchSettings
from ..provisioning.transports import Transport

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
        self._evaluator = Evaluator(client)

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
        if not self._evaluator.settle(SETTLE_TIMEOUT):
            # What is left of an evaluation an earlier cell gave up on must not land here.
            raise RKernelError(
                "the engine is still busy with an evaluation that an earlier cell gave up "
                "on; wait, or %rkernel disconnect"
            )
        try:
            return self._evaluator.run(code, output, expression=expression,
                                       interrupt_grace=INTERRUPT_GRACE, alive=self._gone)
        except EvaluationError as exc:
            if exc.code == ABORTED_CODE:
                raise RKernelError(f"$Aborted: {exc.cause}") from None
            if exc.code == INTERRUPT_TIMEOUT:
                raise RKernelError(f"{exc.cause}; wait and run the cell again, or "
                                   "%rkernel disconnect") from None
            raise RKernelError(str(exc)) from None
        except AgentError as exc:
            if isinstance(exc, SessionLost) or exc.code == NOT_CONNECTED:
                self.close()
                raise RKernelError(f"{exc}; %rkernel connect again") from None
            raise RKernelError(str(exc)) from None  # the agent refused this request

    def _gone(self) -> str | None:
        """Why the agent's process ended (None while it runs), for the waiting loop."""
        return None if self.transport.alive() else self.transport.death_reason()
