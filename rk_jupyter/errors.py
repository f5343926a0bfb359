"""One error base for everything a user can be told went wrong: a cause, a fix and a code.

Why: a failure must name its cause and a fix that works when followed, and code that reacts
to a failure (retry or not, which doctor step failed, which fix to offer) must decide on a
stable code, never on the wording of a message.  Every error that crosses a layer — transport,
link, agent, engine — derives from ``RKError``.

This module is standard library only: the agent, which is copied to remote hosts, uses it.
"""

from __future__ import annotations

from typing import ClassVar


class RKError(Exception):
    """A failure with a ``cause`` (what went wrong, with the facts: host, path, signal…), a
    ``fix`` (what the user does about it; may be empty where there is nothing to do) and a
    stable ``code`` (``area.what``, e.g. ``"ssh.host-key-unknown"``).

    ``str(error)`` is the message a user reads: the cause, then the fix after "; ", as the
    project's messages have always read.  Subclasses set a default ``code``; a raise site may
    give a more precise one.  Callers branch on ``code`` (or on the class), never on ``str``.
    """

    code: ClassVar[str] = "rk.error"

    def __init__(self, cause: str, fix: str = "", *, code: str | None = None) -> None:
        self.cause = cause
        self.fix = fix
        if code is not None:
            self.code = code  # type: ignore[misc]  # an instance's own, more precise code
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The text a user reads: cause, then fix."""
        return f"{self.cause}; {self.fix}" if self.fix else self.cause

    def as_dict(self) -> dict[str, str]:
        """The error as plain data, for a packet, a JSON report or a log line."""
        return {"code": self.code, "cause": self.cause, "fix": self.fix}

    def __reduce__(self):  # pickles (e.g. across asyncio.to_thread) keep cause, fix and code
        return (_rebuild, (type(self), self.cause, self.fix, self.code))


def _rebuild(cls: type[RKError], cause: str, fix: str, code: str) -> RKError:
    return cls(cause, fix, code=code)
