"""The Mathics3 worker: the process that imports Mathics3 and evaluates for ``MathicsEngine``.

It lives in its own process (and process group) so that the agent can interrupt an evaluation
with SIGINT, even inside a long builtin, without losing definitions, and can kill it outright.
The engine runs it as a module (``python -m rk_jupyter.agent.engines.mathics.worker`` works
too) under any interpreter that has Mathics3, which need not have rk_jupyter installed: the
engine's bootstrap loads this rk_jupyter (``engines.process.python_argv``).  Mathics3 is
imported only once the pipe (``pipe``) is set up, so that its absence can be reported there.

Cells: the worker checks the whole cell's syntax first (an error evaluates nothing and gives
a Syntax message + ``syntax``), then evaluates each top-level expression in order under one
$Line, so In[n]/Out[n] (``history``) and % refer to cells; the result is the last
expression's (nothing when it is Null, as after a trailing semicolon), rendered as a MIME
bundle (``rendering``); an aborted expression ends the cell with $Aborted.  An ``expr``
request evaluates outside In/Out and answers with the value (``values``).

Interrupts: SIGINT is blocked except while a cell evaluates (between ``started`` and the
result), and a signal left pending from an earlier cell is discarded before ``started``; the
agent signals only after it has seen ``started``.  So an interrupt never hits an idle worker
or the next cell.  Within the cell, SIGINT only asks Mathics3 to stop: its next evaluation
step (``Evaluation.check_stopped``, called at every ``evaluate``) raises an abort, which
CheckAbort can catch as in Mathematica.  An exception raised at whatever bytecode the signal
happens to arrive at could land between the two halves of an assignment (Mathics3's
``insert_rule`` deletes the old rule, then inserts the new one) and lose the variable: one
interrupt of ``While[True, x++]`` in twenty did.  Only a builtin that takes no evaluation
step for ``FORCE_AFTER`` (a long Pause, a big factorization) is then interrupted where it is.

Garbage: the worker collects its youngest generation less often than Python does
(``tune_collector``), since Mathics3's many short-lived expressions otherwise set off full
collections of everything Mathics3 keeps.
"""

from __future__ import annotations

import gc
import json
import os
import re
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from ....link.launcher import OUTPUT_LIMIT
from ..process import format_bytes, set_memory_limit
from .dynamic import RENDERED, Dynamic, dynamic_builtins
from .frontend import input_builtins
from .history import History, history_builtins
from .pipe import SIGINT, STARTED, Channel, Message
from .rendering import Renderer
from .shorten import cut_text
from .values import FAILED, MAX_DEPTH, ValueTooDeep, to_wxf

_SYMBOL_NAME = re.compile(r"^`?[$A-Za-z][$A-Za-z0-9]*(`[$A-Za-z][$A-Za-z0-9]*)*$")
# gmpy2's texts for a power too large to compute: Mathics3 turns them into General::ovfl.
_OVERFLOWS = frozenset(("mpz.pow outrageous exponent", "mpq.pow outrageous exp num"))
# Allocations between two collections of the youngest generation (``tune_collector``).
GC_YOUNG_THRESHOLD = 10_000
# Seconds an asked stop waits for Mathics3's next evaluation step before it is forced.
FORCE_AFTER = 0.5


def tune_collector() -> None:
    """Collect the youngest generation every ``GC_YOUNG_THRESHOLD`` allocations, not 700.

    Mathics3 allocates expressions by the hundred thousand a cell, nearly all freed young by
    reference counting.  At 700, each young collection finds many still in use, promotes them,
    and the promotions soon trigger full collections, which traverse the ~500k objects
    Mathics3 keeps (its builtins' definitions): 80-140 ms each, ~1.6 s of the ~25 s the
    documentation workload takes (``benchmarks/bench_docs.py``); at 10,000, 0.8 s.  Cyclic
    garbage then waits a little longer: a few thousand objects more at most.
    """
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _drain_sigint() -> None:
    """Discard SIGINTs that arrived (blocked) after the previous cell: they were meant for it."""
    while signal.sigtimedwait(SIGINT, 0) is not None:
        pass


