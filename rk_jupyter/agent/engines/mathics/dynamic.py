"""What a notebook front end does with dynamic output, for the Mathics3 engine, which has none:
Manipulate, Monitor, PrintTemporary and ProgressIndicator.

Mathics3 10 has no Manipulate (its own is commented out), no Monitor, PrintTemporary or
ProgressIndicator.  Here they behave as in a Wolfram notebook, through the packets of
``rk_jupyter.link.packets``:

- ``Manipulate[expr, {u, min, max}, ...]`` stays unevaluated (HoldAll) like any other result;
  when it is a cell's result, the worker asks ``Dynamic.manipulate`` for its bundle: the
  controls' specification (``MANIPULATE_MIME``) and the view at the initial values, with the
  held expression kept here under an id.  ``RKJupyter`ManipulateView[id, values]`` (the
  front end's EvaluatePacket on each control change) evaluates ``expr`` with the values by
  Manipulate's own scoping (``With``) and comes back as ``RKJupyter`Rendered[value]``, which
  the worker answers with the value's MIME bundle.
- ``PrintTemporary[expr]`` shows ``expr`` as a temporary display (``RKDisplay``) and returns
  Null; the front end removes it when the cell ends.
- ``Monitor[expr, mon]`` shows ``mon`` at once, and again at most ``REFRESH`` times a second
  while ``expr`` evaluates (Mathics3 evaluates one thing at a time, so ``mon`` is evaluated
  between steps of ``expr``: the hook is the evaluation's ``inc_recursion_depth``, which every
  expression evaluation calls), then removes it and returns ``expr``'s value.
- ``ProgressIndicator[x]`` and ``ProgressIndicator[x, {a, b}]`` render as a progress bar
  (HTML ``<progress>``, and a bar of text).
"""

from __future__ import annotations

import html
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from ....link.packets import MANIPULATE_MIME

#: How often a Monitor's display is refreshed at most (a few times a second, as a notebook).
REFRESH = 0.25
#: How many evaluation steps a Monitor's refresh waits at most for its expression to have a
#: value (``Dynamic._refresh``).
RETRY_STEPS = 1000
#: How many Manipulates an engine keeps (the oldest are forgotten: their controls then say so).
KEEP = 200
#: The width of a ProgressIndicator's bar of text.
BAR = 20

RENDERED = "RKJupyter`Rendered"


class Host(Protocol):
    """The worker, as dynamic output needs it."""

    evaluation: Any  # the Mathics3 evaluation of the session

    def show(self, display_id: str, bundle: dict[str, str] | None) -> None:
        """Send a temporary display (None: remove it)."""

    def guarded(self, evaluate: Callable[[], Any]) -> Any:
        """``evaluate()`` as the main loop runs it (None when aborted)."""

    def render(self, value: Any, inside: bool) -> dict[str, str]:
        """The MIME bundle of a value (``inside``: in the middle of an evaluation)."""


class ControlError(ValueError):
    """A control specification Manipulate does not understand."""


