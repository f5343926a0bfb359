"""What a front end says to a Wolfram kernel, as pure logic: packets in, packets and actions out.

No ctypes, threads or clock of its own, so that it can be tested against packet sequences
written down from the WSTP documentation.  The engine feeds it events ``(name, args)``: the
kernel's packets as WSTP delivers them (``("TextPacket", ("hello\\n",))``), ``RKInterrupt``
when the user interrupts, ``LinkDied`` when the link fails.  It answers through ``Kernel``
(the link) and ``EngineHost`` (rk_jupyter's side).

Interrupts escalate while the kernel does not answer (``Escalation``): an abort message
(``WSAbortMessage``, what the notebook's "Abort Evaluation" sends; the WSTP reference
recommends it over interrupting for simply stopping an evaluation), then an interrupt message
(whose menu, ``MenuPacket[1, "Interrupt> "]``, is answered "a" for abort).  A kernel that
answers neither is not ended by itself: a notebook front end never quits a kernel on its own,
and built-ins that rarely poll for aborts (large linear algebra, LibraryLink code) can take
longer than any fixed wait.  The conversation is *released* instead: the cell ends with "the
kernel is not answering the interrupt", the kernel keeps running with its definitions, and its
late answer is consumed before the next request.  Ending it is the user's choice (a second
interrupt: a terminate message, then the process group is killed) or the administrator's
(``Escalation.kill_after``).  An interrupt menu is answered "a".

Before the kernel has answered its first evaluation (``Call(starting=True)``), a menu other
than the interrupt menu, or a request for input, can only be the licence manager asking a
person (an activation key, a password): the start fails with the kernel's words instead of
answering it.

Temporary displays (PrintTemporary, Monitor): the helper writes
``DisplayPacket[{"RKDisplay", id, bundle}]`` on ``$ParentLink`` while it evaluates (a kernel
sends ``DisplayPacket`` by itself only for the PostScript of the long-gone
``Display[$Display, …]``, and WSNextPacket knows the packet, which an invented head would not
be); a cell or an expression passes it on as the link's ``RKDisplay[id, bundle]``.  Any other
``DisplayPacket``, or a packet of no use here, is dropped: the conversation goes on.

After an abort, the kernel may still owe a ``ReturnPacket[$Aborted]`` (an abort that arrives
just as the evaluation ends is applied to the next one).  So whenever an interrupt was sent,
or the evaluation ended in $Aborted, the conversation ends with a synchronisation: it sends
``EvaluatePacket[{token, $Line}]`` and discards every answer until that token comes back
(sending it again when a stale abort hits it), which also tells the current line number.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ....link.expr import Function, Symbol
from ....link.packets import ABORTED, MANIPULATE_MIME, packet
from ..base import EngineError, EngineHost, InputAborted
from .wstp import ABORT_MESSAGE, INTERRUPT_MESSAGE, TERMINATE_MESSAGE, UNDECODABLE
from .wstp import to_python as wstp_python

Event = tuple[str, tuple[Any, ...]]
log = logging.getLogger(__name__)

ABORT_CHOICE = "a"  # the interrupt menu's "abort" choice
DIALOG_EXIT = "Return[$Failed]"
SYNC_ATTEMPTS = 5
#: MenuPacket codes of the interrupt menu (1: during an evaluation, 3: during LinkRead).
INTERRUPT_MENUS = frozenset({1, 3})
#: The tag of the helper's temporary displays: DisplayPacket[{DISPLAY_TAG, id, bundle}].
DISPLAY_TAG = "RKDisplay"
FAILED = Symbol("$Failed")


def temporary_display(args: tuple[Any, ...]) -> tuple[str, dict[str, str] | None] | None:
    """(id, bundle or None to remove it) of a DisplayPacket the helper wrote; None for any
    other DisplayPacket (a kernel's own PostScript), which is of no use here."""
    item = args[0] if args else None
    if not (isinstance(item, list) and len(item) == 3 and item[0] == DISPLAY_TAG
            and isinstance(item[1], str) and (item[2] is None or isinstance(item[2], dict))):
        return None
    bundle = item[2]
    return item[1], None if bundle is None else {str(k): str(v) for k, v in bundle.items()}


def result_bundle(result: dict[Any, Any]) -> dict[str, str]:
    """A result's MIME bundle from the helper's Association: strings, but a Manipulate's
    specification, which comes as data and is written as the JSON the protocol wants."""
    return {str(key): value if isinstance(value, str) else
            json.dumps(value) if key == MANIPULATE_MIME else str(value)
            for key, value in result.items() if key != "line"}


def start_prompt(name: str, args: tuple[Any, ...]) -> str | None:
    """The question in a packet that, before the kernel's first answer, can only be the
    licence manager asking a person (a menu other than the interrupt menu, a request for
    input); None for any other packet."""
    if name in ("InputPacket", "InputStringPacket") or (
            name == "MenuPacket" and (args[:1] or (None,))[0] not in INTERRUPT_MENUS):
        text = str(args[-1] if args else "").strip()
        return text or "(a question without text)"
    return None

#: What a released conversation's cell ends with (an RKError with this code).
NOT_ANSWERING = "engine.not-answering"
_tokens = itertools.count(1)


class Kernel(Protocol):
    """The link, as the conversation uses it."""

    def evaluate(self, expr: Any) -> None:
        """Send EvaluatePacket[expr]."""

    def answer(self, text: str) -> None:
        """Send a bare string: the reply to MenuPacket, InputPacket or InputStringPacket."""

    def enter_text(self, text: str) -> None:
        """Send EnterTextPacket[text]: the answer to InputPacket (the kernel parses it as
        input, so Input["n? "] answered 41 is the number 41), and what a Dialog[] reads."""

    def reply(self, expr: Any) -> None:
        """Send ReturnPacket[expr]: the answer to a CallPacket."""

    def message(self, code: int) -> None:
        """Send an out-of-band message (WSPutMessage)."""

    def kill(self) -> None:
        """End the kernel's whole process group now."""


@dataclass(frozen=True)
class Escalation:
    """Seconds after an interrupt (without the kernel answering) for each harder step.

    By default the ladder stops at ``release_after``: the conversation stops waiting and the
    kernel keeps running (see the module's docstring).  ``kill_after`` (an administrator's
    choice, default None) makes it end the kernel instead: a terminate message at that time,
    then the process group is killed ``end_grace`` seconds later.  ``forced`` is the ladder
    of a second interrupt, from the moment it comes."""

    interrupt_after: float = 5.0
    release_after: float = 15.0
    kill_after: float | None = None
    end_grace: float = 5.0

    def steps(self) -> tuple[tuple[float, str], ...]:
        """(seconds after the interrupt, action), in order."""
        first = ((0.0, "abort"), (self.interrupt_after, "interrupt"))
        if self.kill_after is None:
            return (*first, (self.release_after, "release"))
        return first + self._ending(self.kill_after)

    def forced(self) -> tuple[tuple[float, str], ...]:
        """The steps after a second interrupt: terminate now, then kill, then give up."""
        return self._ending(0.0)

    def _ending(self, at: float) -> tuple[tuple[float, str], ...]:
        return ((at, "terminate"), (at + self.end_grace, "kill"),
                (at + 2 * self.end_grace, "give up"))


#: The engine's own requests during start: at the deadline every message goes at once and the
#: kernel is killed half a second later (a kernel that cannot answer its first evaluations in
#: time is of no use); the start ends a second after the deadline whatever the link says, so
#: that ``start`` keeps to its timeout.
AT_DEADLINE = Escalation(interrupt_after=0.0, kill_after=0.0, end_grace=0.5)


class Conversation:
    """One request to the kernel and its answer.  ``done`` once complete; ``died`` then holds
    the reason when the kernel is gone (or was killed).  ``released`` once the escalation
    stopped waiting for a kernel that answers no interrupt: the conversation is then not done
    (the kernel still owes its answer) but its requester has been told and gone on."""

    def __init__(
        self, kernel: Kernel, clock: Callable[[], float], escalation: Escalation,
        *, starting: bool = False,
    ) -> None:
        self.kernel = kernel
        self.clock = clock
        self.escalation = escalation
        self.starting = starting
        self.done = False
        self.died: str | None = None
        self.released = False
        self.prompt: str | None = None  # what the kernel asked during start (licence)
        self._steps = escalation.steps()
        self._ladder_start: float | None = None
        self._step = 0
        self._dialogs = 0
        self._sync_token: str | None = None
        self._sync_attempts = 0

    # -- driving --------------------------------------------------------------------------

    def handle(self, name: str, args: tuple[Any, ...]) -> None:
        """Take one event (a kernel packet, RKInterrupt or LinkDied)."""
        if self.done:
            return
        if name == "LinkDied":
            self._end_died(str(args[0]) if args else "the link to the kernel died")
        elif name == "RKInterrupt":
            self.interrupt()
        elif self.starting and (prompt := start_prompt(name, args)) is not None:
            self._refuse_prompt(prompt)
            return
        elif name == "MenuPacket":
            self.kernel.answer(ABORT_CHOICE)
            if not self.interrupted:
                self._ladder_start, self._step = self.clock(), 1  # "a" was the abort
        elif name == "BeginDialogPacket":
            self._dialogs += 1
            self.on_output("TextPacket", ("Dialog[] needs a notebook front end; it returned "
                                          "$Failed here.",))
            self.kernel.enter_text(DIALOG_EXIT)
        elif name == "EndDialogPacket":
            self._dialogs = max(0, self._dialogs - 1)
        elif self._dialogs and name in ("InputNamePacket", "OutputNamePacket",
                                        "ReturnTextPacket"):
            pass  # the dialog's own prompts, before our Return[] closes it
        elif name == "CallPacket":
            # The kernel waits for exactly one ReturnPacket (EvaluatePacket's reference page);
            # $Failed lets the evaluation go on, as a front end without the service would.
            self.kernel.reply(Symbol("$Failed"))
            self.on_output("TextPacket", ("The kernel asked for a front end service, which "
                                          "this front end cannot provide: it got $Failed.",))
        elif name in ("TextPacket", "MessagePacket", "SyntaxPacket"):
            self.on_output(name, args)
        elif name == "DisplayPacket":
            self.on_display(args)
        elif name in ("InputPacket", "InputStringPacket"):
            self._on_input(name, args)
        elif name == "ReturnPacket":
            value = args[0] if args else None
            if self._sync_token is not None:
                self._on_sync_return(value)
            else:
                self.on_return(value)
        elif name == "InputNamePacket" and self.interrupted and self._sync_token is None:
            # Back at the main loop without a ReturnPacket: the evaluation was aborted.
            self.on_return(ABORTED)
        # Anything else (the kernel's first In[1]:= prompt, OutputNamePacket, ...) says nothing
        # to a front end that evaluates through EvaluatePacket.
        self.tick()

    def interrupt(self) -> None:
        """Start the escalation; on a released conversation (the second interrupt), end the
        kernel: terminate now, then kill.  No-op when done or already escalating."""
        if self.done:
            return
        if self.released and self._steps != self.escalation.forced():
            self._steps = self.escalation.forced()
            self._ladder_start, self._step = self.clock(), 0
            self.tick()
        elif not self.interrupted:
            self._ladder_start, self._step = self.clock(), 0
            self.tick()

    @property
    def interrupted(self) -> bool:
        """Whether the escalation has begun (an abort was sent or a menu answered)."""
        return self._ladder_start is not None and self.clock() >= self._ladder_start

    @property
    def waited(self) -> float:
        """Seconds since the escalation began (0 before)."""
        return max(0.0, self.clock() - self._ladder_start) if self.interrupted else 0.0

    def tick(self) -> None:
        """Take the escalation steps that are due."""
        while (
            not self.done
            and self._ladder_start is not None
            and self._step < len(self._steps)
            and self.clock() >= self._ladder_start + self._steps[self._step][0]
        ):
            action = self._steps[self._step][1]
            self._step += 1
            if action == "abort":
                self.kernel.message(ABORT_MESSAGE)
            elif action == "interrupt":
                self.kernel.message(INTERRUPT_MESSAGE)
            elif action == "release":
                self.released = True
                self.on_release()
            elif action == "terminate":
                self.kernel.message(TERMINATE_MESSAGE)
            elif action == "kill":
                self.kernel.kill()
            else:
                self._end_died("the kernel did not end even after its processes were killed")

    def wait(self) -> float | None:
        """Seconds until the next escalation step (None: nothing is scheduled)."""
        if self.done or self._ladder_start is None or self._step >= len(self._steps):
            return None
        return max(0.0, self._ladder_start + self._steps[self._step][0] - self.clock())

    def schedule_interrupt(self, delay: float) -> None:
        """Interrupt by itself if still not done ``delay`` seconds from now."""
        if self._ladder_start is None:
            self._ladder_start, self._step = self.clock() + delay, 0

    # -- for subclasses -------------------------------------------------------------------

    def on_output(self, name: str, args: tuple[Any, ...]) -> None:
        """A TextPacket, MessagePacket or SyntaxPacket of the evaluation."""

    def on_display(self, args: tuple[Any, ...]) -> None:
        """A DisplayPacket of the evaluation (see ``temporary_display``)."""

    def on_return(self, value: Any) -> None:
        """The ReturnPacket of the request itself."""

    def on_synced(self, line: int) -> None:
        """The synchronisation came back: the link is clean and $Line is ``line``."""

    def on_input(self, name: str, prompt: str) -> str:
        """The answer to Input[]/InputString[]; InputAborted to abort the evaluation."""
        raise InputAborted()

    def on_release(self) -> None:
        """The escalation stopped waiting: whatever still comes is the kernel's late answer,
        which nobody waits for."""

    def sync(self) -> None:
        """Send the synchronisation; it is always bounded by the escalation."""
        self._sync_token = f"rk-sync-{next(_tokens)}"
        self._sync_attempts += 1
        self.kernel.evaluate(Function(Symbol("List"), self._sync_token, Symbol("$Line")))
        self.schedule_interrupt(self.escalation.interrupt_after)

    def finish(self) -> None:
        """The request is answered and the link is clean."""
        self.done = True

    # -- internals ------------------------------------------------------------------------

    def _on_input(self, name: str, args: tuple[Any, ...]) -> None:
        """InputPacket is answered EnterTextPacket[text] (the kernel parses it, as from a
        notebook's input dialog); InputStringPacket the bare string (InputString[] wants the
        text itself).  An aborted input answers "$Aborted" the same way."""
        prompt = args[0] if args and isinstance(args[0], str) else ""
        try:
            text = self.on_input(name, prompt)
        except InputAborted:
            self.interrupt()
            text = "$Aborted"  # the kernel waits for an answer; the abort is already on its way
        if name == "InputPacket":
            self.kernel.enter_text(text)
        else:
            self.kernel.answer(text)

    def _refuse_prompt(self, prompt: str) -> None:
        """A question before the kernel's first answer: a licence prompt, which only a person
        at the kernel's terminal can answer.  End the kernel and say what it asked."""
        self.prompt = prompt
        self.kernel.message(TERMINATE_MESSAGE)
        self._end_died(f"the kernel asked “{self.prompt}” before it could evaluate")

    def _on_sync_return(self, value: Any) -> None:
        if isinstance(value, list) and len(value) == 2 and value[0] == self._sync_token:
            self._sync_token = None
            self.on_synced(int(value[1]))
        elif value == ABORTED:
            if self._sync_attempts >= SYNC_ATTEMPTS:
                self._end_died("the kernel keeps aborting every evaluation")
            else:
                self.sync()
        # Anything else is an answer left over from before: dropped.

    def _end_died(self, reason: str) -> None:
        self.died = reason
        self.done = True


class Cell(Conversation):
    """A cell sent as EvaluatePacket[RKJupyter`Evaluate[code]], translated to rk_jupyter's
    packets: TextPacket for Print, MessagePacket(symbol, tag, text) for a message (the kernel
    sends MessagePacket[symbol, tag] and then the text in a TextPacket), SyntaxPacket,
    OutputNamePacket + ReturnPacket(bundle), ReturnPacket($Aborted), and InputNamePacket last.
    """

    def __init__(
        self,
        host: EngineHost,
        kernel: Kernel,
        clock: Callable[[], float],
        escalation: Escalation,
    ) -> None:
        super().__init__(kernel, clock, escalation)
        self.host = host
        self.line: int | None = None
        self._message: tuple[str, str] | None = None

    def on_output(self, name: str, args: tuple[Any, ...]) -> None:
        if name == "MessagePacket":
            self._flush_message()
            symbol = args[0] if args else ""
            tag = args[1] if len(args) > 1 else ""
            self._message = (_name(symbol), _name(tag))
            return
        arg = args[0] if args else ""
        if name == "TextPacket" and self._message is not None:
            symbol, tag = self._message
            self._message = None
            self.host.emit(packet("MessagePacket", symbol, tag, _line(arg)))
            return
        self._flush_message()
        if name == "TextPacket":
            self.host.emit(packet("TextPacket", _line(arg)))
        elif isinstance(arg, int):  # SyntaxPacket[position]
            self.host.emit(packet("SyntaxPacket", arg))

    def on_display(self, args: tuple[Any, ...]) -> None:
        shown = temporary_display(args)
        if shown is None:
            log.debug("Wolfram kernel: dropping DisplayPacket%r", args)
            return
        self._flush_message()
        self.host.emit(packet("RKDisplay", *shown))

    def on_input(self, name: str, prompt: str) -> str:
        self._flush_message()
        return self.host.read_input(packet(name, prompt))

    def on_return(self, value: Any) -> None:
        self._flush_message()
        if value == ABORTED:
            self.host.emit(packet("ReturnPacket", ABORTED))
            self.sync()
            return
        if value == UNDECODABLE:
            self.host.emit(packet("TextPacket", "The kernel's answer could not be read through "
                                  "WSTP (a number wider than 64 bits?); the kernel goes on."))
            self.sync()
            return
        if not isinstance(value, dict) or not isinstance(value.get("line"), int):
            self.host.emit(packet("TextPacket", f"unexpected answer from the kernel: {value!r}"))
            self.sync()
            return
        for result in value.get("results") or []:
            self.host.emit(packet("OutputNamePacket", f"Out[{result.get('line')}]= "))
            self.host.emit(packet("ReturnPacket", result_bundle(result)))
        if isinstance(value.get("syntax"), int):
            self.host.emit(packet("SyntaxPacket", value["syntax"]))
        self.line = value["line"]
        if self.interrupted:
            self.sync()  # an abort is still on its way: catch it before the next cell does
        else:
            self._end()

    def on_synced(self, line: int) -> None:
        self.line = line
        self._end()

    def on_release(self) -> None:
        self.host = _Gone(self.host)

    def _end(self) -> None:
        self.host.emit(packet("InputNamePacket", f"In[{self.line}]:= "))
        self.finish()

    def _flush_message(self) -> None:
        """A message whose text never came (the kernel went on): emit it without text."""
        if self._message is not None:
            symbol, tag = self._message
            self._message = None
            self.host.emit(packet("MessagePacket", symbol, tag, ""))


class Expression(Cell):
    """Text sent as EvaluatePacket[RKJupyter`EvaluateExpression[code]], for its value (the
    link's EvaluatePacket: ``%%rkernel -o``, a Manipulate's view): output as a cell's, then
    exactly one ReturnPacket: the value, $Failed after a syntax error (with its
    SyntaxPacket) or when the value cannot be read, $Aborted when interrupted; no In/Out."""

    def on_return(self, value: Any) -> None:
        self._flush_message()
        if value == ABORTED:
            self.host.emit(packet("ReturnPacket", ABORTED))
            self.sync()
            return
        if isinstance(value, dict) and isinstance(value.get("syntax"), int):
            self.host.emit(packet("SyntaxPacket", value["syntax"]))
            self.host.emit(packet("ReturnPacket", FAILED))
        elif isinstance(value, dict) and "value" in value:
            self.host.emit(packet("ReturnPacket", plain(value["value"])))
        else:
            self.host.emit(packet("TextPacket", "The kernel's answer could not be read through "
                                  "WSTP (a number wider than 64 bits?)" if value == UNDECODABLE
                                  else f"unexpected answer from the kernel: {value!r}"))
            self.host.emit(packet("ReturnPacket", FAILED))
            self.sync()
            return
        if self.interrupted:
            self.sync()  # an abort is still on its way: catch it before the next request does
        else:
            self.finish()

    def on_synced(self, line: int) -> None:
        self.finish()


def plain(value: Any) -> Any:
    """A value as the link's EvaluatePacket gives it (``link.packets``): lists, associations
    and True/False/Null as Python's at every depth, also inside other expressions."""
    if isinstance(value, Function):
        return wstp_python(Function(value.head, *(plain(a) for a in value.args)))
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    return wstp_python(value)


class _Gone:
    """The host of a released cell: its requester has gone on, so what the kernel still
    says for it is logged, not shown in another cell."""

    def __init__(self, host: EngineHost) -> None:
        self.host = host

    def emit(self, pkt: Function) -> None:
        log.info("Wolfram kernel, after its cell was released: %s", pkt)

    def read_input(self, prompt: Function) -> str:
        raise InputAborted()


class Call(Conversation):
    """A request of the engine's own (start, completion, inspection): its output is collected
    instead of shown, and it is aborted after ``timeout`` seconds."""

    def __init__(
        self,
        kernel: Kernel,
        clock: Callable[[], float],
        escalation: Escalation,
        timeout: float,
        *,
        starting: bool = False,
    ) -> None:
        super().__init__(kernel, clock, escalation, starting=starting)
        self.output: list[str] = []
        self.value: Any = None
        self.aborted = False
        self.schedule_interrupt(timeout)

    def on_output(self, name: str, args: tuple[Any, ...]) -> None:
        if name == "TextPacket" and args:
            self.output.append(_line(args[0]))

    def on_return(self, value: Any) -> None:
        self.value = value
        self.aborted = value == ABORTED
        if self.interrupted or self.aborted:
            self.sync()
        else:
            self.finish()

    def on_synced(self, line: int) -> None:
        self.finish()


def converse(
    conversation: Conversation,
    next_event: Callable[[float], Event | None],
    poll: float = 1.0,
) -> None:
    """Feed ``conversation`` events until it is done or released; ``next_event(timeout)``
    returns None when nothing came within ``timeout`` seconds, and the escalation then moves
    on.  A released conversation is taken up again by calling this once more."""
    was_released = conversation.released
    while not conversation.done and (was_released or not conversation.released):
        wait = conversation.wait()
        event = next_event(poll if wait is None else min(wait, poll))
        if event is None:
            conversation.tick()
        else:
            conversation.handle(*event)


def _name(value: Any) -> str:
    return value.name if isinstance(value, Symbol) else str(value)


def _line(text: Any) -> str:
    """Kernel text without the newline that ends each Print and message."""
    text = str(text)
    return text[:-1] if text.endswith("\n") else text


# -- the kernel's own words when it cannot start ------------------------------------------

LICENCE_PROBLEMS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"cannot find a valid password|no valid password|not activated"
                   r"|could not be activated|activation attempt|activation key", re.I),
        "the kernel is not activated for this user on this host. Fix: run the kernel once by "
        "hand here (`{kernel}`) and complete its activation, or run `wolframscript -activate`; "
        "then check with `{kernel} -licenseinfo`",
    ),
    (
        re.compile(r"licen[cs]e.{0,40}expired|password.{0,40}expired|has expired", re.I),
        "the licence has expired. Fix: renew it, then reactivate the kernel by running "
        "`{kernel}` once by hand",
    ),
    (
        re.compile(r"(too many|maximum number|max\w*|limit|exceeded|all)\W.{0,60}"
                   r"(kernels?|processes|licen[cs]es|seats)|licen[cs]es?\s+(are\s+)?(all\s+)?in use"
                   r"|licen[cs]e limit", re.I),
        "every kernel process the licence allows is in use. Fix: close other kernels or "
        "notebooks running on this licence (`{kernel} -licenseinfo` prints the licence id, "
        "the process limit and the processes still available), then retry",
    ),
    (
        re.compile(r"mathlm|licen[cs]e server|network licen[cs]e", re.I),
        "the licence server (MathLM) did not grant a licence. Fix: check that it is reachable "
        "from this host (`{kernel} -lmverbose` shows the conversation) or ask its administrator",
    ),
    (
        re.compile(r"licen[cs]e|licensing|mathpass|password", re.I),
        "the kernel reported a licensing problem. Fix: run `{kernel}` once by hand on this "
        "host to see and resolve it; `{kernel} -licenseinfo` shows the licence it finds",
    ),
)
BANNER = re.compile(r"^\s*(Wolfram Language|Mathematica|Wolfram)\b.*\b(Kernel|Engine) for\b"
                    r"|^\s*Copyright 19\d\d-\d{4} Wolfram Research", re.I)


