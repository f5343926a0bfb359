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
    """``OutStream`` whose flush returns at once when nothing waits to be sent."""

    def flush(self) -> None:
        """Called by ipykernel before each reply and by code that printed: waits for the
        IOPub thread only when text is buffered or a flush of it is pending."""
        if self._buffers or self._flush_pending or self._subprocess_flush_pending:
            super().flush()
