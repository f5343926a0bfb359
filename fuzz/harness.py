"""What every harness shares: rk_jupyter instrumented for coverage when libFuzzer runs the
harness as a script, imported plainly otherwise (``repro.py``, ``make_corpus.py``), and the
fuzzing loop."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any


def instrumented(main: bool) -> contextlib.AbstractContextManager[Any]:
    """Wrap a harness's imports of rk_jupyter; ``main``: the harness runs as the script."""
    if not main:
        return contextlib.nullcontext()
    import atheris

    return atheris.instrument_imports(include=["rk_jupyter"])


def fuzz(test_one_input: Callable[[bytes], None]) -> None:
    """Hand ``test_one_input`` to libFuzzer with the command line's options."""
    import atheris

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
