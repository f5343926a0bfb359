#!/usr/bin/env python3
"""atheris harness: arbitrary bytes into the MEDIUM context's delta filter (link/delta.py).

Properties: ``delta.decode`` raises nothing but ``DeltaError`` on any input and never returns
more than its limit; ``delta.encode`` of any input stays within ``delta.bound`` and decodes
back to exactly that input.

Run: ``python fuzz/fuzz_delta.py fuzz/corpus/delta -max_total_time=60`` (or ``fuzz/run.py``).
Without atheris (``fuzz/repro.py``) the module only defines ``TestOneInput``.
"""

from __future__ import annotations

import harness  # fuzz/harness.py, beside this file

with harness.instrumented(__name__ == "__main__"):
    from rk_jupyter.link import delta

LIMIT = 4096


class RoundTripError(AssertionError):
    """encode then decode did not give the input back, or encode broke its bound."""


def TestOneInput(data: bytes) -> None:
    try:
        out = delta.decode(data, LIMIT)
    except delta.DeltaError:
        pass
    else:
        if len(out) > LIMIT:
            raise RoundTripError(f"decode returned {len(out)} bytes, limit {LIMIT}")
    filtered = delta.encode(data)
    if len(filtered) > delta.bound(len(data)):
        raise RoundTripError("encode exceeded its bound")
    if delta.decode(filtered, len(data)) != data:
        raise RoundTripError("round trip changed the payload")


if __name__ == "__main__":
    harness.fuzz(TestOneInput)
