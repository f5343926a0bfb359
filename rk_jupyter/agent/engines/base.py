"""The contract between the agent's session and an engine (Mathics3, a Wolfram kernel, ...).

One engine instance serves one kernel session.  The agent calls ``start`` once, then
``evaluate``/``complete``/``inspect`` one at a time from the session's evaluation thread, and
``interrupt``/``abort``/``close``/``alive`` from any thread at any time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...errors import RKError
from ...link.expr import Function


class EngineError(RKError):
    """A failure that the user must see verbatim: its text names the cause and the fix."""

    code = "engine.error"


class EngineUnsupported(EngineError):
    """The engine cannot serve this kind of request; the engine itself stays usable."""

    code = "engine.unsupported"


class EngineEnded(EngineError):
    """The engine's process ended (Quit[], a crash, a signal, memory).  The session goes on:
    its next request starts a fresh engine.  ``requested`` is True when the engine was asked
    to end (Quit[]/Exit[]: exit status 0), which a front end does not report as a failure;
    ``unserved`` when it ended before it began the request that meets its end (that request
    can go to a fresh engine as it is)."""

    code = "engine.ended"

    def __init__(self, cause: str, fix: str = "", *, requested: bool = False,
                 code: str | None = None) -> None:
        super().__init__(cause, fix, code=code)
        self.requested = requested
        self.unserved = False


class InputAborted(Exception):
    """Raised by ``EngineHost.read_input`` when the evaluation was aborted while it waited."""


@dataclass
class EngineInfo:
    """What ``%rkernel status`` shows of the engine."""

    name: str
    version: str
    extra: dict[str, Any] = field(default_factory=dict)


class EngineHost(Protocol):
    """The session's side, given to the engine at construction."""

    def emit(self, packet: Function) -> None:
        """Send a packet to the kernel now (live Print/messages); safe from any thread."""

    def read_input(self, prompt: Function) -> str:
        """Send an InputPacket/InputStringPacket and block until the kernel answers.

        Raises InputAborted if the evaluation is interrupted meanwhile.
        """


class Engine(ABC):
    """An evaluator of Wolfram Language that speaks in packets (see ``rk_jupyter.link.packets``)."""

    def __init__(self, host: EngineHost, options: dict[str, Any]) -> None:
        self.host = host
        self.options = options
        #: A queued engine's latest look at its wait (``start``/``wait_queued`` keep it).
        self.job: dict[str, Any] = {}

    @abstractmethod
    def start(self, timeout: float) -> EngineInfo:
        """Start the engine and wait (at most ``timeout`` s) until it can evaluate.

        Raises EngineError, with the engine's own last words when it has any, if it cannot.
        An engine placed by a scheduler may return before it can evaluate, its
        ``extra["queued"]`` describing the wait (a Slurm job: id, state, reason, partition,
        expected start, position): the session then makes the kernel ready at once and calls
        ``wait_queued`` until the engine is.
        """

    def wait_queued(self, timeout: float) -> EngineInfo | None:
        """Wait at most ``timeout`` s for an engine whose ``start`` returned queued: its
        EngineInfo once it can evaluate (``extra["queued"]`` then says how long it waited),
        None while it still waits (``job`` then holds the latest look at the wait).  Called by the
        session's thread only, every fraction of a second, so that it can answer interrupts
        and show the wait in the cell meanwhile.  Raises EngineError (the engine closed) when
        the start fails or a queue timeout passes."""
        raise EngineError(f"the {type(self).__name__} engine never waits in a queue")

    def queue_notice(self) -> str:
        """What the cell that waits for a queued engine shows of the wait (``job``)."""
        return "Waiting for the engine to start."

    @abstractmethod
    def evaluate(self, code: str) -> None:
        """Evaluate one cell's text like a notebook front end's EnterTextPacket.

        Emits, live and in order: TextPacket for Print, MessagePacket for messages,
        SyntaxPacket on a syntax error, OutputNamePacket + ReturnPacket(MIME bundle) unless the
        result is Null, ReturnPacket($Aborted) when interrupted, and finally InputNamePacket
        for the next line.  Returns once InputNamePacket was emitted.  Raises EngineError if
        the engine died (the session then reports RKEngineDied).
        """

    def evaluate_expression(self, code: str) -> None:
        """Evaluate text for its value, as ``EvaluatePacket[ToExpression[code]]`` would.

        For front ends that want the result as data (``%%rkernel -o var``): no In/Out, $Line,
        $Pre or $Post.  Emits, live and in order: TextPacket for Print, MessagePacket for
        messages, SyntaxPacket on a syntax error (nothing is evaluated), then exactly one
        ReturnPacket with the value as WXF-able Python values (the rule is in
        ``rk_jupyter.link.packets``), $Failed after a syntax error, $Aborted when interrupted;
        nothing after it.  Raises EngineError if the engine died, and EngineUnsupported (the
        default) if the engine cannot do this.
        """
        raise EngineUnsupported(
            f"evaluating for a value (EvaluatePacket) is not supported by the "
            f"{type(self).__name__} engine"
        )

    @abstractmethod
    def complete(self, prefix: str) -> list[str]:
        """Names of symbols that start with ``prefix`` (for Jupyter's complete_request)."""

    @abstractmethod
    def inspect(self, name: str) -> dict[str, str] | None:
        """A MIME bundle documenting symbol ``name`` (its usage), or None when unknown."""

    @abstractmethod
    def interrupt(self) -> None:
        """Abort the running evaluation, keeping every definition; no-op when idle."""

    @abstractmethod
    def alive(self) -> bool:
        """False once the engine process has ended."""

    def ended(self) -> EngineEnded:
        """Why the engine ended, once ``alive`` is False: the error its next request would
        have raised (the session reports it when it starts a fresh engine)."""
        return EngineEnded("the engine ended")

    def usage(self) -> dict[str, Any]:
        """What ``%rkernel status`` shows of the engine's process: ``state`` ("running",
        "stopped" for a process stopped by a signal, "ended"), ``memory`` (bytes resident)
        and ``pid``, where the engine knows them."""
        return {}

    def stopped(self) -> bool:
        """Whether the engine's process is stopped by a signal (SIGSTOP, a debugger) and so
        answers nothing.  The session asks before each request and on each interrupt: it must
        cost no more than reading /proc (``usage`` may ask a scheduler)."""
        return self.usage().get("state") == "stopped"

    def stopped_notice(self) -> str:
        """What the notebook is told while ``stopped``: the process to continue, by pid
        (an engine overrides this where ``usage`` would ask a scheduler to find it)."""
        return stopped_notice(self.usage().get("pid"))


def stopped_notice(pid: object) -> str:
    """What the notebook is told of an engine stopped by a signal: one text for a request
    refused, an interrupt that cannot act and a running cell that waits on it."""
    pid = pid or "?"
    return (f"The engine (pid {pid}) is stopped by a signal (SIGSTOP or a debugger) and "
            f"answers nothing until it is continued (kill -CONT {pid}); restart the "
            "kernel for a fresh engine (definitions are lost).")

    @abstractmethod
    def close(self) -> None:
        """End the engine and every process it started; idempotent."""

    def close_for_restart(self) -> None:
        """End the engine because its kernel restarts (the session's close with
        ``restart``): an engine may keep what is costly to get again (a Slurm job) for the
        kernel's next engine, which the same kernel's next ``start`` takes.  Default:
        ``close``."""
        self.close()

