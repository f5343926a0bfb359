"""The Mathics3 worker: the process that imports Mathics3 and evaluates for ``MathicsEngine``.

It lives in its own process (and process group) so that the agent can interrupt an evaluation
with SIGINT, even inside a long builtin, without losing definitions, and can kill it outright.
At module level it imports only the standard library: the engine imports the framing helpers
from here, and runs this file by path (``runpy``) with any interpreter that has Mathics3, which
need not have rk_jupyter installed (``python -m rk_jupyter.agent.engines.mathics_worker`` works
too).

Protocol: frames on the worker's original stdin (agent → worker) and stdout (worker → agent),
each a 4-byte big-endian length and a UTF-8 JSON object.  Stray output cannot corrupt it: the
worker moves the protocol to private descriptors at once and points fd 0 at /dev/null and fd 1
(and ``sys.stdout``) at stderr.

Agent → worker: ``{"op": "eval", "code"}``, ``{"op": "expr", "code"}`` (evaluate for the value,
outside In/Out: EvaluatePacket), ``{"op": "complete", "id", "prefix"}``,
``{"op": "inspect", "id", "name"}``, ``{"op": "input", "id", "text"}`` (answer to an input
request; ``text`` null means the input was aborted).

Worker → agent: ``ready {version, python, pid}`` or ``fatal {missing, error,
externally_managed}`` once at start;
per cell ``started``, then any of ``print {text}``, ``message {symbol, tag, text}``,
``syntax {pos}``, ``input {id, kind, prompt}``, then ``result {line, bundle}`` or
``result {aborted: true}`` (none when the result is Null), and last ``done {next}``; an
``expr`` request is answered the same way, except that ``value {value}`` replaces
``result {line, bundle}`` and comes unless aborted, also for Null and (as $Failed) after a
syntax error; ``reply {id, value}`` answers complete/inspect.

Values (``value {value}``) are JSON trees that ``MathicsEngine`` turns into the Python values of
the WXF mapping: null, true, false, strings, arrays (List) and integers below 2^63 stand for
themselves and a JSON float for a machine Real; the rest are tagged objects: ``{"int": hex}``,
``{"decimal": digits}`` (arbitrary-precision Real), ``{"complex": [re, im]}`` (machine
Complex), ``{"bytes": base64}``, ``{"symbol": name}`` (System` context dropped),
``{"assoc": [[key, value, delayed], ...]}``, ``{"array": type, "dims", "data": base64}`` (a
packed array, little-endian) and ``{"head": head, "args": [...]}`` for any other expression.

Interrupts: SIGINT is blocked except while a cell evaluates (between ``started`` and the
result), and a signal left pending from an earlier cell is discarded before ``started``; the
agent signals only after it has seen ``started``.  So an interrupt never hits an idle worker
or the next cell, and frames are written with SIGINT deferred so none is cut in half.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import signal
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

HEADER = struct.Struct(">I")
_SIGINT = {signal.SIGINT}

# Heads whose results are pictures: shown as SVG (Graphics) or as text, never as TeX.
_PICTURES = frozenset(
    f"System`{name}" for name in ("Graphics", "Graphics3D", "Image", "Sound", "Audio", "Graph")
)
# Form wrappers whose text is the point (TeX would typeset the form, not the expression).
_TEXT_FORMS = frozenset(
    f"System`{name}"
    for name in ("FullForm", "InputForm", "OutputForm", "TeXForm", "MathMLForm", "PythonForm")
)
_TEX_MAX = 20_000
# Values nested deeper than this are refused: the link's WXF decoder stops at 512 levels.
_VALUE_MAX_DEPTH = 400
_JSON_INT = 1 << 63  # larger integers travel as hex text (JSON text has a digit limit)
_CONSTANTS = {"System`True": True, "System`False": False, "System`Null": None}
_RULES = frozenset(("System`Rule", "System`RuleDelayed"))
_SYMBOL_NAME = re.compile(r"^`?[$A-Za-z][$A-Za-z0-9]*(`[$A-Za-z][$A-Za-z0-9]*)*$")
# gmpy2's texts for a power too large to compute: Mathics3 turns them into General::ovfl.
_OVERFLOWS = frozenset(("mpz.pow outrageous exponent", "mpq.pow outrageous exp num"))


def encode_frame(message: dict[str, Any]) -> bytes:
    """One protocol frame: length prefix + JSON."""
    data = json.dumps(message).encode("utf-8")
    return HEADER.pack(len(data)) + data


def take_frame(buffer: bytearray) -> dict[str, Any] | None:
    """Remove the first whole frame from ``buffer`` and decode it; None if none is whole yet.
    Both ends of the pipe read this way (ValueError: a broken frame)."""
    if len(buffer) < HEADER.size:
        return None
    (size,) = HEADER.unpack_from(buffer)
    if len(buffer) < HEADER.size + size:
        return None
    payload = bytes(buffer[HEADER.size : HEADER.size + size])
    del buffer[: HEADER.size + size]
    return decode_payload(payload)


def decode_payload(data: bytes) -> dict[str, Any]:
    """The JSON object of one frame's payload."""
    message = json.loads(data.decode("utf-8"))
    if not isinstance(message, dict):
        raise ValueError(f"protocol frame is not an object: {message!r}")
    return message


