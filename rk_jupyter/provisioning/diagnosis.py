"""What is wrong with the Python that runs an agent: each diagnosis written once.

A failed agent start (``ssh.remote_agent``, from the markers its launch command prints) and
the doctor's python step (which runs ``PY_PROBE``) both raise these errors, so a user reads
the same cause and fix whichever found the problem.
"""

from __future__ import annotations

from ..link.launcher import MIN_PYTHON
from .errors import TransportError

#: Prints "executable X.Y.Z"; written so that it also runs on Python 2 (to say it is too old).
PY_PROBE = ('import sys; sys.stdout.write("%s %d.%d.%d\\n" % '
            "((sys.executable,) + tuple(sys.version_info[:3])))")
_NEEDED = f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]}"


def python_missing(python: str, where: str) -> TransportError:
    """``python`` is not found on ``where`` (code ``agent.python-missing``)."""
    return TransportError(
        f"the remote Python {python!r} was not found on {where} (not in the login PATH)",
        f"set remote_python in the kernelspec to a Python {_NEEDED}+ interpreter there (e.g. "
        "/usr/bin/python3)", code="agent.python-missing")


def python_cannot_run(python: str, error: OSError) -> TransportError:
    """The local agent's ``python`` cannot be run at all."""
    return TransportError(
        f"cannot run the Python {python!r} of the local agent: {error}",
        f"set python in the kernelspec to a Python {_NEEDED}+ interpreter with rk_jupyter "
        "installed, or leave it empty for Jupyter's own", code="agent.python-missing")


def python_too_old(python: str, where: str, found: str,
                   setting: str = "remote_python") -> TransportError:
    """``python`` on ``where`` is version ``found``, older than the agent needs; ``setting``
    is the kernelspec key that names it (``python`` for the local transport)."""
    return TransportError(
        f"{python} on {where} is Python {found}; the agent needs {_NEEDED} or newer",
        f"set {setting} in the kernelspec to a newer interpreter there (e.g. "
        "/usr/bin/python3.11)", code="agent.python-old")


def python_unusable(python: str, where: str, status: int, out: str,
                    setting: str = "remote_python") -> TransportError:
    """``python`` on ``where`` did not run the probe."""
    return TransportError(
        f"{python} on {where} did not run (exit status {status}): {out.strip()[-300:]!r}",
        f"set {setting} in the kernelspec to a working Python {_NEEDED}+ interpreter",
        code="agent.python-unusable")


def check_probe(python: str, where: str, status: int, out: str,
                setting: str = "remote_python") -> str:
    """Check PY_PROBE's output (its last line: a login may print first); raise the
    diagnosis, or return what was found.  ``setting``: the kernelspec key naming it."""
    fields = (out.strip().splitlines() or [""])[-1].rsplit(" ", 1)
    try:
        version = tuple(int(part) for part in fields[1].split("."))
    except (IndexError, ValueError):
        raise python_unusable(python, where, status, out, setting) from None
    if version < MIN_PYTHON:
        raise python_too_old(python, where, fields[1], setting)
    found = "" if fields[0] == python else f" ({fields[0]})"
    return f"{python} on {where}: Python {fields[1]}{found}"