def licence_problem(text: str) -> tuple[str, str] | None:
    """(the kernel's line that shows it, the explanation with its fix) for a licensing
    failure in the kernel's output, or None."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for pattern, explanation in LICENCE_PROBLEMS:
        for line in lines:
            if pattern.search(line):
                return line, explanation
    return None


def start_failure(kernel: str, words: str, exit_code: int | None) -> EngineError:
    """The error for a kernel that ended (or never connected) during start, in its words."""
    words = words.strip()
    how = "is still running" if exit_code is None else f"exited with code {exit_code}"
    problem = licence_problem(words)
    if problem is not None:
        line, explanation = problem
        return EngineError(
            f"the Wolfram kernel {kernel} could not start: it said “{line}”: "
            + explanation.format(kernel=kernel)
            + f". (It {how}; all it said:\n{words})"
        )
    lines = [line for line in words.splitlines() if line.strip()]
    if exit_code is not None and lines and all(BANNER.search(line) for line in lines):
        return EngineError(
            f"the Wolfram kernel {kernel} printed only its banner and exited (code {exit_code}) "
            "without connecting: that is what a kernel does when every kernel process its "
            "licence allows is already running. Fix: close other kernels or notebooks using "
            f"this licence (`{kernel} -licenseinfo` shows the processes still available), then "
            f"retry. (Its banner:\n{words})"
        )
    if words:
        return EngineError(
            f"the Wolfram kernel {kernel} {how} before it could evaluate; its last words:\n{words}"
        )
    return EngineError(
        f"the Wolfram kernel {kernel} {how} before it could evaluate, without a word. Check "
        f"that it runs when started by hand on this host: `{kernel}`"
    )


#: The error code of a start that met a question (a licence prompt) instead of an answer.
LICENCE_PROMPT = "engine.licence-prompt"


def prompt_failure(kernel: str, prompt: str, words: str) -> EngineError:
    """The error for a kernel that asked a question as a packet (a menu, Input) before its
    first answer: the licence manager wants a person, whose answer rk_jupyter cannot give."""
    words = words.strip()
    problem = licence_problem("\n".join([prompt, words]))
    explanation = problem[1] if problem else (
        "only a person can answer it. Fix: run `{kernel}` once by hand on this host, answer "
        "it there, then start the kernel again")
    return EngineError(
        f"the Wolfram kernel {kernel} asked “{prompt}” before it could evaluate (a licence "
        "prompt; it was not answered and the kernel was stopped): "
        + explanation.format(kernel=kernel)
        + (f". All it said:\n{words}" if words else ""),
        code=LICENCE_PROMPT,
    )