class Channel:
    """The worker's end of the protocol, on descriptors no stray print can reach."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self._buffer = bytearray()

    @classmethod
    def claim_stdio(cls) -> Channel:
        """Move the protocol off fds 0/1 and point them at /dev/null and stderr."""
        rfd, wfd = os.dup(0), os.dup(1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        return cls(rfd, wfd)

    def send(self, *messages: dict[str, Any]) -> None:
        """Write whole frames in one write (one wake-up of the agent); an interrupt arriving
        meanwhile fires right after them."""
        view = memoryview(b"".join(encode_frame(message) for message in messages))
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)
        try:
            while view:
                view = view[os.write(self.wfd, view) :]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def recv(self) -> dict[str, Any] | None:
        """The next frame, None at end of input.

        The wait (select) is interruptible when SIGINT is open, as during Input[]; reading is
        not, so a KeyboardInterrupt never leaves half a frame consumed.
        """
        while True:
            if (message := take_frame(self._buffer)) is not None:
                return message
            select.select([self.rfd], [], [])
            old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)
            try:
                chunk = os.read(self.rfd, 1 << 16)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
            if not chunk:
                return None
            self._buffer += chunk


def _drain_sigint() -> None:
    """Discard SIGINTs that arrived (blocked) after the previous cell: they were meant for it."""
    while signal.sigtimedwait(_SIGINT, 0) is not None:
        pass


class Worker:
    """A Mathics3 session serving the agent's requests one at a time."""

    def __init__(self, channel: Channel) -> None:
        # Mathics3 is imported here, not at module level, so that a missing Mathics3 can be
        # reported over the channel.
        import mathics
        from mathics.core.load_builtin import import_and_load_builtins

        import_and_load_builtins()
        from mathics.core.symbols import SymbolNull
        from mathics.session import MathicsSession

        self.version: str = mathics.__version__
        self.channel = channel
        self.session = MathicsSession(catch_interrupt=True)
        self.definitions = self.session.definitions
        self.evaluation = self.session.evaluation
        self.evaluation.output = _pipe_output(channel)
        self.null = SymbolNull
        self.history = History()
        for builtin in [*_frontend_input_builtins(self), *_history_builtins(self.history)]:
            builtin.contribute(self.definitions)
        self.definitions.clear_cache()
        self.interruptible = False
        self._input_id = 0
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        # A late signal (after the cell's evaluation ended) is the ended cell's: ignore it.
        if self.interruptible:
            raise KeyboardInterrupt

    def serve(self) -> None:
        """Answer requests until the agent closes our stdin."""
        while (request := self.channel.recv()) is not None:
            op = request.get("op")
            if op in ("eval", "expr"):
                evaluate = self.evaluate_cell if op == "eval" else self.evaluate_expression
                self.run_cell(str(request.get("code", "")), evaluate)
            elif op in ("complete", "inspect"):
                try:
                    if op == "complete":
                        value: Any = self.complete(str(request.get("prefix", "")))
                    else:
                        value = self.inspect(str(request.get("name", "")))
                except Exception:
                    traceback.print_exc()
                    value = None
                self.channel.send({"ev": "reply", "id": request.get("id"), "value": value})
            # Anything else (an input answer whose Input[] was aborted) is stale: drop it.

    # -- evaluation ---------------------------------------------------------------------------

    def run_cell(
        self, code: str, evaluate: Callable[[str], dict[str, Any] | None]
    ) -> None:
        """Evaluate one request (``evaluate_cell`` or ``evaluate_expression``) with SIGINT open,
        then report its result and the next line."""
        _drain_sigint()
        self.channel.send({"ev": "started"})
        outcome: dict[str, Any] | None = {"ev": "result", "aborted": True}
        failure: BaseException | None = None
        # Each handler first closes the window, so that a second SIGINT cannot escape it.
        try:
            self.interruptible = True
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGINT)
            outcome = evaluate(code)
        except KeyboardInterrupt:
            self.interruptible = False
        except Exception as exc:
            self.interruptible = False
            failure, outcome = exc, None
        finally:
            self.interruptible = False
            signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)
        self.reset_evaluation()
        if failure is not None:
            traceback.print_exception(failure)
            text = f"internal error: {type(failure).__name__}: {failure}"
            self.channel.send({"ev": "message", "symbol": "Mathics3", "tag": "err", "text": text})
        done = {"ev": "done", "next": self.definitions.get_line_no() + 1}
        self.channel.send(*([outcome, done] if outcome is not None else [done]))

    def reset_evaluation(self) -> None:
        """Make the evaluation usable outside ``Evaluation.evaluate`` (it leaves stopped=True),
        and messages audible again: Mathics3's Plot sets ``quiet_all`` while it samples and
        leaves it set when the sampling aborts, which silenced every later message."""
        self.evaluation.stopped = False
        self.evaluation.recursion_depth = 0
        self.evaluation.quiet_all = False
        self.evaluation.out = []

    def evaluate_cell(self, code: str) -> dict[str, Any] | None:
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
                return {"ev": "result", "aborted": True}
        if value is None or value is self.null:
            return None
        return {"ev": "result", "line": line, "bundle": self.bundle(value)}

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

    def evaluate_expression(self, code: str) -> dict[str, Any]:
        """The value of the text's last top-level expression, as ``ToExpression`` gives it.

        Outside the main loop, like EvaluatePacket: no In/Out, $Line, $Pre or $Post.  A syntax
        error evaluates nothing and gives $Failed, as does a value too deep for the link.
        """
        from mathics.core.parser.feed import MathicsMultiLineFeeder
        from mathics_scanner.location import ContainerKind

        failed = {"ev": "value", "value": {"symbol": "$Failed"}}
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
                return {"ev": "result", "aborted": True}
        try:
            return {"ev": "value", "value": tagged(value)}
        except ValueTooDeep:
            text = f"the value is nested more than {_VALUE_MAX_DEPTH} levels deep"
            self.channel.send(
                {"ev": "message", "symbol": "EvaluatePacket", "tag": "depth", "text": text}
            )
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
                self.channel.send({"ev": "syntax", "pos": min(offset + where, len(code)) + 1})
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

    # -- results ------------------------------------------------------------------------------

    def bundle(self, value: Any) -> dict[str, str]:
        """The MIME bundle of a result: OutputForm text, plus SVG for Graphics or TeX for math."""
        from mathics.core.atoms import Integer

        if isinstance(value, Integer):  # its OutputForm is its digits; formatting would take
            return {"text/plain": str(value.value)}  # 40 % of a cell like "1"
        text = self.evaluation.format_output(value, "text")
        bundle = {"text/plain": text if isinstance(text, str) else str(value)}
        if value.get_head_name() == "System`Graphics":
            svg = self.quietly(self.svg, value)
            if svg:
                bundle["image/svg+xml"] = svg
        elif wants_tex(value):
            tex = self.quietly(self.evaluation.format_output, value, "latex")
            if isinstance(tex, str) and tex and len(tex) <= _TEX_MAX:
                bundle["text/latex"] = f"$${tex}$$"
        return bundle

    def svg(self, value: Any) -> str | None:
        """Mathics3's own SVG export of a Graphics expression."""
        from mathics.core.atoms import String
        from mathics.core.expression import Expression
        from mathics.core.symbols import Symbol

        svg = Expression(Symbol("System`ExportString"), value, String("SVG")).evaluate(
            self.evaluation
        )
        if isinstance(svg, String):
            text = svg.value.strip()
            if text.startswith(("<svg", "<?xml")):
                return text
        return None

    def quietly(self, render: Any, *args: Any) -> Any:
        """Run an optional rendering: its messages and failures must not reach the user."""
        self.evaluation.quiet_all = True
        try:
            return render(*args)
        except Exception:
            traceback.print_exc()
            return None
        finally:
            self.evaluation.quiet_all = False
            self.reset_evaluation()

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
        self.channel.send({"ev": "input", "id": self._input_id, "kind": kind, "prompt": text})
        while (answer := self.channel.recv()) is not None:
            if answer.get("op") == "input" and answer.get("id") == self._input_id:
                if answer.get("text") is None:
                    raise AbortInterrupt
                return str(answer["text"])
            print(f"mathics_worker: ignored {answer.get('op')!r} during Input", file=sys.stderr)
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


