"""Short forms of very large results, as a Wolfram front end shows them.

Why: formatting is what makes a large result slow — Mathics3 takes ~60 µs an element to write
OutputForm, so ``Range[200000]`` took 12.8 s and sent 1.5 MB of text that no one reads.  The
size of a result's text is estimated first, from its atoms, stopping as soon as it passes the
limit (so the estimate costs at most ~limit/8 steps); only a result over the limit is shortened,
and then only the elements shown are formatted: ``{1, 2, 3, <<199994>>, 199998, 199999,
200000}``, the elided count in ``<<n>>`` as in Mathematica's ``Short``.  The value itself is
untouched: ``Out[n]`` holds all of it.

Runs in the Mathics3 worker (Mathics3's expression classes, read by attribute only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Characters of text a short form aims at (a few lines), whatever the limit.
SHORT_SIZE = 2000
_LOG10_2 = 0.30103
_OTHER_ATOM = 12  # a Real, a Complex, a ByteArray… as text, roughly
#: The smallest budget an element gets: an atom shorter than this is never cut.
_MIN_PART = 40


def _atom_size(atom: Any) -> int:
    value = getattr(atom, "value", None)
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int):  # exact when cheap; a huge int's digits are slow to write out
        if value.bit_length() < 64:
            return len(str(value))
        return int(value.bit_length() * _LOG10_2) + 2
    name = getattr(atom, "get_name", None)
    if callable(name):
        return len(str(name()).rpartition("`")[2])
    return _OTHER_ATOM


def estimate(expr: Any, budget: int) -> int:
    """The length of ``expr``'s OutputForm text, estimated from its atoms; counting stops
    once it passes ``budget`` (then the result is only known to be more)."""
    total = 0
    stack = [expr]
    while stack and total <= budget:
        item = stack.pop()
        elements = getattr(item, "elements", None)
        if elements is None:
            total += _atom_size(item)
        else:
            total += 2 + 2 * max(len(elements) - 1, 0)
            stack.append(item.head)
            stack.extend(elements)
    return total


def shorten(expr: Any, budget: int, fmt: Callable[[Any], str]) -> tuple[str, int]:
    """``expr``'s text within about ``budget`` characters, and how many elements (each
    ``<<n>>`` marks: elements, or the characters of one huge atom, which do not count)
    were left out; ``fmt`` writes an expression's text."""
    if estimate(expr, budget) <= budget:
        return fmt(expr), 0
    elements = getattr(expr, "elements", None)
    if elements is None:  # one huge atom: a long string, a huge number
        text = fmt(expr)
        half = max(budget // 2, _MIN_PART // 2)
        if len(text) <= 2 * half + _MIN_PART:  # cutting would not make it shorter
            return text, 0
        return f"{text[:half]}<<{len(text) - 2 * half}>>{text[-half:]}", 0
    front: list[str] = []
    back: list[str] = []
    used, elided = 0, 0
    first, last = 0, len(elements) - 1
    each = max(budget // 6, _MIN_PART)
    while first <= last and used < budget:
        for at_front in (True, False):
            if first > last or used >= budget:
                break
            text, inner = shorten(elements[first if at_front else last],
                                  max(min(each, budget - used), _MIN_PART), fmt)
            used += len(text) + 2
            elided += inner
            if at_front:
                front.append(text)
                first += 1
            else:
                back.insert(0, text)
                last -= 1
    skipped = last - first + 1
    middle = [f"<<{skipped}>>"] if skipped > 0 else []
    inner_text = ", ".join([*front, *middle, *back])
    if expr.get_head_name() == "System`List":
        return f"{{{inner_text}}}", elided + max(skipped, 0)
    return f"{fmt(expr.head)}[{inner_text}]", elided + max(skipped, 0)


def cut_text(text: str, limit: int) -> str:
    """Text (of a Print) over ``limit`` characters as its start and end around a count of
    what was left out."""
    if len(text) <= limit:
        return text
    half = min(limit, SHORT_SIZE) // 2
    return (f"{text[:half]} <<{len(text) - 2 * half} characters>> {text[-half:]}\n"
            f"(Print output of {len(text)} characters, over output_limit: shortened)")
