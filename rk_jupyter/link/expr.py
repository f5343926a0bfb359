"""Wolfram Language expressions that have no natural Python type.

int, float, str, bytes, list, dict, True/False/None map to Python values directly;
everything else is a ``Symbol`` or a ``Function`` (a head applied to arguments).
"""

from __future__ import annotations

from typing import Any


class Symbol:
    """A Wolfram Language symbol, compared and hashed by its (context-qualified) name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Symbol) and other.name == self.name

    def __hash__(self) -> int:
        return hash((Symbol, self.name))

    def __repr__(self) -> str:
        return f"Symbol({self.name!r})"


class Function:
    """``head[args...]``, compared and hashed by value (so args must be hashable to hash)."""

    __slots__ = ("head", "args")

    def __init__(self, head: Any, *args: Any) -> None:
        self.head = head
        self.args = args

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Function) and other.head == self.head and other.args == self.args
        )

    def __hash__(self) -> int:
        return hash((Function, _freeze(self.head), tuple(_freeze(a) for a in self.args)))

    def __repr__(self) -> str:
        return f"Function({', '.join(repr(x) for x in (self.head, *self.args))})"


def _freeze(value: Any) -> Any:
    """A hashable stand-in for lists and dicts nested in a Function."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple((_freeze(k), _freeze(v)) for k, v in value.items())
    return value