def wants_tex(value: Any) -> bool:
    """Whether TeX shows more than the text: the result has math in it.

    Math is a compound expression other than List, or a Rational/Complex number, anywhere.
    Strings, integers, reals, symbols and lists of those are text only, and so is anything
    containing a picture or wrapped in a form whose text is the point (FullForm, TeXForm, ...).
    """
    from mathics.core.atoms import Complex, Rational
    from mathics.core.symbols import Atom

    math = False
    stack = [value]
    while stack:
        expr = stack.pop()
        if isinstance(expr, Atom):
            math = math or isinstance(expr, (Rational, Complex))
            continue
        head = expr.get_head_name()
        if head in _PICTURES or head in _TEXT_FORMS:
            return False
        math = math or head != "System`List"
        stack.append(expr.get_head())
        stack.extend(expr.elements)
    return math


class History:
    """In[n] and Out[n], the last $HistoryLength lines of them, in dicts."""

    def __init__(self) -> None:
        self.inputs: dict[int, Any] = {}
        self.outputs: dict[int, Any] = {}

    def add_input(self, line: int, expr: Any, keep: int) -> None:
        self.inputs[line] = expr
        self._trim(self.inputs, line - keep)

    def add_output(self, line: int, value: Any, keep: int) -> None:
        self.outputs[line] = value
        self._trim(self.outputs, line - keep)

    @staticmethod
    def _trim(lines: dict[int, Any], oldest_gone: int) -> None:
        for line in [line for line in lines if line <= oldest_gone]:
            del lines[line]


