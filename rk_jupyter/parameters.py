"""Notebook parameters in Wolfram Language, for papermill (``papermill -k rk-NAME -p n 10``).

Why this module: papermill writes the values it is given (``-p``, ``-y``, ``-f``) as an
assignment cell in the notebook's language, with a translator chosen by kernel name or
language; it has none for Wolfram Language, and no entry point for translators.  It does load
its engine entry points (group ``papermill.engine``) when it starts, so rk_jupyter registers
``papermill_engine.RKEngine`` there — papermill's own nbclient engine under a name of ours —
whose module imports this one, and registering the translator is what importing this module
does.

Values: numbers as numbers (reals in Wolfram notation, ``1.5*^-7``; inf and nan as
``Infinity``/``Indeterminate``), strings as strings, lists as lists, dicts as Associations,
None as ``Null``, booleans as ``True``/``False``.  A parameter name must be a Wolfram Language
symbol: ``_`` is pattern syntax there, so ``n_max`` is refused with the fix (write ``nMax``).
"""

from __future__ import annotations

import math
import re
from typing import Any

from papermill.exceptions import PapermillException
from papermill.models import Parameter
from papermill.translators import Translator, papermill_translators

#: The kernels' language name (``RKernel.language_info["name"]``).
LANGUAGE = "wolfram-language"
SYMBOL = re.compile(r"[A-Za-z$][A-Za-z0-9$]*")
_ASSIGNMENT = re.compile(r"\s*([A-Za-z$][A-Za-z0-9$]*)\s*=\s*(.*?)\s*;?\s*"
                         r"(?:\(\*\s*(.*?)\s*\*\))?\s*$")


class WolframTranslator(Translator):
    """Python (JSON/YAML) values as Wolfram Language input."""

    @classmethod
    def translate_str(cls, val: str) -> str:
        escaped = (val.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                   .replace("\r", "\\r").replace("\t", "\\t"))
        return f'"{escaped}"'

    @classmethod
    def translate_none(cls, val: None) -> str:
        return "Null"

    @classmethod
    def translate_bool(cls, val: bool) -> str:
        return "True" if val else "False"

    @classmethod
    def translate_float(cls, val: float) -> str:
        if math.isnan(val):
            return "Indeterminate"
        if math.isinf(val):
            return "Infinity" if val > 0 else "-Infinity"
        text = repr(val)
        if "e" in text:  # 1e-07 is 1 E - 7 in Wolfram Language: the exponent is *^
            mantissa, exponent = text.split("e")
            if "." not in mantissa:
                mantissa += "."
            return f"{mantissa}*^{int(exponent)}"
        return text

    @classmethod
    def translate_list(cls, val: list[Any]) -> str:
        return "{" + ", ".join(cls.translate(v) for v in val) + "}"

    @classmethod
    def translate_dict(cls, val: dict[Any, Any]) -> str:
        rules = (f"{cls.translate(k)} -> {cls.translate(v)}" for k, v in val.items())
        return "<|" + ", ".join(rules) + "|>"

    @classmethod
    def comment(cls, cmt_str: str) -> str:
        return f"(* {cmt_str.replace('*)', '* )')} *)"

    @classmethod
    def assign(cls, name: str, str_val: str) -> str:
        if not SYMBOL.fullmatch(name):
            fix = re.sub(r"_+(\w)", lambda m: m.group(1).upper(), name)
            raise PapermillException(
                f"parameter {name!r} is not a Wolfram Language symbol (letters, digits and $, "
                f"not starting with a digit; _ is pattern syntax): name it like {fix!r} in "
                "the notebook's parameters cell and on the command line")
        return f"{name} = {str_val};"

    @classmethod
    def inspect(cls, parameters_cell: Any) -> list[Parameter]:
        """The ``name = value;  (* help *)`` lines of the parameters cell
        (``papermill --help-notebook``)."""
        found = []
        for line in str(parameters_cell.source).splitlines():
            match = _ASSIGNMENT.fullmatch(line)
            if match:
                name, value, help_text = match.groups()
                found.append(Parameter(name=name, inferred_type_name="None", default=value,
                                       help=help_text or ""))
        return found


papermill_translators.register(LANGUAGE, WolframTranslator)
