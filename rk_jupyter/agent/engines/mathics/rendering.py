"""The MIME bundles of the worker's results: OutputForm text, SVG for Graphics, TeX for math.

Results with math in them (non-List compound expressions, rationals, complex numbers) add
"$$...$$" text/latex, while strings, numbers, symbols and lists of those stay text only
(``wants_tex``); Graphics add image/svg+xml (Mathics3's SVG export; Graphics3D has no SVG
there and stays "-Graphics3D-").  The optional renderings run quietly: their messages and
failures never reach the user, who still gets the text.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

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


class Renderer:
    """Renders results with one Mathics3 evaluation; ``reset`` makes it usable again after a
    rendering (the worker's ``reset_evaluation``)."""

    def __init__(self, evaluation: Any, reset: Callable[[], None]) -> None:
        self.evaluation = evaluation
        self.reset_evaluation = reset

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
