"""Running a module of rk_jupyter without the working directory on ``sys.path``.

``python -m mod`` and ``python -c code`` put the working directory first on ``sys.path``, so a
``secrets.py`` or ``json.py`` that someone else placed in a shared directory (``/tmp``, a group
project folder) where Jupyter was started would run as the user.  ``-P`` stops that from Python
3.11 on; this bootstrap does the same on 3.10: it drops the entry before any import of its own
(the interpreter's start-up imports only the standard library, before the entry is added) and
then runs the module as ``-m`` would.
"""

from __future__ import annotations

import os
import sys

#: The statement every ``-c`` start-up of ours runs first (after ``import sys``): ``-c`` puts
#: the working directory first on sys.path unless ``-P`` did not.  The one place this is said;
#: the agent's engines and the remote launch command use it too (this module ships with the
#: agent).
DROP_CWD = 'getattr(sys.flags, "safe_path", False) or sys.path.pop(0)'

#: ``python -c BOOTSTRAP module args…`` runs ``module`` as ``python -P -m module args…``.
#: No braces: kernelspec argv items are templates for jupyter_client.
BOOTSTRAP = (
    f"import sys; {DROP_CWD}; "
    "import runpy; del sys.argv[0]; "
    'runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)'
)


def has_safe_path_flag(python: str) -> bool:
    """Whether ``-P`` may be given to ``python``: known only for this interpreter (3.11+);
    another one may be older, and the bootstrap works on every version."""
    return os.path.realpath(python) == os.path.realpath(sys.executable) \
        and sys.version_info >= (3, 11)


def module_argv(python: str, module: str, *args: str) -> list[str]:
    """The argv that runs ``python -m module args…`` without the working directory on
    ``sys.path``; for every launcher of an rk_jupyter process (kernel, local agent).

    ``-P`` where ``python`` is known to be 3.11 or newer (this interpreter: a kernelspec
    shows its argv to the user), else the bootstrap, which works on any version.
    """
    if has_safe_path_flag(python):
        return [python, "-P", "-m", module, *args]
    return [python, "-c", BOOTSTRAP, module, *args]
