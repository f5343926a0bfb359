"""Fidelity: Mathics3's own documentation examples give on rk-local what they give in Mathics3.

About a thousand examples of Mathics3's documentation (its doc test collection, whole pages in
document order, filtered for what differs between two runs of Mathics3 itself: see
``benchmarks/doc_examples.py``, which the benchmark ``bench_docs.py`` shares) are evaluated
by Mathics3 itself in a subprocess and, at the same time, as cells of the real rk-local kernel
through jupyter_client.  Each must give the same result text, messages and Print output in
the same order, except the differences README.md lists under "Differences from Mathics3 itself
(intended)".

``PENDING_FIXES`` lists the differences that are bugs of the product, each with a minimal
reproduction evaluated after the documentation's cells and checked to give exactly the known
difference: fixing the product makes its entry fail, and the entry is then removed.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("mathics.doc.structure",
                    reason="Mathics3's documentation (make install always installs it)")

_HARNESS = Path(__file__).resolve().parent.parent / "benchmarks" / "doc_examples.py"
_spec = importlib.util.spec_from_file_location("doc_examples", _HARNESS)
assert _spec is not None and _spec.loader is not None
docs = importlib.util.module_from_spec(_spec)
sys.modules["doc_examples"] = docs  # dataclasses look their module up there
_spec.loader.exec_module(docs)

#: Seconds Mathics3 gets to finish after the kernel has (it runs at the same time).
REFERENCE_WAIT = 120.0


@dataclass(frozen=True)
class Pending:
    """A known bug of the product: a minimal reproduction (cells evaluated after the
    documentation's, from a reset; the last one differs), why, and a check that the difference
    is exactly this one (any other difference fails the test, and so does none)."""

    cells: tuple[str, ...]
    reason: str
    check: Callable[[docs.Difference], bool]


#: Known bugs of the product, to be emptied by fixing it (each reason says where).
PENDING_FIXES: list[Pending] = []

#: Reproductions of bugs this test found and the product fixed, evaluated after the
#: documentation's cells (each from a reset) and compared like them.
REGRESSIONS: list[tuple[str, ...]] = [
    # Mathics3's SVG export evaluates Module: rendering a plot advanced $ModuleNumber, so
    # later Modules' symbols were numbered higher than in Mathics3 (Renderer.quietly).
    ("Plot[Sin[x], {x, 0, 1}]", "Module[{t}, t]"),
    # A Print whose text ends in a newline lost it (a stream message is one line).
    ('Print["a\\n"]',),
]


def pending_cells() -> list[docs.Example]:
    """The reproductions of PENDING_FIXES (entry PENDING_FIXES[i]) and REGRESSIONS (entry
    REGRESSIONS[i]) as cells, each from a reset."""
    cells = []
    for name, reproductions in (("PENDING_FIXES", [p.cells for p in PENDING_FIXES]),
                                ("REGRESSIONS", REGRESSIONS)):
        for index, codes in enumerate(reproductions):
            entry = f"{name}[{index}]"
            cells += [docs.Example(entry, code) for code in (docs.RESET, *codes)]
    return cells


@pytest.fixture(scope="module")
def examples() -> list[docs.Example]:
    return docs.workload()


def test_the_workload_is_whole_pages_of_the_documentation(examples: list[docs.Example]) -> None:
    """The selection is large, spans the documentation, starts each page with the reset cell
    and holds no example that the filter leaves out."""
    pages = [e.entry for e in examples if e.code == docs.RESET]
    assert 800 <= len(examples) - len(pages) <= 1200, len(examples)
    assert len(pages) >= 150 and len(set(pages)) == len(pages)
    assert len({page.split(" / ")[0] for page in pages}) >= 40  # chapters
    assert examples[0].code == docs.RESET
    assert all(docs.excluded(e.code) is None for e in examples)
    assert any(e.entry.startswith("Language Tutorial") for e in examples)


@pytest.mark.parametrize(("code", "reason"), [
    ("RandomInteger[{1, 6}]", "random"),
    ("DateString[]", "dates, clocks or timings"),
    ("AbsoluteTiming[x]", "dates, clocks or timings"),
    ("$ProcessID", "machine or session"),
    ('Import["ExampleData/lena.tif"]', "files or network"),
    ('60! >> "factorials"', "files or network"),
    ("$PrintForms", "order from a Python set"),
    ("Input[]", "user input"),
    ("Quit[]", "ends the session"),
    ("Contexts[]", "the front end's own functions"),
    ("PrintTrace[]", "dates, clocks or timings"),
    ('Length[Names["System`*"]]', "the front end's own functions"),
    ("InputForm[a + b]", None),
    ('Format[F[x_], MyForm] := "F<<" <> ToString[x] <> ">>"', None),
    ("$MachinePrecision", None),
    ("RunThrough", None),
])
def test_the_filter_names_its_reason(code: str, reason: str | None) -> None:
    assert docs.excluded(code) == reason


def _outcome(**fields: object) -> docs.Outcome:
    return docs.Outcome(**fields)  # type: ignore[arg-type]


def test_the_comparison_reports_what_differs_and_forgives_only_the_intended() -> None:
    """A changed result, a lost message, Print and message swapped, a result where Mathics3
    gave none, a timeout: each is a difference; the README's intended differences are not."""
    example = docs.Example("Page", "code")
    printed = [["print", "p"], ["message", "Power::infy: Infinite expression 1 / 0."]]
    cases = [  # (Mathics3, kernel, differs)
        (_outcome(result="2"), _outcome(result="2"), False),
        (_outcome(result="2"), _outcome(result="3"), True),
        (_outcome(result="1", outs=printed), _outcome(result="1", outs=printed[:1]), True),
        (_outcome(outs=printed), _outcome(outs=printed[::-1]), True),
        (_outcome(), _outcome(result="Null"), True),
        (_outcome(result="1"), _outcome(result="1", timed_out=True), True),
        # a result that is $Aborted without an abort is a result
        (_outcome(result="$Aborted"), _outcome(error=["$Aborted", "aborted"]), True),
        # intended: an aborted cell is an error named $Aborted
        (_outcome(result="$Aborted", aborted=True),
         _outcome(error=["$Aborted", "the evaluation was aborted"]), False),
        # intended: a syntax error is one error, its messages naming the cell
        (_outcome(syntax=True, outs=[["message", "Syntax::sntxi: Incomplete expression; more "
                                                 "input is needed (line 1 of )."]]),
         _outcome(error=["SyntaxError", "Syntax::sntxi: Incomplete expression; more input is "
                                        "needed (line 1 of the cell)."]), False),
        (_outcome(syntax=True, outs=[["message", "Syntax::sntxi: Incomplete (line 1 of )."]]),
         _outcome(error=["SyntaxError", "Syntax::sntxf: other (line 1 of the cell)."]), True),
        # intended: an exception out of Mathics3 is a message
        (_outcome(exception="NotImplementedError: "),
         _outcome(outs=[["message", "Mathics3::err: internal error: NotImplementedError: "]]),
         False),
        (_outcome(exception="NotImplementedError: "), _outcome(), True),
    ]
    for expected, got, differs in cases:
        found = docs.compare([example], [expected], [got])
        assert bool(found) == differs, (expected, got, [d.report() for d in found])


@pytest.mark.timeout(300)
def test_documentation_examples_give_what_mathics3_gives(
        rk_local: str, examples: list[docs.Example]) -> None:
    cells = examples + pending_cells()
    started = time.monotonic()
    reference = docs.Reference(cells)
    try:
        kernel = docs.run_kernel(cells, rk_local)
        kernel_done = time.monotonic()
        expected = reference.outcomes(REFERENCE_WAIT)
    finally:
        reference.kill()
    print(f"\n{len(cells)} cells: Mathics3 {sum(o.seconds for o in expected):.1f} s, "
          f"rk-local {sum(o.seconds for o in kernel):.1f} s (at the same time); "
          f"{kernel_done - started:.1f} s in all")
    # Not vacuous: most examples show something.
    assert sum(bool(o.result or o.outs) for o in expected) > 0.6 * len(examples)

    unexpected, matched = [], set()
    for diff in docs.compare(cells, expected, kernel):
        index = next((i for i, p in enumerate(PENDING_FIXES)
                      if diff.example.entry == f"PENDING_FIXES[{i}]"
                      and diff.example.code == p.cells[-1]), None)
        if index is not None and PENDING_FIXES[index].check(diff):
            matched.add(index)
        else:
            unexpected.append(diff)
    assert not unexpected, (
        f"{len(unexpected)} of {len(cells)} cells differ from Mathics3 itself (neither "
        "intended, see README.md, nor known in PENDING_FIXES):\n"
        + "\n".join(d.report() for d in unexpected))
    fixed = [p.cells[-1] for i, p in enumerate(PENDING_FIXES) if i not in matched]
    assert not fixed, f"PENDING_FIXES no longer differ (fixed? remove them): {fixed}"
