"""The cells this kernel ran, for Jupyter's history requests (``history_request``).

Why the kernel keeps them: Jupyter clients ask the kernel, not the engine, for history (the
console's up-arrow and ``%history``-like tools, ``jupyter_kernel_test``), and the engine's
``In``/``Out`` live on another host and end with it.  Kept in memory for the kernel's life,
numbered by the execution count Jupyter showed; one session, number ``SESSION``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

#: The session number of this kernel's cells (there is no history across kernel processes).
SESSION = 1

Entry = tuple[int, int, "str | tuple[str, str | None]"]


@dataclass
class History:
    """Cells in the order they ran: (line, input, text/plain of the result or None)."""

    cells: list[tuple[int, str, str | None]] = field(default_factory=list)

    def record(self, line: int, code: str, output: str | None) -> None:
        """Called by the kernel after each stored cell."""
        self.cells.append((line, code, output))

    def query(self, access: str, output: bool, *, session: int | None = None,
              start: int | None = None, stop: int | None = None, n: int | None = None,
              pattern: str | None = None, unique: bool = False) -> list[Entry]:
        """The answer to a history_request (``hist_access_type`` tail, range or search);
        an unknown type or another session gives nothing."""
        if access == "tail":
            chosen = self.cells[-n:] if n else list(self.cells)
        elif access == "range":
            if session not in (None, 0, SESSION):
                return []
            low = start or 0
            chosen = [c for c in self.cells if c[0] >= low and (stop is None or c[0] < stop)]
        elif access == "search":
            chosen = [c for c in self.cells if fnmatch.fnmatchcase(c[1], pattern or "*")]
            if unique:  # each input once, where it ran last
                latest = {cell[1]: cell for cell in chosen}
                chosen = sorted(latest.values())
            if n:
                chosen = chosen[-n:]
        else:
            return []
        return [(SESSION, line, (code, out) if output else code) for line, code, out in chosen]
