"""The agent process on the remote host, run over an exec channel of the shared connection.

The token goes to the agent on the channel's stdin (``--token-stdin``), never on a command
line; stdin then stays open as its lifeline (``--exit-on-stdin-eof``): closing the channel,
or losing the connection, ends the agent and with it every engine.  stdout and stderr come
back merged: the ready line, then the agent's log, which a reader thread copies to a local
log file (the channel must be drained, or the agent would block once its window is full).
"""

from __future__ import annotations

import json
import logging
import shlex
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import paramiko

from ...agent.main import READY_PREFIX
from ..transports.base import TransportError
from .connect import SSHConnection
from .deploy import (
    DEPLOY_MARKER,
    NO_PYTHON_MARKER,
    NOT_INSTALLED_MARKER,
    agent_zipapp,
    launch_command,
    upload,
)

log = logging.getLogger("rk_jupyter.ssh")

AGENT_ARGS = ["--host", "127.0.0.1", "--port", "0", "--token-stdin", "--exit-on-stdin-eof"]
STOP_GRACE = 5.0  # seconds the agent gets to end its engines after its stdin closed
_TAIL = 30


@dataclass(frozen=True)
class AgentSettings:
    """How to run the agent; agents on one connection are shared per distinct settings."""

    python: str = "python3"
    deploy: str = "auto"
    start_timeout: float = 30.0
    command_timeout: float = 30.0


def python_not_found(python: str, target: str) -> str:
    """Why the agent cannot start when ``python`` is missing (also said by the doctor)."""
    return (f"the remote Python {python!r} was not found on {target} (not in the login "
            "PATH); set remote_python in the kernelspec to a Python 3.10+ interpreter there "
            "(e.g. /usr/bin/python3)")


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
            with open(log_path, "a", encoding="utf-8", errors="replace") as log_file:
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

    def __init__(self, connection: SSHConnection, settings: AgentSettings, token: bytes,
                 log_path: str) -> None:
        self.connection = connection
        self.settings = settings
        self.token = token
        self.log_path = log_path
        self.deployed = False
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
        command = launch_command(self.settings.python, self.settings.deploy, app, AGENT_ARGS)
        for attempt in range(2):
            run = self._launch(command)
            if not run.settled.wait(max(deadline - time.monotonic(), 0)):
                run.channel.close()  # the lifeline: an agent that is late ends
                raise TransportError(
                    f"the agent on {self.connection.target} did not report ready within "
                    f"{self.settings.start_timeout:g} s (agent_start_timeout); it said:\n"
                    f"{run.tail()}")
            if run.ready:
                log.info("agent pid %s on %s listens on 127.0.0.1:%s (rk_jupyter %s, %s)",
                         run.ready.get("pid"), self.connection.target, run.ready.get("port"),
                         run.ready.get("version"), run.ready.get("python"))
                return
            if DEPLOY_MARKER in run.lines and attempt == 0:
                sftp = self.connection.open_sftp(self.settings.command_timeout)
                try:
                    self.deployed = upload(sftp, app)
                finally:
                    sftp.close()
                log.info("agent %s copied to ~/%s on %s", app.digest, app.remote_path,
                         self.connection.target)
                run.channel.close()
                continue
            break
        raise TransportError(self._start_failure(run))

    def alive(self) -> bool:
        run = self._run
        return bool(run and run.ready and not run.ended.is_set() and self.connection.alive())

    def death_reason(self) -> str:
        if not self.connection.alive():
            return self.connection.death_reason()
        run = self._run
        if run and run.ended.is_set():
            return (f"the agent (pid {run.ready.get('pid')}) on {self.connection.target} "
                    f"exited with status {run.status}; its last lines:\n{run.tail()}")
        return ""

    def stop(self) -> None:
        """Close the lifeline and give the agent STOP_GRACE seconds to end its engines;
        then kill its process group (its engines, in their own groups, follow their parent).
        """
        run = self._run
        if run is None:
            return
        if not run.ended.is_set() and self.connection.alive():
            try:
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
        kill = (f"G=$(ps -o pgid= -p {pid} 2>/dev/null | tr -d ' '); "
                f'kill -KILL -- "-${{G:-{pid}}}" 2>/dev/null || kill -KILL {pid}')
        try:
            self.connection.run("sh -c " + shlex.quote(kill), self.settings.command_timeout)
        except TransportError as exc:
            log.error("cannot kill agent pid %d: %s", pid, exc)

    def _launch(self, command: str) -> _Run:
        channel = self.connection.exec(command, self.settings.command_timeout)
        try:
            channel.sendall(self.token + b"\n")
            channel.settimeout(None)  # from now on the reader thread waits for lines
        except (OSError, EOFError, paramiko.SSHException) as exc:
            channel.close()
            raise TransportError(f"cannot start the agent on {self.connection.target}: "
                                 f"{exc}") from None
        run = self._run = _Run(channel)
        threading.Thread(target=run.read, args=(self.log_path,), daemon=True,
                         name=f"ssh-agent-output-{self.connection.target.hostname}").start()
        return run

    def _start_failure(self, run: _Run) -> str:
        target = self.connection.target
        python = self.settings.python
        if NO_PYTHON_MARKER in run.lines:
            return python_not_found(python, str(target))
        if NOT_INSTALLED_MARKER in run.lines:
            return (f"{python} on {target} cannot import rk_jupyter of this version, and "
                    "agent_deploy is 'installed'; install it there or use agent_deploy 'auto'")
        if DEPLOY_MARKER in run.lines:
            return (f"the agent was copied to ~/{agent_zipapp().remote_path} on {target} over "
                    "SFTP, but the shell does not find it there: do SFTP and the shell see "
                    "the same home directory?")
        status = "" if run.status is None else f" with status {run.status}"
        return (f"the agent on {target} (run with {python}) exited{status} before it was "
                f"ready; it said:\n{run.tail()}")