class Worker:
    """A Mathics3 session serving the agent's requests one at a time."""

    def __init__(self, channel: Channel, memory_limit: int = 0,
                 output_limit: int = OUTPUT_LIMIT, session: Any = None) -> None:
        """``session``: a MathicsSession built but never used (the template's, in a forked
        worker); None builds one here."""
        # Mathics3 is imported here, not at module level, so that a missing Mathics3 can be
        # reported over the channel.
        import mathics
        from mathics.core.interrupt import AbortInterrupt, TimeoutInterrupt
        from mathics.core.load_builtin import import_and_load_builtins

        if session is None:
            import_and_load_builtins()
        from mathics.core.symbols import SymbolNull
        from mathics.session import MathicsSession

        self.version: str = mathics.__version__
        self.memory_limit = memory_limit
        self.channel = channel
        self.session = session or MathicsSession(catch_interrupt=True)
        self.definitions = self.session.definitions
        self.evaluation = self.session.evaluation
        self.evaluation.output = _pipe_output(channel, output_limit)
        self.null = SymbolNull
        self.history = History()
        self.renderer = Renderer(self.evaluation, self.reset_evaluation, output_limit)
        self.dynamic = Dynamic(self)
        for builtin in [*input_builtins(self), *history_builtins(self.history),
                        *dynamic_builtins(self.dynamic)]:
            builtin.contribute(self.definitions)
        self.definitions.clear_cache()
        self.interruptible = False
        self._input_id = 0
        self._aborted, self._timeout = AbortInterrupt, TimeoutInterrupt
        # The stop asked (its time) and not yet delivered; whether the next SIGINT forces it.
        self._stop: float | None = None
        self._force = False
        self._stop_asked = threading.Event()
        self._main = threading.get_ident()
        self.evaluation.check_stopped = self._check_stopped
        threading.Thread(target=self._escalate, daemon=True).start()
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        # A late signal (after the cell's evaluation ended) is the ended cell's: ignore it.
        if not self.interruptible:
            return
        if self._force:
            self._force, self._stop = False, None
            raise KeyboardInterrupt
        if self._stop is None:
            self._stop = time.monotonic()
            self._stop_asked.set()

    def _check_stopped(self) -> None:
        """Mathics3's ``Evaluation.check_stopped`` (called at each evaluation step), which
        also delivers an asked stop: as an abort, at a point where no definition is half
        changed."""
        if self._stop is not None:
            self._stop = None
            raise self._aborted
        if self.evaluation.stopped:
            raise self._timeout

    def _escalate(self) -> None:
        """Thread: force a stop that no evaluation step took within ``FORCE_AFTER`` (SIGINT
        is blocked here: the signal goes to the main thread, where the handler raises)."""
        while True:
            self._stop_asked.wait()
            self._stop_asked.clear()
            asked = self._stop
            if asked is None:
                continue
            time.sleep(max(0.0, asked + FORCE_AFTER - time.monotonic()))
            if self._stop == asked and self.interruptible:
                self._force = True
                signal.pthread_kill(self._main, signal.SIGINT)

    def serve(self) -> bool:
        """Answer requests until the agent closes our stdin (False) or asks for a fresh
        engine in this same process slot (``["renew"]``: True, see ``renew``)."""
        tune_collector()
        while (request := self.channel.recv()) is not None:
            match request:
                case ["renew"]:
                    return True
                case ["nop"]:  # the agent's prod of a Slurm step's output (engine._prod)
                    pass
                case ["eval", code]:
                    self.run_cell(str(code), self.evaluate_cell)
                case ["expr", code]:
                    self.run_cell(str(code), self.evaluate_expression)
                case ["complete" | "inspect" as op, request_id, argument]:
                    try:
                        if op == "complete":
                            value: Any = self.complete(str(argument))
                        else:
                            value = self.inspect(str(argument))
                    except Exception:
                        traceback.print_exc()
                        value = None
                    self.channel.send(["reply", request_id, value])
                # Anything else (an input answer whose Input[] was aborted) is stale: drop it.
        return False

    # -- evaluation ---------------------------------------------------------------------------

    def run_cell(
        self, code: str, evaluate: Callable[[str], Message | None]
    ) -> None:
        """Evaluate one request (``evaluate_cell`` or ``evaluate_expression``) with SIGINT open,
        then report its result and the next line."""
        _drain_sigint()
        self.channel.send_frame(STARTED)
        outcome: Message | None = ["aborted"]
        failure: BaseException | None = None
        self._stop, self._force = None, False
        # Each handler first closes the window, so that a second SIGINT cannot escape it.
        try:
            self.interruptible = True
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGINT)
            outcome = evaluate(code)
        except KeyboardInterrupt:
            self.interruptible = False
        except MemoryError:
            self.interruptible = False
            self.channel.send(["message", "General", "nomem", self.out_of_memory()])
        except Exception as exc:
            self.interruptible = False
            failure, outcome = exc, None
        finally:
            self.interruptible = False
            signal.pthread_sigmask(signal.SIG_BLOCK, SIGINT)
            self._stop, self._force = None, False
        self.reset_evaluation()
        if failure is not None:
            traceback.print_exception(failure)
            text = f"internal error: {type(failure).__name__}: {failure}"
            self.channel.send(["message", "Mathics3", "err", text])
        # The outcome rides in the same frame: a cell costs the agent one frame less.
        self.channel.send(["done", self.definitions.get_line_no() + 1, outcome])

    def out_of_memory(self) -> str:
        """The message of a cell that ran out of memory: what happened, that definitions
        stay, and where the limit is set."""
        limit = (f"the engine's memory_limit of {format_bytes(self.memory_limit)}"
                 if self.memory_limit else "the memory this host gives the engine")
        return (f"The evaluation needed more than {limit} and was stopped; definitions are "
                "kept. To allow more, raise memory_limit in the kernelspec (rk-jupyter add "
                "NAME --memory-limit 16G, or the key \"memory_limit\") and restart the kernel.")

    def reset_evaluation(self) -> None:
        """Make the evaluation usable outside ``Evaluation.evaluate`` (it leaves stopped=True),
        and messages audible again: Mathics3's Plot sets ``quiet_all`` while it samples and
        leaves it set when the sampling aborts, which silenced every later message."""
        self.evaluation.stopped = False
        self.evaluation.recursion_depth = 0
        self.evaluation.quiet_all = False
        self.evaluation.out = []

    def evaluate_cell(self, code: str) -> Message | None:
        """Evaluate each top-level expression of the cell in order, all under one $Line.

        A syntax error anywhere evaluates nothing (like a notebook).  The cell's result is the
        last expression's; the cell stops at the first aborted expression.
        """
        from mathics.core.parser.feed import MathicsMultiLineFeeder
        from mathics_scanner.location import ContainerKind

        self.reset_evaluation()
        if not self.syntax_ok(code):
            return None
        feeder = MathicsMultiLineFeeder(code, "", ContainerKind.STRING)
        line = self.definitions.get_line_no() + 1
        value = None
        while not feeder.empty():
            expr, _ = self.parse(feeder, "the cell")
            if expr is None:
                continue
            value = self.guarded(lambda expr=expr: self.main_loop_step(expr, line))
            if value is None:
                return ["aborted"]
        if value is None or value is self.null:
            return None
        bundle = None
        if value.get_head_name() == "System`Manipulate":
            bundle = self.dynamic.manipulate(value)
        return ["result", line, bundle or self.renderer.bundle(value, line)]

    def main_loop_step(self, expr: Any, line: int) -> Any:
        """What the main loop does with one input: In, $Pre, evaluation, $Post, Out, $PrePrint.

        Mathics3's ``Evaluation.evaluate`` does the same but keeps In/Out as rules, which it
        inserts and trims with linear scans: ~2 ms a cell at the default 100 lines of history.
        """
        from mathics.core.expression import Expression
        from mathics.core.symbols import Symbol

        definitions = self.definitions
        definitions.set_line_no(line)
        keep = definitions.get_history_length()
        if keep > 0:
            self.history.add_input(line, expr, keep)
        if definitions.get_ownvalues("System`$Pre"):
            expr = Expression(Symbol("System`$Pre"), expr)
        value = expr.evaluate(self.evaluation)
        if definitions.get_ownvalues("System`$Post"):
            value = Expression(Symbol("System`$Post"), value).evaluate(self.evaluation)
        if keep > 0:
            stored = self.evaluation.predetermined_out or value
            self.evaluation.predetermined_out = None
            if stored.get_head() in definitions.outputforms:
                stored = stored.elements[0]
            self.history.add_output(line, stored, keep)
        if value is not self.null and definitions.get_ownvalues("System`$PrePrint"):
            value = Expression(Symbol("System`$PrePrint"), value).evaluate(self.evaluation)
        return value

    def guarded(self, evaluate: Callable[[], Any]) -> Any:
        """``evaluate()`` with the main loop's handling of what escapes an evaluation.

        Returns the value, or None when the evaluation was aborted (Abort[], TimeConstrained's
        timeout); uncaught Return, Throw, Break and Continue give Mathics3's messages and values.
        An interrupt (KeyboardInterrupt) passes through to ``run_cell``.
        """
        from mathics.core.expression import Expression
        from mathics.core.interrupt import (
            AbortInterrupt,
            BreakInterrupt,
            ContinueInterrupt,
            ReturnInterrupt,
            TimeoutInterrupt,
            WLThrowInterrupt,
        )
        from mathics.core.symbols import Symbol
        from mathics.core.systemsymbols import SymbolHold, SymbolOverflow, SymbolThrow

        evaluation = self.evaluation
        evaluation.start_time = time.time()
        evaluation.iteration_count = 0
        evaluation.timeout = False
        try:
            return evaluate()
        except AbortInterrupt:
            return None
        except TimeoutInterrupt:
            if not evaluation.timeout:
                evaluation.timeout = True
                evaluation.message("General", "timeout")
            return None
        except ReturnInterrupt as exc:
            return exc.expr
        except WLThrowInterrupt as exc:
            thrown = Expression(SymbolThrow, exc.value, *([exc.tag] if exc.tag else []))
            evaluation.message("Throw", "nocatch", thrown)
            return Expression(SymbolHold, thrown)
        except (BreakInterrupt, ContinueInterrupt) as exc:
            name = "Break" if isinstance(exc, BreakInterrupt) else "Continue"
            evaluation.message(name, "nofdw")
            return Expression(SymbolHold, Expression(Symbol(f"System`{name}")))
        except ValueError as exc:
            if str(exc) not in _OVERFLOWS:
                raise
            evaluation.message("General", "ovfl")
            return Expression(SymbolOverflow)
        finally:
            self.reset_evaluation()

    def evaluate_expression(self, code: str) -> Message:
        """The value of the text's last top-level expression, as ``ToExpression`` gives it.

        Outside the main loop, like EvaluatePacket: no In/Out, $Line, $Pre or $Post.  A syntax
        error evaluates nothing and gives $Failed, as does a value too deep for the link.
        """
        from mathics.core.parser.feed import MathicsMultiLineFeeder
        from mathics_scanner.location import ContainerKind

        failed: Message = ["value", FAILED]
        self.reset_evaluation()
        if not self.syntax_ok(code):
            return failed
        feeder = MathicsMultiLineFeeder(code, "", ContainerKind.STRING)
        value = self.null
        while not feeder.empty():
            expr, _ = self.parse(feeder, "the input")
            if expr is None:
                continue
            value = self.guarded(lambda expr=expr: expr.evaluate(self.evaluation))
            if value is None:
                return ["aborted"]
        if value.get_head_name() == RENDERED:  # a front end's view of dynamic output
            return ["value", self.render(value.elements[0], False)]
        try:
            return ["value", to_wxf(value)]
        except ValueTooDeep:
            text = f"the value is nested more than {MAX_DEPTH} levels deep"
            self.channel.send(["message", "EvaluatePacket", "depth", text])
            return failed

    def syntax_ok(self, code: str) -> bool:
        """Parse the whole cell without evaluating; report the first syntax error if any."""
        from mathics.core.parser.feed import MathicsMultiLineFeeder
        from mathics.core.parser.parser import Parser
        from mathics_scanner.errors import InvalidSyntaxError, SyntaxError
        from mathics_scanner.location import ContainerKind

        parser = Parser()
        feeder = MathicsMultiLineFeeder(code, "", ContainerKind.STRING)
        while not feeder.empty():
            first_line = feeder.lineno
            try:
                parser.parse(feeder)
            except SyntaxError as exc:
                where = exc.args[0] if isinstance(exc, InvalidSyntaxError) else None
                if not isinstance(where, int):
                    where = parser.tokeniser.pos
                offset = sum(len(line) for line in feeder.lines[:first_line])
                self.send_parse_messages(feeder, "the cell")
                self.channel.send(["syntax", min(offset + where, len(code)) + 1])
                return False
            feeder.messages = []  # warnings: the evaluating parse reports them
        return True

    def parse(self, feeder: Any, where: str) -> tuple[Any, bool]:
        """(expression or None, parsed without syntax error), reporting parse messages."""
        from mathics.core.parser.util import parse_returning_code
        from mathics_scanner.errors import SyntaxError

        try:
            expr, _ = parse_returning_code(self.definitions, feeder)
            ok = True
        except SyntaxError:
            expr, ok = None, False
        self.send_parse_messages(feeder, where)
        return expr, ok

    def send_parse_messages(self, feeder: Any, where: str) -> None:
        """Issue the feeder's messages, naming the source in Syntax messages."""
        for message in feeder.messages:
            if message[0] == "Syntax" and len(message) == 7:
                # Mathics3 puts the container (here "") or a text fragment in the last slot.
                message = [*message[:6], where]
            self.evaluation.message(*message)
        feeder.messages = []

    # -- dynamic output (``dynamic.Host``) -----------------------------------------------------

    def show(self, display_id: str, bundle: dict[str, str] | None) -> None:
        """A temporary display (PrintTemporary, Monitor), or its removal (None)."""
        self.channel.send(["display", display_id, bundle])

    def render(self, value: Any, inside: bool) -> dict[str, str]:
        """A value's MIME bundle (Null: an empty one); ``inside`` an evaluation, whose state
        the rendering then leaves as it was."""
        if value is self.null:
            return {}
        if not inside:
            return self.renderer.bundle(value)
        with self.renderer.inside():
            return self.renderer.bundle(value)

    # -- Input[] / InputString[] --------------------------------------------------------------

    def ask(self, kind: str, prompt: Any) -> str:
        """Ask the front end for a line (kind: InputPacket or InputStringPacket)."""
        from mathics.core.atoms import String
        from mathics.core.interrupt import AbortInterrupt

        if prompt is None:
            text = "? "
        elif isinstance(prompt, String):
            text = prompt.value
        else:
            text = str(self.evaluation.format_output(prompt, "text"))
        self._input_id += 1
        self.channel.send(["input", self._input_id, kind, text])
        while (answer := self.channel.recv()) is not None:
            match answer:
                case ["input", request_id, line] if request_id == self._input_id:
                    if line is None:
                        raise AbortInterrupt
                    return str(line)
                case ["nop"]:  # the agent's prod of a Slurm step's output (engine._prod)
                    continue
            print(f"mathics worker: ignored {answer[0]!r} during Input", file=sys.stderr)
        raise SystemExit(0)  # the agent is gone

    def read_expression(self, prompt: Any) -> Any:
        """Input[]: the answer parsed as an expression, which Mathics3 then evaluates."""
        from mathics.core.parser.feed import MathicsMultiLineFeeder
        from mathics.core.symbols import SymbolNull
        from mathics.core.systemsymbols import SymbolFailed
        from mathics_scanner.location import ContainerKind

        text = self.ask("InputPacket", prompt)
        if not text.strip():
            return SymbolNull
        expr, ok = self.parse(MathicsMultiLineFeeder(text, "", ContainerKind.STRING), "the input")
        return expr if ok and expr is not None else SymbolFailed

    # -- introspection ------------------------------------------------------------------------

    def complete(self, prefix: str) -> list[str]:
        """Like Names[prefix <> "*"]: short names unless the prefix names a context."""
        from mathics.core.symbols import strip_context

        names = self.definitions.get_matching_names(prefix + "*")
        if "`" in prefix:
            return sorted(names)
        return sorted({strip_context(name) for name in names})

    def inspect(self, name: str) -> dict[str, str] | None:
        """The symbol's documentation (Mathics3's long usage text), None when it has none."""
        from mathics.core.atoms import String
        from mathics.core.expression import Expression
        from mathics.core.symbols import Symbol
        from mathics.core.systemsymbols import SymbolMessageName
        from mathics.doc.online import online_doc_string

        if not _SYMBOL_NAME.match(name):
            return None
        full = self.definitions.lookup_name(name)
        if not self.definitions.have_definition(full):
            return None
        self.reset_evaluation()
        text = online_doc_string(Symbol(full), self.evaluation, True).strip()
        if not text:
            pattern = Expression(SymbolMessageName, Symbol(full), String("usage"))
            try:
                usage = self.definitions.get_value(
                    full, "System`Messages", pattern, self.evaluation
                )
            except ValueError:
                return None
            text = usage.get_string_value() or ""
        return {"text/plain": text} if text else None


