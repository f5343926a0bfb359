"""The agent process on the remote host, run over an exec channel of the shared connection.

The token goes to the agent on the channel's stdin (``--token-stdin``), never on a command
line; stdin then stays open as its lifeline (``--exit-on-stdin-eof``): a ``stop`` line on it
ends the agent and every engine at once (a clean shutdown); losing the connection closes it
without one, and the agent keeps the sessions kept for their kernels until they expire, so
that the pool can reconnect and ``adopt`` it (an agent outlives its lifeline, which cannot be
given back: after an adopt a watcher command on the new connection tells when it ends).
stdout and stderr come back merged: the ready line, then the agent's log, which a reader
thread copies to a local log file (the channel must be drained, or the agent would block once
its window is full).
"""

from __future__ import annotations

import json
import logging
import shlex
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import paramiko

from ... import __version__
from ...link.launcher import ORPHAN_LINGER, READY_PREFIX, STOP_LINE
from ...logfiles import open_private, rotate_if_large
from ..diagnosis import PY_PROBE, check_probe, python_missing, python_too_old
from ..errors import TransportError
from .backend import Connection
from .deploy import (
    DEPLOY_MARKER,
    LOG_DIR,
    NO_PYTHON_MARKER,
    NOT_INSTALLED_MARKER,
    OLD_PYTHON_TEXT,
    agent_zipapp,
    copy_probe,
    launch_command,
)

log = logging.getLogger("rk_jupyter.ssh")

AGENT_ARGS = ["--host", "127.0.0.1", "--port", "0", "--token-stdin", "--exit-on-stdin-eof",
              "--keep-sessions-on-stdin-eof"]
STOP_GRACE = 5.0  # seconds the agent gets to end its engines after a stop
WATCH_INTERVAL = 1  # seconds between checks of an adopted agent's pid (a whole number: sleep)
_TAIL = 30
SHELL_MARK = "RKJ-SHELL-PROBE"


@dataclass(frozen=True)
class AgentSettings:
    """How to run the agent; agents on one connection are shared per distinct settings."""

    python: str = "python3"
    deploy: str = "auto"
    start_timeout: float = 30.0
    command_timeout: float = 30.0
    # The engines the agent prepares at start (its --warm): the first kernel's, which does not
    # make another kernel's agent a different one (not compared).
    warm: tuple[str, ...] = field(default=(), compare=False)
    # A persistent kernelspec's agent outlives the Jupyter server while it keeps sessions
    # for notebooks: the pool lets it go instead of stopping it, and the next server's pool
    # adopts it (``pool.AgentState``).
    persistent: bool = False


def check_login(connection: Connection, timeout: float) -> str:
    """Run a command through the account's login shell; raise a TransportError if the shell
    refuses commands (nologin: code ``login.no-shell``) or its startup files print on stdout
    (which garbles every channel that is not a terminal, SFTP's first: ``login.noisy``).

    The one place these are diagnosed: the doctor's remote shell step calls it, and a failed
    agent start or copy asks ``login_problem``.  Returns what it found when all is well.
    """
    target = connection.target
    status, out = connection.run(f"printf {SHELL_MARK}", timeout, combine=False)
    if status != 0 or SHELL_MARK not in out:
        raise TransportError(
            f"the account {target.user} on {target.hostname} cannot run commands (exit "
            f"status {status}, output {out.strip()[:200]!r})",
            "rk_jupyter starts its agent with a command run by the login shell; give "
            f"{target.user} a shell that runs commands (e.g. chsh -s /bin/bash); "
            "/usr/sbin/nologin and /bin/false refuse them", code="login.no-shell")
    extra = out.replace(SHELL_MARK, "", 1).strip()
    if extra:
        raise TransportError(
            f"the login on {target.hostname} prints {extra[:200]!r} on stdout before any "
            "command",
            "a shell startup file (~/.bashrc, ~/.profile, /etc/bash.bashrc) prints even for "
            "commands run over SSH, and that text corrupts SFTP, which copies the agent. "
            "Print only in interactive shells, e.g. with this line above the output in "
            "~/.bashrc:\n    [[ $- == *i* ]] || return", code="login.noisy")
    return f"{target.user}'s login shell ran a command; stdout is clean"


