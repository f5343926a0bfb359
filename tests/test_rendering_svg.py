"""The worker's SVG for Graphics (``Renderer.svg``) against Mathics3's ExportString[g, "SVG"].

``Renderer.svg`` makes the SVG without the export's detour (MathMLForm, base64, a file); these
tests hold it to the export's own text, for the primitives the documentation draws and a Plot,
in a Mathics3 session in this process.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from typing import Any

import pytest

pytest.importorskip("mathics", reason="Mathics3 is not installed")

from rk_jupyter.agent.engines.mathics.rendering import Renderer  # noqa: E402

GRAPHICS = {
    "disk": "Graphics[{Red, Disk[{0, 0}, 1], Blue, Disk[{2, 0}, {1, 1/2}]}]",
    "line": "Graphics[{Thick, Line[{{0, 0}, {1, 1}, {2, 0}}], Dashed, Line[{{0, 1}, {2, 1}}]}]",
    "polygon": "Graphics[{EdgeForm[Black], Yellow, Polygon[{{0, 0}, {1, 0}, {1/2, 1}}]}]",
    "text": 'Graphics[{Text["Hello", {0, 0}], Text["αβ γ", {1, 1}], Circle[]}, '
            "Axes -> True]",
    "plot": "Plot[{Sin[x], Cos[x]}, {x, 0, 2 Pi}]",
    "options": "Graphics[{Point[{{0, 0}, {1, 1}}], Rectangle[{2, 2}]}, "
               "Background -> LightBlue, ImageSize -> 200, Frame -> True]",
    "nested": "Graphics[{Arrow[{{0, 0}, {1, 1}}], Inset[Graphics[{Disk[]}], {0, 0}], "
              "GraphicsComplex[{{0, 0}, {1, 0}, {0, 1}}, Polygon[{1, 2, 3}]]}]",
}
DRAWN = {"circle", "ellipse", "line", "polyline", "polygon", "path", "rect", "text"}


@pytest.fixture(scope="module")
def session() -> Any:
    from mathics.core.load_builtin import import_and_load_builtins
    from mathics.session import MathicsSession

    import_and_load_builtins()
    return MathicsSession(catch_interrupt=True)


@pytest.fixture
def renderer(session: Any) -> Renderer:
    evaluation = session.evaluation

    def reset() -> None:
        evaluation.stopped = False
        evaluation.quiet_all = False

    return Renderer(evaluation, reset)


def drawn(svg: str) -> Counter[str]:
    """The elements an SVG draws, by tag (the document must parse as XML)."""
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return Counter(tag for e in root.iter()
                   if (tag := e.tag.rpartition("}")[2]) in DRAWN)


@pytest.mark.parametrize("name", sorted(GRAPHICS))
def test_svg_is_the_exports(session: Any, renderer: Renderer, name: str) -> None:
    """Same text as ExportString's, so the same picture: it parses and draws something."""
    value = session.evaluate(GRAPHICS[name])
    assert value.get_head_name() == "System`Graphics"
    fast = renderer.quietly(renderer.svg, value)
    exported = renderer.quietly(renderer.exported_svg, value)
    assert fast is not None and exported is not None
    assert drawn(fast) == drawn(exported) and sum(drawn(fast).values()) > 0
    assert fast == exported


def test_no_svg_where_the_export_fails(session: Any, renderer: Renderer) -> None:
    """A Graphics Mathics3 cannot draw (here PointSize[Large] in 10.0.1) gets no SVG either way."""
    value = session.evaluate("Graphics[{PointSize[Large], Point[{{0, 0}, {1, 1}}]}]")
    assert renderer.quietly(renderer.exported_svg, value) is None
    assert renderer.quietly(renderer.svg, value) is None


def test_svg_of_text_keeps_it(session: Any, renderer: Renderer) -> None:
    value = session.evaluate(GRAPHICS["text"])
    texts = [e.text or "" for e in ET.fromstring(renderer.svg(value)).iter()
             if e.tag.endswith("}text")]
    assert "Hello" in "".join(texts) and "αβ γ" in "".join(texts)


def test_svg_follows_a_users_format(session: Any, renderer: Renderer,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Boxes that are no GraphicsBox (a user's Format rule made a string of the Graphics) get
    what the export makes of them: no SVG."""
    session.evaluate("Unprotect[Graphics]; "
                     'Format[Graphics[{Hue[0.123]}], TraditionalForm] := "custom"')
    try:
        value = session.evaluate("Graphics[{Hue[0.123]}]")
        exported: list[Any] = []
        export = renderer.exported_svg
        monkeypatch.setattr(renderer, "exported_svg",
                            lambda v: exported.append(export(v)) or exported[-1])
        assert renderer.quietly(renderer.svg, value) is None and exported == [None]
    finally:
        session.evaluate("Format[Graphics[{Hue[0.123]}], TraditionalForm] =.; "
                         "Protect[Graphics]")
