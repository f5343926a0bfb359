"""The engines' child processes: started in a group of their own, watched, described, ended.

Both engines start one process (the Mathics3 worker, a Wolfram kernel) that may start more (a
kernel's subkernels), and must be able to end them all, to say how the process ended, and to
show its last words when it fails.  These are the rules for that, written once:

- ``spawn`` starts the process as the leader of a new session and process group, so that
  ``kill_group`` reaches everything it started.
- ``exit_status`` looks without reaping (``WNOWAIT``): the pid, which is also the group id,
  cannot be reused until the engine's ``close`` waits for it, so signalling the group is safe.
- ``OutputTail`` keeps the last lines the process wrote, for the errors that quote them.
- ``python_argv`` starts a Python child with a safe import path: not the working directory.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from typing import IO, Any

from ...safepath import DROP_CWD, has_safe_path_flag

log = logging.getLogger(__name__)

# The code a Python child runs first.  ``-c`` puts the working directory ('') first on sys.path
# (Python < 3.11 has no -P), where a planted json.py or secrets.py would run as the user: it is
# removed before anything is imported.  Then the top package of the module is loaded from
# ``root`` (the directory or zipapp holding it) without putting ``root`` on sys.path: that may
# be the agent's site-packages, whose packages must not shadow the child interpreter's own.
# So the child runs this very rk_jupyter, whether its interpreter has one installed or not.
_SAFE_BOOTSTRAP = "import sys\n" + DROP_CWD + """
import importlib.machinery, importlib.util, runpy
root, module = sys.argv.pop(1), sys.argv.pop(1)
spec = importlib.machinery.PathFinder.find_spec(module.partition('.')[0], [root])
if spec is None: sys.exit(f'{module} is not in {root}')
top = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(top)
runpy.run_module(module, run_name='__main__', alter_sys=True)
"""


def python_argv(python: str, module: str, root: str) -> list[str]:
    """The command that runs ``module`` (its top package from ``root``, a directory or zipapp)
    under the interpreter ``python`` as ``__main__``, the working directory off sys.path.

    Called by engines that start a Python child.  ``-P`` is added when ``python`` is the
    agent's own interpreter and is 3.11 or later; any other interpreter relies on the
    bootstrap alone, which works on every version (3.10 has no -P).  The environment is not
    touched: PYTHONSAFEPATH would pass on to every process the child starts (a user's scripts).
    """
    safe = ["-P"] if has_safe_path_flag(python) else []
    return [python, *safe, "-c", _SAFE_BOOTSTRAP, root, module]


def spawn(argv: list[str], **streams: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new process group (its own session on POSIX).

    ``streams`` are Popen's stdin/stdout/stderr arguments.  Raises OSError when it cannot be
    run; the caller names the program and the fix.
    """
    group = ({"start_new_session": True} if os.name == "posix"
             else {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)})
    return subprocess.Popen(argv, **streams, **group)


def exit_status(proc: subprocess.Popen[bytes]) -> int | None:
    """The process's exit status (negative: the signal that killed it), None while it runs.

    On POSIX the process is not reaped (WNOWAIT), so its pid, which is also its process group
    id, cannot be reused before the engine's ``close`` waits for it.
    """
    if proc.returncode is not None:
        return proc.returncode
    if os.name != "posix":
        return proc.poll()
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return proc.poll()
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """``exit_status`` once the process has ended, or None after ``timeout`` s (not reaped)."""
    deadline = time.monotonic() + timeout
    while (status := exit_status(proc)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return status


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process's whole group (what it started too), unless it was reaped:
    then its pid may belong to another process.  Elsewhere than POSIX: kill the process."""
    if proc.returncode is not None:
        return
    if os.name != "posix":
        proc.kill()
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def reap(proc: subprocess.Popen[bytes], what: str) -> None:
    """Kill the group and wait (at most 5 s) for the process: the last step of ``close``."""
    kill_group(proc, signal.SIGKILL)
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        log.error("%s %d did not end after SIGKILL", what, proc.pid)


def describe_exit(status: int) -> str:
    """How an engine process ended, in the words of its start and death errors."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = str(-status)
        return f"was killed by signal {name}"
    if status == 0:
        return "exited (Quit[] and Exit[] end the engine)"
    return f"exited with code {status}"


_STATES = {"R": "running", "S": "running", "D": "running", "T": "stopped", "t": "stopped",
           "Z": "ended", "X": "ended"}


def process_usage(pid: int) -> dict[str, Any]:
    """``state`` ("running", "stopped" by a signal such as SIGSTOP, "ended") and ``memory``
    (resident bytes) of process ``pid``, read from /proc; {} where there is no /proc.

    Why: a stopped engine looks alive to every other check (its pipe is open, it has not
    exited), and only its state says that nothing will answer until it is continued.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            stat = file.read()
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as file:
            status = file.read()
    except OSError:
        return {}
    state = stat.rpartition(")")[2].split()[0] if ")" in stat else ""
    usage: dict[str, Any] = {"pid": pid, "state": _STATES.get(state, "running")}
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            usage["memory"] = int(line.split()[1]) * 1024
    return usage


def set_memory_limit(limit: int) -> None:
    """Limit this process's address space to ``limit`` bytes (0: no limit); called by an
    engine's worker as it starts, so that Python's MemoryError, not the host's OOM killer,
    meets a cell that asks for too much.  No-op where the resource module is missing."""
    if limit <= 0:
        return
    try:
        import resource
    except ImportError:
        return
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def format_bytes(n: float) -> str:
    """``n`` bytes as people write a memory size: 512M, 8G, 1.5G."""
    for unit in ("", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.3g}{unit}" if unit else f"{int(n)}"
        n /= 1024
    return str(n)


class OutputTail:
    """The last lines a child process wrote on one stream, kept by a reader thread.

    Engines quote them when the process fails to start or dies; blank lines are dropped and
    each line is cut at ``width`` characters, so that a flood cannot make an error unreadable.
    """

    def __init__(self, stream: IO[bytes], *, lines: int, width: int, label: str,
                 level: int = logging.DEBUG) -> None:
        self._lines: deque[str] = deque(maxlen=lines)
        self._width = width
        self._label = label
        self._level = level  # each line is also logged, at this level
        self._done = threading.Event()
        threading.Thread(target=self._read, args=(stream,), daemon=True,
                         name=f"{label.replace(' ', '-')}-output").start()

    def lines(self) -> list[str]:
        """The lines kept so far, oldest first."""
        return list(self._lines)

    def text(self) -> str:
        """The lines kept so far, one per line ("" when there are none)."""
        return "\n".join(self._lines)

    def wait(self, timeout: float) -> bool:
        """Wait until the stream has ended (the process's last words are in); False if it has
        not within ``timeout`` s."""
        return self._done.wait(timeout)

    def _read(self, stream: IO[bytes]) -> None:
        try:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    self._lines.append(line[: self._width])
                    log.log(self._level, "%s: %s", self._label, line)
        except (OSError, ValueError):
            pass
        finally:
            self._done.set()