def check_python(connection: Connection, python: str, timeout: float) -> str:
    """Run the Python probe with ``python`` through the login shell, from the home
    directory, as the agent's launch command runs it; raise the diagnosis (missing, too old,
    not working: ``provisioning.diagnosis``) or return what was found.  The doctor's python
    step on an ssh host."""
    script = (f"cd; PY={shlex.quote(python)}; command -v \"$PY\" >/dev/null 2>&1 || "
              f"{{ echo {NO_PYTHON_MARKER}; exit 0; }}; exec \"$PY\" -c {shlex.quote(PY_PROBE)}")
    status, out = connection.run("sh -c " + shlex.quote(script), timeout)
    if NO_PYTHON_MARKER in out.split():
        raise python_missing(python, str(connection.target))
    return check_probe(python, str(connection.target), status, out)


def login_problem(connection: Connection, timeout: float) -> TransportError | None:
    """``check_login``'s error, or None (also when the check itself cannot run: the
    caller's own error is then the better explanation)."""
    try:
        check_login(connection, timeout)
    except TransportError as exc:
        return exc if exc.code.startswith("login.") else None
    return None


class _Run:
    """One exec of the launch command: its channel and what came out of it."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel
        self.ready: dict[str, Any] = {}
        self.lines: deque[str] = deque(maxlen=_TAIL)
        self.status: int | None = None
        self.settled = threading.Event()  # ready, or ended before that
        self.ended = threading.Event()

    def tail(self) -> str:
        return "\n".join(self.lines) or "(nothing)"

    def read(self, log_path: str) -> None:
        """Reader thread: the ready line, then the agent's log, until the channel ends."""
        try:
            rotate_if_large(log_path)  # 0600 and capped, as every log (logfiles)
            with open_private(log_path, "a", encoding="utf-8", errors="replace") as log_file:
                for raw in self.channel.makefile("rb"):
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if not self.ready and line.startswith(READY_PREFIX):
                        try:
                            self.ready = json.loads(line[len(READY_PREFIX):])
                            self.settled.set()
                            continue
                        except ValueError:
                            pass
                    self.lines.append(line)
                    log_file.write(line + "\n")
                    log_file.flush()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.lines.append(f"(output lost: {exc})")
        if self.channel.status_event.wait(1.0):
            self.status = self.channel.recv_exit_status()
        self.ended.set()
        self.settled.set()


