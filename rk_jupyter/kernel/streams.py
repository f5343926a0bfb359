"""The kernel process's sys.stdout and sys.stderr (ipykernel's ``OutStream``, flushed less).

ipykernel flushes both streams before every execute_reply, and each flush hands two callbacks
to the IOPub thread and waits for them: four thread hand-offs a cell, ~0.4 ms, for streams
this kernel writes nothing to (an evaluation's output comes from the engine as messages).  A
flush with nothing written since the last one returns at once; one with something written
still waits, so that the text goes out before the reply as ipykernel promises.
"""

from __future__ import annotations

from ipykernel.iostream import OutStream


class KernelStream(OutStream):
    """``OutStream`` whose flush returns at once when nothing was written since the last one.

    What was written is known from ``write`` itself (print, and the text ipykernel's fd
    watchers capture, both go through it), not from OutStream's buffers, whose layout differs
    between ipykernel versions."""

    _written = False

    def write(self, string: str) -> int | None:  # type: ignore[override]
        self._written = True
        return super().write(string)

    def flush(self) -> None:
        """Called by ipykernel before each reply and by code that printed: waits for the
        IOPub thread only when text was written since the last flush (a write racing with
        this flush sets the mark again, for the next one)."""
        if self._written:
            self._written = False
            super().flush()
