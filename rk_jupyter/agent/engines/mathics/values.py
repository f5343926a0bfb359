"""Mathics3 expressions as the Python values of the WXF mapping (``rk_jupyter.link.wxf``).

The value of an ``expr`` request (EvaluatePacket) crosses the pipe as these values, encoded by
the link's own codec, and the agent sends it on to the kernel unchanged: strings, integers of
any size, machine reals, True/False/Null, lists, associations (``Delayed`` for ``:>``) and
symbols (System` context dropped) map to themselves; an arbitrary-precision Real is a
``Decimal``, a machine Complex a ``complex``, a ByteArray ``bytes``, a rectangular List of
machine reals or complexes a packed ``NumericArray``, and any other expression a ``Function``.
"""

from __future__ import annotations

import struct
from decimal import Decimal
from typing import Any

from ....link.expr import Function, Symbol
from ....link.wxf import Delayed, NumericArray

# Values nested deeper than this are refused: the link's WXF decoder stops at 512 levels.
MAX_DEPTH = 400
_CONSTANTS = {"System`True": True, "System`False": False, "System`Null": None}
_RULES = frozenset(("System`Rule", "System`RuleDelayed"))
_RULE = Symbol("Rule")
_ASSOCIATION = Symbol("Association")
FAILED = Symbol("$Failed")


class ValueTooDeep(ValueError):
    """A value nested deeper than the link carries."""


def to_wxf(value: Any) -> Any:
    """A Mathics3 expression as a WXF Python value (see the module docstring); ValueTooDeep
    if it is nested more than ``MAX_DEPTH`` levels."""
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
    from mathics.core.symbols import Atom
    from mathics.core.symbols import Symbol as MathicsSymbol

    def convert(expr: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ValueTooDeep()
        if isinstance(expr, String):
            return expr.value
        if isinstance(expr, Integer):
            return int(expr.value)
        if isinstance(expr, MachineReal):
            return float(expr.value)
        if isinstance(expr, PrecisionReal):
            return Decimal(str(expr.value))
        if isinstance(expr, MathicsSymbol):
            name = expr.get_name()
            if name in _CONSTANTS:
                return _CONSTANTS[name]
            return Symbol(name.removeprefix("System`"))
        if isinstance(expr, Complex):
            if isinstance(expr.real, MachineReal) and isinstance(expr.imag, MachineReal):
                return complex(expr.real.value, expr.imag.value)
            return Function(Symbol("Complex"), convert(expr.real, depth + 1),
                            convert(expr.imag, depth + 1))
        if isinstance(expr, Rational):
            ratio = expr.value
            return Function(Symbol("Rational"), int(ratio.p), int(ratio.q))
        if isinstance(expr, ByteArray):
            return bytes(expr.value)
        if isinstance(expr, Atom):  # no Python counterpart: its head and its text
            return Function(convert(expr.get_head(), depth + 1), str(expr))
        if isinstance(expr, ListExpression):
            array = _machine_array(expr)
            if array is not None:
                return array
            items = []
            for element in expr.elements:  # integers and strings inline: lists of them are
                kind = element.__class__  # common and long (Range[10^5])
                if kind is Integer or kind is String:
                    items.append(element.value)
                else:
                    items.append(convert(element, depth + 1))
            return items
        elements = expr.elements
        if expr.get_head_name() == "System`Association" and all(
            rule.get_head_name() in _RULES and len(rule.elements) == 2 for rule in elements
        ):
            association: dict[Any, Any] = {}
            for rule in elements:
                key = _dict_key(convert(rule.elements[0], depth + 1))
                item = convert(rule.elements[1], depth + 1)
                delayed = rule.get_head_name() == "System`RuleDelayed"
                association[key] = Delayed(item) if delayed else item
            return association
        return Function(convert(expr.get_head(), depth + 1),
                        *(convert(element, depth + 1) for element in elements))

    return convert(value, 0)


def _dict_key(key: Any) -> Any:
    """A hashable stand-in for an association key, as WXF decoding makes: list → tuple,
    association → ``Association[Rule[k, v], ...]``."""
    if isinstance(key, list):
        return tuple(_dict_key(item) for item in key)
    if isinstance(key, dict):
        return Function(_ASSOCIATION, *(Function(_RULE, k, _dict_key(v)) for k, v in key.items()))
    return key


def _machine_array(expr: Any) -> NumericArray | None:
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
    return NumericArray(kind, dims, struct.pack(f"<{len(values)}d", *values), packed=True)