def _pipe_output(channel: Channel, limit: int) -> Any:
    """An Output that forwards each Print and message to the agent as it happens (a Print
    over ``limit`` characters shortened)."""
    from mathics.core.evaluation import Output

    class PipeOutput(Output):
        def out(self, out: Any) -> None:
            if out.is_message:
                channel.send(["message", str(out.symbol), str(out.tag), str(out.text)])
            else:
                channel.send(["print", cut_text(str(out.text), limit)])

    return PipeOutput()


def _exit_with_parent(parent: int) -> None:
    """Watchdog thread: end when the agent is gone (close() never came), not compute forever."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(3)


def _exit_with_agent(agent_fd: int) -> None:
    """Watchdog thread of a forked worker (whose parent is the template, not the agent): end
    when the agent's pidfd says it is gone."""
    select.select([agent_fd], [], [])
    os._exit(3)


def import_failure(exc: ImportError) -> Message:
    """The ``fatal`` message for a Mathics3 that cannot be imported (the template's too)."""
    missing = isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "mathics"
    return ["fatal", missing, f"{type(exc).__name__}: {exc}", _externally_managed()]


def _externally_managed() -> bool:
    """Whether pip refuses to install into this Python (PEP 668: a distribution's Python,
    Debian 12, Ubuntu 24.04), so that the start error advises a virtual environment instead."""
    import sysconfig

    return sys.prefix == sys.base_prefix and os.path.isfile(
        os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))


