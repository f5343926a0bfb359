"""The MIME bundles of the worker's results: OutputForm text, SVG for Graphics, TeX for math.

Results with math in them (non-List compound expressions, rationals, complex numbers) add
"$$...$$" text/latex, while strings, numbers, symbols and lists of those stay text only
(``wants_tex``); Graphics add image/svg+xml (the SVG of Mathics3's export, made without the
export's detour: ``Renderer.svg``), Graphics3D a picture of their own (``graphics3d``: SVG, and
HTML that turns with the mouse).  Results whose text would pass the output limit are shown
short (``shorten``).  The optional renderings run quietly: their messages and failures never
reach the user, who still gets the text.
"""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ....link.launcher import OUTPUT_LIMIT
from . import graphics3d
from .dynamic import progress_bundle
from .shorten import SHORT_SIZE, estimate, shorten

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

    def __init__(self, evaluation: Any, reset: Callable[[], None],
                 limit: int = OUTPUT_LIMIT) -> None:
        self.evaluation = evaluation
        self.reset_evaluation = reset
        self.limit = limit

    def bundle(self, value: Any, line: int | None = None) -> dict[str, str]:
        """The MIME bundle of a result: OutputForm text, plus SVG for Graphics or TeX for
        math; a result whose text would pass the limit gets a short form (``shorten``) and
        a line that says where the rest is (``Out[line]``)."""
        from mathics.core.atoms import Integer

        # An Integer's OutputForm is its digits (formatting would take 40 % of a cell like
        # "1"); under 3 bits a digit, its digits are surely within the limit.  Python refuses
        # digits past $MaxLengthIntStringConversion (Mathics3 sets its limit from it): then
        # Mathics3's own formatting, which elides them, as Mathics3 itself shows the number.
        if isinstance(value, Integer) and value.value.bit_length() < 3 * self.limit:
            try:
                return {"text/plain": str(value.value)}
            except ValueError:
                pass
        size = estimate(value, self.limit)
        if size > self.limit:
            return {"text/plain": self.short(value, line)}
        text = self.evaluation.format_output(value, "text")
        bundle = {"text/plain": text if isinstance(text, str) else str(value)}
        head = value.get_head_name()
        if head == "System`ProgressIndicator":
            bundle.update(progress_bundle(value) or {})
        elif head == "System`Graphics":
            svg = self.quietly(self.svg, value)
            if svg:
                bundle["image/svg+xml"] = svg
        elif head == "System`Graphics3D":
            bundle.update(self.quietly(graphics3d.render, value,
                                       f"rk3d-{uuid.uuid4().hex[:12]}") or {})
        elif wants_tex(value):
            tex = self.quietly(self.evaluation.format_output, value, "latex")
            if isinstance(tex, str) and tex and len(tex) <= _TEX_MAX:
                bundle["text/latex"] = f"$${tex}$$"
        return bundle

    @contextmanager
    def inside(self) -> Iterator[None]:
        """Render in the middle of an evaluation (Monitor, PrintTemporary): the evaluation's
        state is then put back as it was, where a rendering at the top resets it."""
        evaluation = self.evaluation
        saved = (evaluation.stopped, evaluation.recursion_depth, evaluation.quiet_all,
                 evaluation.out)

        def restore() -> None:
            (evaluation.stopped, evaluation.recursion_depth, evaluation.quiet_all,
             evaluation.out) = saved

        reset, self.reset_evaluation = self.reset_evaluation, restore
        try:
            yield
        finally:
            self.reset_evaluation = reset
            restore()

    def short(self, value: Any, line: int | None) -> str:
        """A short form of a result too large to show, with a one-line hint."""
        text, elided = shorten(value, SHORT_SIZE,
                               lambda e: str(self.evaluation.format_output(e, "text")))
        out = f"Out[{line}]" if line is not None else "Out[n]"
        what = f"{elided} elements" if elided else "what <<n>> marks"
        return (f"{text}\n(a short form: {what} left out, the whole text being over "
                f"output_limit = {self.limit} characters; {out} holds all of it: Take[{out}, "
                "100] or Part show more, and output_limit in the kernelspec raises the limit)")

    def svg(self, value: Any) -> str | None:
        """Mathics3's own SVG of a Graphics expression: the text its ``ExportString[g, "SVG"]``
        gives, made the way that export makes it but without the detour.

        The export (``SVGExport`` in Mathics3's autoload/formats/SVG/Export.m) formats
        ``MathMLForm[g]``, whose GraphicsBox becomes ``box.to_format("svg")`` inside a base64
        data URI, then finds that URI with StringPosition, decodes it and writes it to a file
        that ExportString reads back: ~140 ms for a Plot, where the boxes and their SVG take
        ~8 ms.  Here the same boxes (``format_element`` in TraditionalForm, as MathMLForm
        does, so that user Format/MakeBoxes rules apply alike) go straight to the same SVG
        renderer with the same options.  Other boxes (a rule that made something else of the
        Graphics) take the export itself, whatever it makes of them.
        """
        from mathics.builtin.box.graphics import GraphicsBox
        from mathics.core.systemsymbols import SymbolTraditionalForm
        from mathics.format.box import format_element

        boxes = format_element(value, self.evaluation, SymbolTraditionalForm)
        # Only a plain GraphicsBox: MathMLForm draws its subclass Graphics3DBox otherwise.  The
        # options are those MathMLForm's renderer passes on (format/render/mathml.py).
        if type(boxes) is GraphicsBox:
            return _svg_text(boxes.to_format("svg", evaluation=self.evaluation,
                                             _indent_level=1))
        return self.exported_svg(value)

    def exported_svg(self, value: Any) -> str | None:
        """``ExportString[value, "SVG"]``, Mathics3's SVG export itself (slow: see ``svg``)."""
        from mathics.core.atoms import String
        from mathics.core.expression import Expression
        from mathics.core.symbols import Symbol

        svg = Expression(Symbol("System`ExportString"), value, String("SVG")).evaluate(
            self.evaluation
        )
        return _svg_text(svg.value) if isinstance(svg, String) else None

    def quietly(self, render: Any, *args: Any) -> Any:
        """Run an optional rendering: its messages and failures must not reach the user, and
        it leaves no trace in the session: Mathics3's SVG export (``exported_svg``) evaluates
        Module, whose counter is put back (else later Modules' symbols are numbered unlike
        Mathics3's)."""
        definitions = self.evaluation.definitions
        module_number = definitions.get_ownvalue("System`$ModuleNumber")
        self.evaluation.quiet_all = True
        try:
            return render(*args)
        except Exception:
            traceback.print_exc()
            return None
        finally:
            after = definitions.get_ownvalue("System`$ModuleNumber")
            if after.get_int_value() != module_number.get_int_value():
                definitions.set_ownvalue("System`$ModuleNumber", module_number)
            self.evaluation.quiet_all = False
            self.reset_evaluation()


def _svg_text(text: str) -> str | None:
    """The SVG document in a rendering's text (Mathics3's has blank lines around it), or None
    when the text is no SVG."""
    text = text.strip()
    return text if text.startswith(("<svg", "<?xml")) else None


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