class ValueTooDeep(ValueError):
    """A value nested deeper than the link carries."""


def tagged(value: Any) -> Any:
    """A Mathics3 expression as the JSON tree of a ``value`` event (see the protocol above)."""
    from mathics.core.atoms import (
        ByteArray,
        Complex,
        Integer,
        MachineReal,
        PrecisionReal,
        Rational,
        String,
    )
    from mathics.core.list import ListExpression
    from mathics.core.symbols import Atom, Symbol

    def convert(expr: Any, depth: int) -> Any:
        if depth > _VALUE_MAX_DEPTH:
            raise ValueTooDeep()
        if isinstance(expr, String):
            return expr.value
        if isinstance(expr, Integer):
            return _json_int(expr.value)
        if isinstance(expr, MachineReal):
            return expr.value
        if isinstance(expr, PrecisionReal):
            return {"decimal": str(expr.value)}
        if isinstance(expr, Symbol):
            name = expr.get_name()
            if name in _CONSTANTS:
                return _CONSTANTS[name]
            return {"symbol": name.removeprefix("System`")}
        if isinstance(expr, Complex):
            if isinstance(expr.real, MachineReal) and isinstance(expr.imag, MachineReal):
                return {"complex": [expr.real.value, expr.imag.value]}
            parts = [convert(expr.real, depth + 1), convert(expr.imag, depth + 1)]
            return {"head": {"symbol": "Complex"}, "args": parts}
        if isinstance(expr, Rational):
            ratio = expr.value
            return {"head": {"symbol": "Rational"},
                    "args": [_json_int(int(ratio.p)), _json_int(int(ratio.q))]}
        if isinstance(expr, ByteArray):
            return {"bytes": base64.b64encode(bytes(expr.value)).decode("ascii")}
        if isinstance(expr, Atom):  # no Python counterpart: its head and its text
            return {"head": convert(expr.get_head(), depth + 1), "args": [str(expr)]}
        if isinstance(expr, ListExpression):
            array = _machine_array(expr)
            if array is not None:
                return array
            return [convert(element, depth + 1) for element in expr.elements]
        elements = expr.elements
        if expr.get_head_name() == "System`Association" and all(
            rule.get_head_name() in _RULES and len(rule.elements) == 2 for rule in elements
        ):
            return {"assoc": [
                [convert(rule.elements[0], depth + 1), convert(rule.elements[1], depth + 1),
                 rule.get_head_name() == "System`RuleDelayed"]
                for rule in elements
            ]}
        return {"head": convert(expr.get_head(), depth + 1),
                "args": [convert(element, depth + 1) for element in elements]}

    return convert(value, 0)