def serve(channel: Channel, config: dict[str, Any], session: Any = None,
          agent_fd: int | None = None) -> int:
    """Start Mathics3 (or take the template's ``session``), say ready (or why not), and serve
    the agent; the exit status.  Called by ``main`` in a cold worker, and in a worker the
    template forked (``agent_fd``: the agent's pidfd, watched instead of the parent)."""
    memory_limit = int(config.get("memory_limit") or 0)
    set_memory_limit(memory_limit)
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGINT)  # also for the watchdog thread
    if agent_fd is None:
        threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    else:
        threading.Thread(target=_exit_with_agent, args=(agent_fd,), daemon=True).start()
    try:
        worker = Worker(channel, memory_limit,
                        int(config.get("output_limit") or OUTPUT_LIMIT), session)
    except ImportError as exc:
        traceback.print_exc()
        channel.send(import_failure(exc))
        return 2
    channel.send(["ready", worker.version, sys.executable, os.getpid()])
    if worker.serve() and agent_fd is None:
        renew(channel)
    return 0


def renew(channel: Channel) -> None:
    """Become a fresh cold worker in this same process: the protocol back on fds 0/1, then
    ``exec`` of our own command line, which starts Mathics3 anew and says "ready" again.

    Why: a worker that is a Slurm job step (its stdin and stdout are srun's) keeps the step
    and the job this way, so a kernel restart gets a fresh engine without waiting in the
    queue again.  Nothing of this process survives the exec but its pid and descriptors."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(channel.rfd, 0)
    os.dup2(channel.wfd, 1)
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def main() -> int:
    """A cold worker: its config as argv[1] (JSON)."""
    channel = Channel.claim_stdio()
    return serve(channel, json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})


if __name__ == "__main__":
    sys.exit(main())
