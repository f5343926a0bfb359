"""The launch side's errors: what stops an agent or an engine from being reached or started.

Why a module of its own: the transports and the ssh modules both raise these, and neither
package may import the other's ``__init__`` for them (that was an import cycle).  Every class
derives from ``rk_jupyter.errors.RKError``: a ``cause``, a ``fix`` and a stable ``code`` that
the provisioner, the doctor and the magics branch on, never on the message's words.
"""

from __future__ import annotations

import textwrap

from ..errors import RKError


class TransportError(RKError):
    """The agent cannot be reached or started; ``cause`` says why, ``fix`` what to do.

    Raised from the provisioner's ``pre_launch`` (JupyterLab shows ``str(error)`` in its
    "Error Starting Kernel" dialog), from ``rk_jupyter.provisioning.launch.open_session`` and
    from the transports and ssh modules under it.  Raise sites give a precise ``code``
    (``ssh.refused``, ``agent.python-missing``, …); this default means "not classified".
    """

    code = "transport.error"


class SettingsError(TransportError):
    """A launch setting (a kernelspec key, a ``%rkernel connect`` option) has a value that is
    not allowed; the cause names the key, the fix the allowed values."""

    code = "settings.invalid"


def with_message(error: RKError, message: str) -> RKError:
    """A copy of ``error`` (same class, cause, fix and code) whose ``str`` is ``message``:
    the same words laid out for a reader (wrapped lines), so that no caller has to rebuild
    an error from its text."""
    copy = type(error)(error.cause, error.fix, code=error.code)
    copy.args = (message,)
    return copy


def readable(message: str, width: int = 88) -> str:
    """JupyterLab shows a start error in a <pre>: wrap long lines so the fix at the end of a
    sentence is seen without scrolling sideways.  Indented lines are commands to copy and
    stay whole; words (paths) are never split."""
    return "\n".join(
        line if line[:1].isspace() else
        textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False) or line
        for line in message.splitlines()
    )
