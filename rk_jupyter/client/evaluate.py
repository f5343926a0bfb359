"""The evaluation loop: one request sent, its answer packets turned into output for a front end.

Why one loop: the Jupyter kernel, the IPython magics, the doctor, the tests and the benchmarks
all wait for the same packets in the same order (``rk_jupyter.link.packets``); what differs is
only where the output goes (an ``Output``) and how a failure is shown, so each of them calls
``run`` (or an ``Evaluator``'s ``run``) and translates what it returns or raises.

An EnterTextPacket (a notebook cell) is answered by live TextPacket (Print) and MessagePacket,
then OutputNamePacket + ReturnPacket (its MIME bundle, or $Aborted) unless the result is Null,
and ends with the InputNamePacket of the next line; an EvaluatePacket (``%%rkernel -o``) ends
with its ReturnPacket, whose value ``run`` returns.  A SyntaxPacket marks a syntax error: the
Syntax message before it is the error itself (Jupyter clients expect a failed cell to have
exactly one error output), so Syntax messages are held back until the next packet says
whether they are the cell's syntax error (with any Syntax warning before it) or messages like
any other (``ToExpression["1+"]``).  Temporary displays (RKDisplay: PrintTemporary, Monitor)
go to ``Output.live`` as they come, and whatever is still shown when the request ends is
removed then, whichever way it ended.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import RKError
from ..link.expr import Symbol
from ..link.packets import (
    ABORTED,
    END_OF,
    ENDS_ANY_REQUEST,
    error_code,
    line_number,
    packet,
    packet_name,
)
from .agent import AGENT_GONE, ENGINE_ENDED, AgentClient, AgentError, LinkDown, SessionLost

#: How often a waiting loop wakes up to check its deadline and that the agent is alive.
POLL = 1.0

# EvaluationError codes.
SYNTAX = "evaluation.syntax"
ABORTED_CODE = "evaluation.aborted"
TIMEOUT = "evaluation.timeout"
INTERRUPT_TIMEOUT = "evaluation.interrupt-timeout"

class EvaluationError(RKError):
    """The evaluation failed but the session goes on: a syntax error (``SYNTAX``: the cause is
    the engine's message), an interrupted evaluation (``ABORTED_CODE``), no answer within the
    caller's timeout (``TIMEOUT``) or no stop within the grace after an interrupt
    (``INTERRUPT_TIMEOUT``; the end of the evaluation is still owed, see ``Evaluator``)."""

    code = "evaluation.failed"


class Output(Protocol):
    """Where one evaluation's output goes; each front end has its own (Jupyter messages,
    IPython's streams and displays, a list for tests and the doctor).  Called on the thread
    that runs the loop, in the order the packets came."""

    def stdout(self, text: str) -> None:
        """Print output (a TextPacket), as it comes."""

    def stderr(self, text: str) -> None:
        """A message, formatted ``Symbol::tag: text``, as it comes."""

    def display(self, bundle: dict[str, str], line: int | None) -> None:
        """The result of an EnterTextPacket (not Null, not $Aborted): a MIME bundle; ``line``
        is n of its Out[n] (None if the engine did not name it)."""

    def read_input(self, prompt: str) -> str:
        """The answer to Input[]/InputString[]; raising KeyboardInterrupt interrupts the
        evaluation instead of answering."""
        return ""

    def live(self, display_id: str, bundle: dict[str, str] | None) -> None:
        """A temporary display (PrintTemporary, Monitor): shown, or replaced in place when
        ``display_id`` is shown already; None removes it.  The loop removes every one still
        shown when the request ends."""

    def next_line(self, line: int) -> None:
        """The cell ended and the engine waits for In[line] (Jupyter's execution count)."""


@dataclass
class Collected(Output):
    """An Output that keeps everything, for callers that look at it afterwards (tests, the
    doctor, benchmarks); ``answers`` are given, in order, to Input[] (then "")."""

    prints: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    results: list[dict[str, str]] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    #: Every temporary display as it came: (id, bundle or None when removed).
    lives: list[tuple[str, dict[str, str] | None]] = field(default_factory=list)
    line: int | None = None

    def stdout(self, text: str) -> None:
        self.prints.append(text)

    def stderr(self, text: str) -> None:
        self.messages.append(text)

    def display(self, bundle: dict[str, str], line: int | None) -> None:
        self.results.append(bundle)

    def read_input(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.answers.pop(0) if self.answers else ""

    def live(self, display_id: str, bundle: dict[str, str] | None) -> None:
        self.lives.append((display_id, bundle))

    def next_line(self, line: int) -> None:
        self.line = line

    @property
    def text(self) -> str | None:
        """The text/plain form of the (last) result; None when there was none (Null)."""
        return self.results[-1].get("text/plain") if self.results else None


class Evaluator:
    """The evaluations of one client, in order.  ``run`` is for one thread at a time (a
    kernel's shell thread, an IPython cell); ``client.interrupt`` may come from any thread.

    A request whose answer was not waited for (``defer``, or a ``run`` that gave up) still
    owes its end: the packets up to it belong to that request and are dropped by the next
    ``run`` or by ``settle``, so that they never land in another cell's output.
    """

    def __init__(self, client: AgentClient, poll: float = POLL) -> None:
        self.client = client
        self.poll = poll
        self._owed: deque[str] = deque()  # end packet names of requests not yet ended
        self._adopted = 0  # how many of the first owed are an earlier kernel's (``adopt``)
        self._adopted_note = ""

    @property
    def owed(self) -> int:
        """How many requests sent have not ended yet."""
        return len(self._owed)

    def adopt(self, owed: list[str], forgotten: int = 0) -> None:
        """This client took over a session from an earlier kernel process (a persistent
        kernel re-attached by a new Jupyter server) that did not see the ends of ``owed``
        (evaluation packet names, oldest first): their output, which the attach sent again,
        is shown by the next ``run`` before its own, under a line that says so, and the
        earlier kernel's cells keep their order (the engine serves requests in turn)."""
        ends = [END_OF[name] for name in owed if name in END_OF]
        self._owed.extend(ends)
        self._adopted += len(ends)
        if ends:
            self._adopted_note = (
                "The output below is of the cell(s) that ran while this notebook was away" +
                (f" ({forgotten} earlier part(s) were not kept: the agent keeps the last "
                 "10 MB)" if forgotten else "") + ":")

    @property
    def adopted(self) -> int:
        """How many earlier kernel's evaluations the next ``run`` shows first."""
        return self._adopted

    def defer(self, code: str) -> bool:
        """Send ``code`` as a cell without waiting for it (a magic cell's Null, which takes an
        In[n] so that Jupyter's count and the engine's $Line stay one); False if it could not
        be sent (the session is down: the next request says why)."""
        try:
            self.client.send(packet("EnterTextPacket", code))
        except AgentError:
            return False
        self._owed.append(END_OF["EnterTextPacket"])
        return True

    def settle(self, timeout: float) -> bool:
        """Read and drop what is left of the requests not waited for, up to their ends; False
        if they did not all end within ``timeout`` s.  A lost session settles everything."""
        deadline = time.monotonic() + timeout
        while self._owed:
            pkt = self.client.next_packet(max(deadline - time.monotonic(), 0.0))
            if pkt is None:
                return False
            self._drop(pkt)
        return True

    def _drop(self, pkt: Any) -> None:
        """Account for a packet of an earlier request."""
        name = packet_name(pkt)
        if isinstance(pkt, LinkDown):
            self._owed.clear()  # nothing more comes; the next request reports why
        elif name == "RKEngineRestarted":
            self.client.engine_restarted(pkt.args[0] if pkt.args else {})
        elif name == self._owed[0] or name in ENDS_ANY_REQUEST:
            self._owed.popleft()

    def run(
        self,
        code: str,
        output: Output,
        *,
        expression: bool = False,
        timeout: float | None = None,
        interrupt_grace: float | None = None,
        alive: Callable[[], str | None] | None = None,
    ) -> Any:
        """Evaluate ``code`` and pass its output to ``output`` as it comes; return the value
        of an EvaluatePacket (``expression``), else None once the cell has ended.

        A KeyboardInterrupt while waiting (or from ``output``) interrupts the engine, and the
        evaluation then ends with $Aborted; with ``interrupt_grace`` it must end within that
        many seconds of the interrupt.  ``timeout`` bounds the whole wait; ``alive``, called
        whenever nothing came for ``poll`` s, returns why the agent is gone (None: alive).

        Raises EvaluationError (the session goes on), AgentError for an RKError packet (the
        request was refused; its code is the agent's), SessionLost when the link ended, the
        engine died or the agent is gone (the client is done).
        """
        kind = "EvaluatePacket" if expression else "EnterTextPacket"
        self.client.send(packet(kind, code))
        self._owed.append(END_OF[kind])
        shown: dict[str, None] = {}  # temporary displays shown now, in order
        try:
            if self._adopted:
                output.stderr(self._adopted_note)
            while self._adopted:  # an earlier kernel's cells first (``adopt``)
                self._adopted -= 1
                try:
                    self._answers(output, False, timeout, interrupt_grace, alive, shown,
                                  earlier=True)
                except (EvaluationError, AgentError) as exc:
                    if isinstance(exc, SessionLost):
                        raise
                    output.stderr(str(exc))
                end_lives(output, shown)
            return self._answers(output, expression, timeout, interrupt_grace, alive, shown)
        except SessionLost:
            self._owed.clear()
            raise
        finally:
            end_lives(output, shown)

    def _answers(self, output: Output, expression: bool, timeout: float | None,
                 grace: float | None, alive: Callable[[], str | None] | None,
                 shown: dict[str, None], earlier: bool = False) -> Any:
        """The answers of the newest request (``earlier``: of the oldest owed one, an
        adopted request whose output is shown, not dropped) until its end."""
        deadline = None if timeout is None else time.monotonic() + timeout
        end = self._owed[0] if earlier else self._owed[-1]
        messages: list[str] = []
        held: list[str] = []  # Syntax messages: the cell's syntax error, or not
        failure: EvaluationError | None = None
        out_line: int | None = None
        value: Any = None
        interrupted: float | None = None
        while True:
            try:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise EvaluationError(f"the engine did not answer within {timeout:g} s",
                                          code=TIMEOUT)
                if interrupted is not None and grace is not None and now - interrupted > grace:
                    raise EvaluationError(
                        f"the engine did not stop within {grace:.0f} s of the interrupt",
                        "wait and evaluate again", code=INTERRUPT_TIMEOUT)
                wait = self.poll if deadline is None else min(self.poll, deadline - now)
                pkt = self.client.next_packet(max(wait, 0.0))
                if pkt is None:
                    for message in held:  # the SyntaxPacket follows at once, or never
                        output.stderr(message)
                    held = []
                    reason = alive() if alive is not None else None
                    if reason is not None:
                        raise SessionLost(f"the agent is gone: {reason}", code=AGENT_GONE)
                    continue
                name = packet_name(pkt)
                if isinstance(pkt, LinkDown):
                    raise SessionLost(pkt.reason)
                if len(self._owed) > 1 and not earlier:  # the rest of an earlier request
                    self._drop(pkt)
                    continue
                if held and name not in ("SyntaxPacket", "MessagePacket"):
                    for message in held:  # messages like any other
                        output.stderr(message)
                    held = []
                if name == "RKEngineDied":  # the request ends here; the session goes on
                    self._owed.popleft()
                    self.client.engine_gone = True
                    text, requested = (list(pkt.args) + ["the engine ended", False])[:2]
                    if requested:  # Quit[]/Exit[]: the end asked for, like a front end's
                        break
                    raise EvaluationError(
                        str(text), "the next cell starts a fresh engine (definitions are "
                        "reset)", code=ENGINE_ENDED)
                if name == "RKEngineRestarted":
                    info = pkt.args[0] if pkt.args else {}
                    self.client.engine_restarted(info)
                    output.stderr(restart_notice(info))
                    continue
                if name == "RKError":  # the request was refused: it ends here
                    self._owed.popleft()
                    raise AgentError(str(pkt.args[0]) if pkt.args else "refused",
                                     code=error_code(pkt))
                if name == "TextPacket":
                    output.stdout(pkt.args[0])
                elif name == "MessagePacket":
                    symbol, tag, text = (list(pkt.args) + ["", "", ""])[:3]
                    messages.append(f"{symbol}::{tag}: {text}")
                    if symbol == "Syntax":
                        held.append(messages[-1])
                    else:
                        for message in [*held, messages[-1]]:
                            output.stderr(message)
                        held = []
                elif name == "RKDisplay":
                    display_id, bundle = (list(pkt.args) + ["", None])[:2]
                    display_id = str(display_id)
                    if isinstance(bundle, dict):
                        shown[display_id] = None
                        output.live(display_id, bundle)
                    elif display_id in shown:
                        del shown[display_id]
                        output.live(display_id, None)
                elif name == "SyntaxPacket":
                    failure = EvaluationError("\n".join(held) or (messages[-1] if messages
                                                                  else "syntax error"),
                                              code=SYNTAX)
                    held = []
                elif name == "OutputNamePacket":
                    end_lives(output, shown)  # the evaluation is over: before its result
                    out_line = line_number(pkt.args[0] if pkt.args else None)
                elif name == "ReturnPacket":
                    result = pkt.args[0] if pkt.args else None
                    if isinstance(result, Symbol) and result == ABORTED:  # not numpy's ==
                        failure = EvaluationError("the evaluation was aborted", code=ABORTED_CODE)
                    elif expression:
                        value = result
                    elif isinstance(result, dict):
                        output.display(result, out_line)
                elif name in ("InputPacket", "InputStringPacket"):
                    answer = output.read_input(pkt.args[0] if pkt.args else "")
                    self.client.send(packet("TextPacket", answer))
                elif name == "InputNamePacket":
                    line = line_number(pkt.args[0] if pkt.args else None)
                    if line is not None:
                        output.next_line(line)
                if name == end:
                    self._owed.popleft()
                    break
            except KeyboardInterrupt:
                self.client.interrupt()
                interrupted = interrupted or time.monotonic()
        if failure is not None:
            raise failure
        return value


def end_lives(output: Output, shown: dict[str, None]) -> None:
    """Remove the temporary displays still shown: their evaluation has ended."""
    while shown:
        display_id = next(iter(shown))
        del shown[display_id]
        output.live(display_id, None)


def restart_notice(info: dict[str, Any]) -> str:
    """What a cell that got a fresh engine says first, once: that definitions are reset,
    and why the old engine ended; for an engine that waited in a scheduler's queue, how long
    and where it runs now (the first engine of a kernel says only that)."""
    queued = (info.get("extra") or {}).get("queued")
    waited = ""
    if isinstance(queued, dict):
        waited = (f"Slurm job {queued.get('id', '?')} started on {queued.get('node') or '?'} "
                  f"after {queued.get('waited', '?')} s in the queue; the engine is ready.")
        if not info.get("restarts"):
            return waited
        waited = " " + waited
    return (f"A fresh engine was started; all definitions were reset and In[n] starts again "
            f"at 1 (the previous engine ended: {info.get('cause') or 'unknown'}).{waited}")


def run(client: AgentClient, code: str, output: Output, **options: Any) -> Any:
    """``Evaluator(client).run(code, output, **options)``: one evaluation on a client that has
    nothing owed (tests, the doctor, benchmarks).  Front ends that go on after a failed or
    deferred request keep an ``Evaluator``."""
    return Evaluator(client).run(code, output, **options)