def _json_int(n: int) -> Any:
    return n if -_JSON_INT <= n < _JSON_INT else {"int": hex(n)}


def _machine_array(expr: Any) -> dict[str, Any] | None:
    """A rectangular List of machine reals (or of machine complex numbers) as a packed array,
    which is what ``N[...]`` gives; None for any other List."""
    from mathics.core.atoms import Complex, MachineReal
    from mathics.core.list import ListExpression

    dims: list[int] = []
    probe = expr
    while isinstance(probe, ListExpression):
        if not probe.elements:
            return None
        dims.append(len(probe.elements))
        probe = probe.elements[0]
    level = [expr]
    for size in dims:
        if any(not isinstance(row, ListExpression) or len(row.elements) != size
               for row in level):
            return None
        level = [element for row in level for element in row.elements]
    if all(isinstance(x, MachineReal) for x in level):
        kind, values = "Real64", [x.value for x in level]
    elif all(
        isinstance(x, Complex)
        and isinstance(x.real, MachineReal)
        and isinstance(x.imag, MachineReal)
        for x in level
    ):
        kind, values = "ComplexReal64", [v for x in level for v in (x.real.value, x.imag.value)]
    else:
        return None
    data = struct.pack(f"<{len(values)}d", *values)
    return {"array": kind, "dims": dims, "data": base64.b64encode(data).decode("ascii")}


def _pipe_output(channel: Channel) -> Any:
    """An Output that forwards each Print and message to the agent as it happens."""
    from mathics.core.evaluation import Output

    class PipeOutput(Output):
        def out(self, out: Any) -> None:
            if out.is_message:
                channel.send(
                    {"ev": "message", "symbol": out.symbol, "tag": out.tag, "text": out.text}
                )
            else:
                channel.send({"ev": "print", "text": str(out.text)})

    return PipeOutput()