class Dynamic:
    """The Manipulates of one engine, and the Monitors running now."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.manipulates: OrderedDict[str, tuple[list[Any], list[Any], Any]] = OrderedDict()
        self.monitors: list[tuple[str, Any]] = []
        self._next_refresh = 0.0
        self._refreshing = False
        self._retries = 0
        self._inc: Callable[[], None] | None = None

    # -- Manipulate ---------------------------------------------------------------------------

    def manipulate(self, value: Any) -> dict[str, str] | None:
        """The bundle of a Manipulate result: its controls and first view; None (shown as
        text) when a control cannot be read, after a ``Manipulate::vsform`` message."""
        expr, *specs = value.elements
        continuous = True
        controls: list[dict[str, Any]] = []
        symbols: list[Any] = []
        choices: list[Any] = []
        evaluation = self.host.evaluation
        for spec in specs:
            if spec.get_head_name() in ("System`Rule", "System`RuleDelayed"):
                # Options: ContinuousAction is honoured; others (SaveDefinitions,
                # ControlPlacement, ...) are a notebook's business, ignored as harmless.
                if spec.elements[0].get_name().endswith("`ContinuousAction"):
                    continuous = spec.elements[1].get_name() != "System`False"
                continue
            try:
                symbol, control, options = self._control(spec, evaluation)
            except ControlError:
                evaluation.message("Manipulate", "vsform", spec)
                return None
            symbols.append(symbol)
            controls.append(control)
            choices.append(options)
        manipulate_id = f"m-{uuid.uuid4().hex[:12]}"
        self.manipulates[manipulate_id] = (symbols, choices, expr)
        while len(self.manipulates) > KEEP:
            self.manipulates.popitem(last=False)
        view = self.view(manipulate_id, [control["value"] for control in controls])
        spec_json = {"id": manipulate_id, "controls": controls, "continuous": continuous,
                     "view": view}
        return {**view, "text/plain": view.get("text/plain", ""),
                MANIPULATE_MIME: json.dumps(spec_json)}

    def _control(self, spec: Any, evaluation: Any) -> tuple[Any, dict[str, Any], Any]:
        """(symbol, control's specification, its choices as expressions or None)."""
        from mathics.core.symbols import Symbol

        if spec.get_head_name() != "System`List" or len(spec.elements) < 2:
            raise ControlError
        first, *rest = spec.elements
        init = label = None
        if first.get_head_name() == "System`List":  # {u, init} or {u, init, "label"}
            if not 2 <= len(first.elements) <= 3:
                raise ControlError
            first, init, *more = first.elements
            if more:
                label = more[0].get_string_value() or str(
                    evaluation.format_output(more[0], "text"))
        if not isinstance(first, Symbol) or first.get_name().startswith("System`"):
            raise ControlError
        name = first.get_name().rsplit("`", 1)[-1]
        control: dict[str, Any] = {"name": name, "label": label or name}
        if len(rest) == 1 and rest[0].get_head_name() == "System`List":
            options = [item.evaluate(evaluation) for item in rest[0].elements]
            if not options:
                raise ControlError
            names = [item.get_name() for item in options]
            if sorted(names) == ["System`False", "System`True"]:
                control.update(kind="checkbox", value=(init if init is not None else
                                                       options[0]).get_name() == "System`True")
                return first, control, None
            labels = [str(evaluation.format_output(item, "text")) for item in options]
            index = 1
            if init is not None:
                init = init.evaluate(evaluation)
                matches = [i for i, item in enumerate(options, 1) if item.sameQ(init)]
                index = matches[0] if matches else 1
            control.update(kind="choice", labels=labels, value=index)
            return first, control, options
        if not 2 <= len(rest) <= 3:
            raise ControlError
        bounds = [self._number(item, evaluation) for item in rest]
        low, high, step = (*bounds, None) if len(bounds) == 2 else bounds
        if step is not None and step <= 0 or high < low:
            raise ControlError
        start = low if init is None else self._number(init, evaluation)
        integer = all(isinstance(x, int) for x in (low, high, step, start))
        control.update(kind="slider", min=low, max=high, step=step, value=start,
                       integer=integer)
        return first, control, None

    @staticmethod
    def _number(expr: Any, evaluation: Any) -> int | float:
        """An integer as it is, any other real as a float (N), or ControlError."""
        from mathics.core.atoms import Integer, Real
        from mathics.core.expression import Expression
        from mathics.core.symbols import Symbol

        value = expr.evaluate(evaluation)
        if isinstance(value, Integer):
            return int(value.value)
        value = Expression(Symbol("System`N"), value).evaluate(evaluation)
        if isinstance(value, Real):
            return float(value.value)
        raise ControlError

    def view(self, manipulate_id: str, values: list[Any]) -> dict[str, str]:
        """The bundle of the Manipulate's expression at ``values`` (evaluated as a main-loop
        step, at the top of an evaluation); an aborted view is text saying so."""
        expr = self.view_expression(manipulate_id, values)
        value = self.host.guarded(lambda: expr.evaluate(self.host.evaluation))
        if value is None:
            return {"text/plain": "$Aborted"}
        return self.host.render(value, False)

    def view_expression(self, manipulate_id: str, values: list[Any]) -> Any:
        """``With[{u = value, ...}, expr]`` for a kept Manipulate (choices by index), or a
        message's expression when it is unknown (the engine was restarted since)."""
        from mathics.core.atoms import Integer, Real, String
        from mathics.core.expression import Expression
        from mathics.core.list import ListExpression
        from mathics.core.symbols import Symbol, SymbolFalse, SymbolTrue

        kept = self.manipulates.get(manipulate_id)
        if kept is None or len(values) != len(kept[0]):
            return Expression(Symbol("System`Message"), Expression(
                Symbol("System`MessageName"), Symbol("System`Manipulate"), String("gone")))
        symbols, choices, expr = kept
        self.manipulates.move_to_end(manipulate_id)
        assignments = []
        for symbol, options, value in zip(symbols, choices, values, strict=True):
            if options is not None:
                index = int(value) if isinstance(value, (int, float)) else 1
                item = options[min(max(index, 1), len(options)) - 1]
            elif isinstance(value, bool):
                item = SymbolTrue if value else SymbolFalse
            elif isinstance(value, int):
                item = Integer(value)
            else:
                item = Real(float(value))
            assignments.append(Expression(Symbol("System`Set"), symbol, item))
        return Expression(Symbol("System`With"), ListExpression(*assignments), expr)

    # -- temporary output ---------------------------------------------------------------------

    def print_temporary(self, value: Any) -> None:
        """PrintTemporary: shown now, removed by the front end when the cell ends."""
        self.host.show(f"t-{uuid.uuid4().hex[:12]}", self.host.render(value, True))

    def monitor(self, expr: Any, mon: Any) -> Any:
        """Monitor[expr, mon]: ``expr``'s value, with ``mon`` shown while it evaluates."""
        evaluation = self.host.evaluation
        display_id = f"d-{uuid.uuid4().hex[:12]}"
        self.monitors.append((display_id, mon))
        outermost = self._inc is None
        if outermost:
            self._inc = evaluation.inc_recursion_depth
            evaluation.inc_recursion_depth = self._step
        try:
            self._refresh(only=display_id)
            return expr.evaluate(evaluation)
        finally:
            self.monitors.remove((display_id, mon))
            if outermost:
                del evaluation.inc_recursion_depth  # the class's own method again
                self._inc = None
            self.host.show(display_id, None)

    def _step(self) -> None:
        """The evaluation's inc_recursion_depth while a Monitor runs."""
        assert self._inc is not None
        self._inc()
        if not self._refreshing and time.monotonic() >= self._next_refresh:
            self._refresh()

    def _refresh(self, only: str | None = None) -> None:
        """Show each running Monitor's expression as it is now.

        An expression that evaluates to itself (``i`` between two steps of ``Do[…, {i, n}]``,
        which Mathics3 binds only while the body evaluates, not for the whole loop as a
        Block would) is tried again at the next steps, up to ``RETRY_STEPS``, before the
        next period: so that the monitor shows the loop's variable as a notebook does."""
        self._refreshing = True
        late = False
        try:
            for display_id, mon in list(self.monitors):
                if only is not None and display_id != only:
                    continue
                value = mon.evaluate(self.host.evaluation)
                if only is None and value.sameQ(mon) and self._retries < RETRY_STEPS:
                    late = True
                    continue
                self.host.show(display_id, self.host.render(value, True))
        finally:
            self._refreshing = False
            if late:
                self._retries += 1
            else:
                self._retries = 0
                self._next_refresh = time.monotonic() + REFRESH


def progress_bundle(value: Any) -> dict[str, str] | None:
    """ProgressIndicator[x] or ProgressIndicator[x, {a, b}] as a progress bar; None when the
    range is not two numbers (then it shows as the expression it is)."""
    from mathics.core.atoms import Number

    elements = value.elements
    low, high = 0.0, 1.0
    if len(elements) == 2:
        bounds = elements[1]
        if bounds.get_head_name() != "System`List" or len(bounds.elements) != 2 or not all(
                isinstance(b, Number) for b in bounds.elements):
            return None
        low, high = (float(b.round_to_float()) for b in bounds.elements)
    elif len(elements) != 1:
        return None
    x = elements[0]
    if x.get_name() == "System`Indeterminate":
        return {"text/plain": "[" + "~" * BAR + "]",
                "text/html": '<progress class="rk-progress"></progress>'}
    if high <= low:
        return None
    # A value that is no number yet (the loop's variable before the loop) is an empty bar.
    at = float(x.round_to_float()) if isinstance(x, Number) else low
    fraction = min(max((at - low) / (high - low), 0.0), 1.0)
    filled = round(fraction * BAR)
    return {"text/plain": f"[{'#' * filled}{'.' * (BAR - filled)}] {fraction:.0%}",
            "text/html": (f'<progress class="rk-progress" value="{fraction:.4f}" max="1">'
                          f"{html.escape(f'{fraction:.0%}')}</progress>")}


def dynamic_builtins(dynamic: Dynamic) -> list[Any]:
    """Manipulate, Monitor, PrintTemporary, ProgressIndicator and the front end's view."""
    from mathics.core.attributes import A_HOLD_ALL, A_HOLD_ALL_COMPLETE, A_PROTECTED
    from mathics.core.builtin import Builtin
    from mathics.core.expression import Expression
    from mathics.core.symbols import Symbol, SymbolNull

    class Manipulate(Builtin):
        """
        <dl>
          <dt>'Manipulate'[$expr$, {$u$, $min$, $max$}, ...]
          <dd>shows $expr$ with a control for each variable; each change evaluates $expr$
          again with the controls' values.
        </dl>
        """

        attributes = A_HOLD_ALL | A_PROTECTED
        context = "System`"
        messages = {
            "vsform": "Manipulate argument `1` does not have the correct form for a "
                      "variable specification.",
            "gone": "This Manipulate's engine has ended or forgotten it; evaluate its cell "
                    "again.",
        }
        summary_text = "an expression with live controls"

    class Monitor(Builtin):
        """
        <dl>
          <dt>'Monitor'[$expr$, $mon$]
          <dd>evaluates $expr$, showing $mon$ as it changes while it does.
        </dl>
        """

        attributes = A_HOLD_ALL | A_PROTECTED
        context = "System`"
        messages: dict[str, str] = {}
        summary_text = "show an expression while another evaluates"

        def eval(self, expr: Any, mon: Any, evaluation: Any) -> Any:
            "Monitor[expr_, mon_]"
            return dynamic.monitor(expr, mon)

    class PrintTemporary(Builtin):
        """
        <dl>
          <dt>'PrintTemporary'[$expr$]
          <dd>shows $expr$ until the cell's evaluation ends.
        </dl>
        """

        attributes = A_PROTECTED
        context = "System`"
        messages: dict[str, str] = {}
        summary_text = "print until the evaluation ends"

        def eval(self, exprs: Any, evaluation: Any) -> Any:
            "PrintTemporary[exprs___]"
            items = exprs.get_sequence()
            shown = items[0] if len(items) == 1 else Expression(
                Symbol("System`Row"), Expression(Symbol("System`List"), *items))
            dynamic.print_temporary(shown)
            return SymbolNull

    class ProgressIndicator(Builtin):
        """
        <dl>
          <dt>'ProgressIndicator'[$x$]
          <dd>shows a progress bar at $x$ between 0 and 1.
          <dt>'ProgressIndicator'[$x$, {$a$, $b$}]
          <dd>between $a$ and $b$.
        </dl>
        """

        attributes = A_PROTECTED
        context = "System`"
        messages: dict[str, str] = {}
        summary_text = "a progress bar"

    class ManipulateView(Builtin):  # link.packets.MANIPULATE_VIEW
        """
        <dl>
          <dt>'ManipulateView'[$id$, $values$]
          <dd>the view of a Manipulate at the controls' values (the front end's request).
        </dl>
        """

        context = "RKJupyter`"
        messages: dict[str, str] = {}
        summary_text = "a Manipulate's view"

        def eval(self, key: Any, values: Any, evaluation: Any) -> Any:
            "%(name)s[key_String, values_List]"
            python_values = [_python(v) for v in values.elements]
            expr = dynamic.view_expression(key.value, python_values)
            return Expression(Symbol(RENDERED), expr.evaluate(evaluation))

    class Rendered(Builtin):
        """
        <dl>
          <dt>'Rendered'[$value$]
          <dd>answered by the MIME bundle of $value$.
        </dl>
        """

        attributes = A_HOLD_ALL_COMPLETE | A_PROTECTED
        context = "RKJupyter`"
        messages: dict[str, str] = {}
        summary_text = "a value to be rendered"

    return [Manipulate(expression=False), Monitor(expression=False),
            PrintTemporary(expression=False), ProgressIndicator(expression=False),
            ManipulateView(expression=False), Rendered(expression=False)]


def _python(value: Any) -> Any:
    """A control value from the front end (a number or a boolean) as Python."""
    from mathics.core.atoms import Integer, Real

    if isinstance(value, Integer):
        return int(value.value)
    if isinstance(value, Real):
        return float(value.value)
    return value.get_name() == "System`True"
