"""Just enough Wolfram Language lexing for Jupyter: completeness and the word at the cursor."""

from __future__ import annotations

import re

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {")", "]", "}"}
_WORD_CHAR = re.compile(r"[A-Za-z0-9$`]")


def is_complete(code: str) -> str:
    """'complete', 'incomplete' or 'invalid', from bracket, string and comment balance."""
    stack: list[str] = []
    i, n = 0, len(code)
    while i < n:
        c = code[i]
        if c == '"':
            i += 1
            while i < n and code[i] != '"':
                i += 2 if code[i] == "\\" else 1
            if i >= n:
                return "incomplete"
        elif code.startswith("(*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if code.startswith("(*", i):
                    depth, i = depth + 1, i + 2
                elif code.startswith("*)", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            if depth:
                return "incomplete"
            continue
        elif c in _OPEN:
            stack.append(_OPEN[c])
        elif c in _CLOSE:
            if not stack or stack.pop() != c:
                return "invalid"
        i += 1
    return "incomplete" if stack else "complete"


def word_at(code: str, cursor_pos: int) -> tuple[str, int, int]:
    """The symbol name around ``cursor_pos`` and its (start, end) offsets."""
    start = cursor_pos
    while start > 0 and _WORD_CHAR.match(code[start - 1]):
        start -= 1
    end = cursor_pos
    while end < len(code) and _WORD_CHAR.match(code[end]):
        end += 1
    while start < cursor_pos and code[start].isdigit():
        start += 1
    return code[start:end], start, end