class RemoteAgent:
    """One agent process; ``start`` deploys it when needed and waits for its ready line."""

    def __init__(self, connection: Connection, settings: AgentSettings, token: bytes,
                 log_path: str) -> None:
        self.connection = connection
        self.settings = settings
        self.token = token
        self.log_path = log_path
        self.deployed = False
        self.adopted = False  # reached over a later connection than the one that started it
        self._run: _Run | None = None

    @property
    def ready(self) -> dict[str, Any]:
        return self._run.ready if self._run else {}

    @property
    def port(self) -> int:
        return int(self.ready["port"])

    @property
    def pid(self) -> int:
        return int(self.ready["pid"])

    def start(self) -> None:
        """Start the agent (copying it over first if the remote lacks it); bounded by
        ``start_timeout``.  Raises TransportError with the agent's last words."""
        deadline = time.monotonic() + self.settings.start_timeout
        app = agent_zipapp()
        args = [*AGENT_ARGS, *(arg for name in self.settings.warm for arg in ("--warm", name)),
                *(("--orphan-linger", str(ORPHAN_LINGER)) if self.settings.persistent else ())]
        command = launch_command(self.settings.python, self.settings.deploy, app, args)
        for attempt in range(2):
            run = self._launch(command)
            if not run.settled.wait(max(deadline - time.monotonic(), 0)):
                run.channel.close()  # the lifeline: an agent that is late ends
                raise TransportError(
                    f"the agent on {self.connection.target} did not report ready within "
                    f"{self.settings.start_timeout:g} s (agent_start_timeout); it said:\n"
                    f"{run.tail()}", code="agent.start-timeout")
            if run.ready:
                log.info("agent pid %s on %s listens on 127.0.0.1:%s (rk_jupyter %s, %s)",
                         run.ready.get("pid"), self.connection.target, run.ready.get("port"),
                         run.ready.get("version"), run.ready.get("python"))
                return
            if DEPLOY_MARKER in run.lines and attempt == 0:
                try:
                    self.deployed = self.connection.upload(app.data, app.remote_path,
                                                           self.settings.command_timeout)
                except TransportError as exc:
                    run.channel.close()
                    raise self._copy_failure(exc) from None
                log.info("agent %s copied to ~/%s on %s", app.digest, app.remote_path,
                         self.connection.target)
                run.channel.close()
                continue
            break
        raise self._start_failure(run)

    def alive(self) -> bool:
        run = self._run
        return bool(run and run.ready and not run.ended.is_set() and self.connection.alive())

    def adopt(self, connection: Connection, ready: dict[str, Any] | None = None) -> None:
        """Take over the (still running) agent through a new ``connection``, the old one
        having been lost with the lifeline (``ready``: its ready line's pid and port, for an
        agent an earlier Jupyter server started); a watcher command on the new connection
        ends when the agent does, so that ``alive`` keeps telling the truth.  Raises
        TransportError when the command cannot be started."""
        ready = ready or self.ready
        pid = int(ready["pid"])
        watch = f"while kill -0 {pid} 2>/dev/null; do sleep {WATCH_INTERVAL}; done"
        channel = connection.exec("sh -c " + shlex.quote(watch), self.settings.command_timeout)
        channel.settimeout(None)
        self.connection = connection
        self.adopted = True
        run = self._run = _Run(channel)
        run.ready = ready
        run.settled.set()
        threading.Thread(target=run.read, args=(self.log_path,), daemon=True,
                         name=f"ssh-agent-watch-{connection.target.hostname}").start()

    def death_reason(self) -> str:
        if not self.connection.alive():
            return self.connection.death_reason()
        run = self._run
        if run and run.ended.is_set() and self.adopted:
            return (f"the agent (pid {run.ready.get('pid')}) on {self.connection.target} "
                    "ended (its output was lost with the earlier SSH connection; see its "
                    "log there)")
        if run and run.ended.is_set():
            pid = run.ready.get("pid")
            # paramiko ignores exit-signal: a missing exit status means a signal killed it.
            how = (f"exited with status {run.status}" if run.status not in (None, -1)
                   else "exited, killed by a signal (out of memory? a time limit?)")
            return (f"the agent (pid {pid}) on {self.connection.target} {how}. Its log "
                    f"there: ~/{LOG_DIR}/agent-{pid}.log; its last lines:\n{run.tail()}")
        return ""

    def let_go(self) -> None:
        """Leave the agent running without us (a persistent agent): its lifeline ends
        without a stop line, and the agent ends by itself once it keeps no session.  The
        channel itself goes with the connection: closing it here would wait for its reader,
        whose pipe the OpenSSH master holds open while the remote command runs."""
        if self._run is not None:
            try:
                self._run.channel.shutdown_write()
            except (OSError, EOFError, paramiko.SSHException):
                pass

    def stop(self) -> None:
        """Ask the agent to stop (a ``stop`` line on its lifeline, or SIGTERM for an adopted
        agent, which has none) and give it STOP_GRACE seconds to end its engines; then kill
        its process group (its engines, in their own groups, follow their parent).
        """
        run = self._run
        if run is None:
            return
        if not run.ended.is_set() and self.connection.alive():
            if self.adopted:
                self._signal(f"kill -TERM {self.pid}")
            else:
                try:
                    run.channel.sendall(STOP_LINE + b"\n")
                    run.channel.shutdown_write()
                except (OSError, EOFError, paramiko.SSHException):
                    pass
            if not run.ended.wait(STOP_GRACE) and run.ready and self.connection.alive():
                self._kill(self.pid)
        run.channel.close()

    # -- internals ------------------------------------------------------------------------

    def _kill(self, pid: int) -> None:
        log.warning("agent pid %d on %s did not end within %g s; killing it",
                    pid, self.connection.target, STOP_GRACE)
        self._signal(f"G=$(ps -o pgid= -p {pid} 2>/dev/null | tr -d ' '); "
                     f'kill -KILL -- "-${{G:-{pid}}}" 2>/dev/null || kill -KILL {pid}')

    def _signal(self, command: str) -> None:
        try:
            self.connection.run("sh -c " + shlex.quote(command), self.settings.command_timeout)
        except TransportError as exc:
            log.error("cannot signal agent pid %d: %s", self.pid, exc)

    def _launch(self, command: str) -> _Run:
        channel = self.connection.exec(command, self.settings.command_timeout)
        try:
            channel.sendall(self.token + b"\n")
            channel.settimeout(None)  # from now on the reader thread waits for lines
        except (OSError, EOFError, paramiko.SSHException) as exc:
            channel.close()
            raise TransportError(f"cannot start the agent on {self.connection.target}: "
                                 f"{exc}", code="agent.start-failed") from None
        run = self._run = _Run(channel)
        threading.Thread(target=run.read, args=(self.log_path,), daemon=True,
                         name=f"ssh-agent-output-{self.connection.target.hostname}").start()
        return run

    def _start_failure(self, run: _Run) -> TransportError:
        target = self.connection.target
        python = self.settings.python
        if NO_PYTHON_MARKER in run.lines:
            return python_missing(python, str(target))
        if NOT_INSTALLED_MARKER in run.lines:
            return TransportError(f"{python} on {target} cannot import rk_jupyter of this "
                                  "version, and agent_deploy is 'installed'",
                                  "install it there or use agent_deploy 'auto'",
                                  code="agent.not-installed")
        if DEPLOY_MARKER in run.lines:
            return TransportError(f"the agent was copied to ~/{agent_zipapp().remote_path} on "
                                  f"{target} over SFTP, but the shell does not find it there",
                                  "do SFTP and the shell see the same home directory?",
                                  code="agent.copy-not-found")
        too_old = next((line for line in run.lines if OLD_PYTHON_TEXT in line), "")
        if too_old:
            return python_too_old(python, str(target), too_old.rsplit(" is ", 1)[-1])
        problem = login_problem(self.connection, self.settings.command_timeout)
        if problem:
            return problem
        status = "" if run.status is None else f" with status {run.status}"
        return TransportError(f"the agent on {target} (run with {python}) exited{status} "
                              f"before it was ready; it said:\n{run.tail()}",
                              code="agent.start-failed")

    def _copy_failure(self, error: TransportError) -> TransportError:
        """Why the SFTP copy failed, in the shell's words: SFTP says just "Failure" for a
        full disk or a read-only file system, and a login that prints garbles SFTP itself."""
        problem = login_problem(self.connection, self.settings.command_timeout)
        if problem:
            return problem
        app = agent_zipapp()
        try:
            status, out = self.connection.run(copy_probe(app), self.settings.command_timeout)
        except TransportError:
            status, out = 0, ""
        cause = out.strip().splitlines()[-1] if status and out.strip() else str(error)
        return TransportError(
            f"cannot copy the agent ({len(app.data) >> 10} KiB) to ~/{app.remote_path} on "
            f"{self.connection.target}: {cause}",
            "free space in that home directory or make it writable; or install rk_jupyter "
            f"{__version__} there for {self.settings.python} (pip install "
            f"rk_jupyter=={__version__}) and set agent_deploy to 'installed', which copies "
            "nothing", code="agent.copy-failed")
