"""In[n] and Out[n], kept by the worker in dicts instead of Mathics3's rules.

Mathics3 keeps In/Out as rules, which it inserts and trims with linear scans: ~2 ms a cell at
the default 100 lines of history.  Here they are dicts, trimmed to $HistoryLength, and In and
Out are builtins that read them, with the rules of Mathics3's own In and Out.
"""

from __future__ import annotations

from typing import Any


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


def history_builtins(history: History) -> list[Any]:
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
