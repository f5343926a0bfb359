#!/usr/bin/env python3
"""atheris harness: arbitrary bytes into the WXF decoder.

Property: ``wxf.loads`` (with and without numpy) and ``wxf._loads_buffer`` on an ``mmap`` (the
link's in-place path) raise nothing but ``WXFError`` on any input and finish within libFuzzer's
``-timeout``; a value that decodes can be encoded again with ``wxf.dumps``, which may refuse it
only with ``WXFError`` too.

Run: ``python fuzz/fuzz_wxf.py fuzz/corpus/wxf -max_total_time=60`` (or ``fuzz/run.py``).
Without atheris (``fuzz/repro.py``) the module only defines ``TestOneInput``.
"""

from __future__ import annotations

import contextlib
import mmap

import harness  # fuzz/harness.py, beside this file
import numpy  # noqa: F401  (imported before instrumentation: wxf imports it lazily)

with harness.instrumented(__name__ == "__main__"):
    from rk_jupyter.link import wxf

#: The only exceptions the decoder may raise on bad input (its documented contract).
OWN_ERRORS = (wxf.WXFError,)


def TestOneInput(data: bytes) -> None:
    for use_numpy in (True, False):
        try:
            value = wxf.loads(data, use_numpy=use_numpy)
        except OWN_ERRORS:
            continue
        try:
            wxf.dumps(value)
        except OWN_ERRORS:
            pass
    if data[:2] == b"8:":  # the link decodes big payloads in place, from an mmap
        buf = mmap.mmap(-1, len(data))
        buf[:] = data
        try:
            wxf._loads_buffer(buf, max_size=1 << 20)
        except OWN_ERRORS:
            pass
        finally:
            with contextlib.suppress(BufferError):
                buf.close()


if __name__ == "__main__":
    harness.fuzz(TestOneInput)