def _frontend_input_builtins(worker: Worker) -> list[Any]:
    """Input[] and InputString[], which Mathics3 10 lacks, answered by the front end."""
    from mathics.core.atoms import String
    from mathics.core.builtin import Builtin

    class Input(Builtin):
        """
        <dl>
          <dt>'Input'[]
          <dd>asks the front end for an expression, and evaluates it.
          <dt>'Input'[$prompt$]
          <dd>shows $prompt$ when asking.
        </dl>
        """

        context = "System`"
        messages: dict[str, str] = {}
        summary_text = "read an expression from the front end and evaluate it"

        def eval(self, evaluation: Any) -> Any:
            "Input[]"
            return worker.read_expression(None)

        def eval_prompt(self, prompt: Any, evaluation: Any) -> Any:
            "Input[prompt_]"
            return worker.read_expression(prompt)

    class InputString(Builtin):
        """
        <dl>
          <dt>'InputString'[]
          <dd>asks the front end for a line of text, and returns it as a string.
          <dt>'InputString'[$prompt$]
          <dd>shows $prompt$ when asking.
        </dl>
        """

        context = "System`"
        messages: dict[str, str] = {}
        summary_text = "read a string from the front end"

        def eval(self, evaluation: Any) -> Any:
            "InputString[]"
            return String(worker.ask("InputStringPacket", None))

        def eval_prompt(self, prompt: Any, evaluation: Any) -> Any:
            "InputString[prompt_]"
            return String(worker.ask("InputStringPacket", prompt))

    return [Input(expression=False), InputString(expression=False)]


def _history_builtins(history: History) -> list[Any]:
    """In and Out answered from ``history``, with the rules of Mathics3's own In and Out."""
    from mathics.core.attributes import A_LISTABLE, A_PROTECTED
    from mathics.core.builtin import Builtin

    class In(Builtin):
        """
        <dl>
          <dt>'In'[$k$]
          <dd>gives the $k$-th line of input.
        </dl>
        """

        attributes = A_LISTABLE | A_PROTECTED
        context = "System`"
        rules = {"In[k_Integer?Negative]": "In[$Line + k]"}
        summary_text = "Kth input"

        def eval(self, k: Any, evaluation: Any) -> Any:
            "In[k_Integer]"
            return history.inputs.get(k.value)

    class Out(Builtin):
        """
        <dl>
          <dt>'%k' or 'Out'[$k$]
          <dd>gives the result of the $k$-th input line.
          <dt>'%'
          <dd>gives the last result.
          <dt>'%%'
          <dd>gives the result before the previous input line.
        </dl>
        """

        attributes = A_LISTABLE | A_PROTECTED
        context = "System`"
        rules = {
            "Out[k_Integer?Negative]": "Out[$Line + k]",
            "Out[]": "Out[$Line - 1]",
            "MakeBoxes[Out[k_Integer?((-10 <= # < 0)&)],"
            "    f:StandardForm|TraditionalForm]": r'StringJoin[ConstantArray["%%", -k]]',
            "MakeBoxes[Out[k_Integer?Positive],"
            "    f:StandardForm|TraditionalForm]": r'"%%" <> ToString[k]',
        }
        summary_text = "result of the Kth input line"

        def eval(self, k: Any, evaluation: Any) -> Any:
            "Out[k_Integer]"
            return history.outputs.get(k.value)

    return [In(expression=False), Out(expression=False)]


def _exit_with_parent(parent: int) -> None:
    """Watchdog thread: end when the agent is gone (close() never came), not compute forever."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(3)


def _import_failure(exc: ImportError) -> dict[str, Any]:
    missing = isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "mathics"
    return {"ev": "fatal", "missing": missing, "error": f"{type(exc).__name__}: {exc}",
            "externally_managed": _externally_managed()}


def _externally_managed() -> bool:
    """Whether pip refuses to install into this Python (PEP 668: a distribution's Python,
    Debian 12, Ubuntu 24.04), so that the start error advises a virtual environment instead."""
    import sysconfig

    return sys.prefix == sys.base_prefix and os.path.isfile(
        os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))


def main() -> int:
    """Start Mathics3, say ready (or why not), and serve the agent."""
    channel = Channel.claim_stdio()
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)  # also for the watchdog thread
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        worker = Worker(channel)
    except ImportError as exc:
        traceback.print_exc()
        channel.send(_import_failure(exc))
        return 2
    channel.send(
        {"ev": "ready", "version": worker.version, "python": sys.executable, "pid": os.getpid()}
    )
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
