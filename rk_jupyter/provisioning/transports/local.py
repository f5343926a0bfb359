"""The ``local`` transport: the agent runs on this machine (the embedded default)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from typing import Any

from ...link.launcher import READY_PREFIX, TOKEN_ENV
from ...logfiles import open_private
from ...safepath import module_argv
from .. import ports
from ..diagnosis import python_cannot_run
from ..settings import LaunchSettings
from .base import AgentEndpoint, Transport, TransportError


def read_ready_line(stream: Any, prefix: str = READY_PREFIX) -> dict[str, Any]:
    """Parse the agent's one ready line; skip anything a login script printed before it."""
    while True:
        line = stream.readline()
        if not line:
            raise EOFError("the agent exited before it was ready")
        if isinstance(line, bytes):
            line = line.decode(errors="replace")
        if line.startswith(prefix):
            return json.loads(line[len(prefix):])


def tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).strip()
    except OSError:
        return ""


class LocalTransport(Transport):
    """Runs ``python -m rk_jupyter.agent`` as a child in its own process group.

    Its stdin stays open as a lifeline: if the Jupyter server dies, the pipe closes and the
    agent ends its engines (``--exit-on-stdin-eof``).
    """

    name = "local"

    def __init__(self, settings: LaunchSettings, log_path: str) -> None:
        self.python = settings.python or sys.executable
        self.engine = settings.engine
        self.timeout = settings.agent_start_timeout
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    async def start(self, kernel_id: str, token: bytes) -> AgentEndpoint:
        env = dict(os.environ, **{TOKEN_ENV: token.decode()})
        # Neither Jupyter's working directory on sys.path (a planted json.py would run as
        # the user) nor as the agent's own (a shared /tmp, a group folder): it works in the
        # user's home, as the agent over SSH does, so relative paths in a notebook's Wolfram
        # code mean the same on either transport.
        # Its port comes from jupyter_client's cache, so that no kernel is given it (``ports``).
        self.port = ports.reserve()
        cmd = module_argv(self.python, "rk_jupyter.agent", "--exit-on-stdin-eof",
                          "--port", str(self.port), "--warm", self.engine,
                          "--log-file", self.log_path)
        try:
            with open_private(self.log_path, "ab") as stderr:
                self.process = subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                    env=env, start_new_session=True,
                    cwd=os.path.expanduser("~"),
                )
        except OSError as exc:
            await self.stop()
            raise python_cannot_run(self.python, exc) from None
        process = self.process
        try:
            ready = await asyncio.wait_for(
                asyncio.to_thread(read_ready_line, process.stdout), self.timeout
            )
        except (asyncio.TimeoutError, EOFError, ValueError) as exc:
            await self.stop()
            if isinstance(exc, asyncio.TimeoutError):
                why = f"did not report ready within {self.timeout:.0f} s"
            else:
                why = str(exc)
            raise TransportError(
                f"the local agent ({self.python} -m rk_jupyter.agent) {why}. "
                f"Its log {self.log_path} ends with:\n{tail(self.log_path)}",
                code="agent.start-failed") from None
        return AgentEndpoint("127.0.0.1", int(ready["port"]),
                             f"local agent pid {ready['pid']} on 127.0.0.1:{ready['port']}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def death_reason(self) -> str:
        code = self.process.poll() if self.process else None
        return f"the local agent exited (status {code}); its log ends with:\n{tail(self.log_path)}"

    async def stop(self, restart: bool = False) -> None:
        process, self.process = self.process, None
        port, self.port = self.port, None
        try:
            if process is not None:
                await self._end(process)
        finally:
            if port is not None:
                ports.release(port)

    @staticmethod
    async def _end(process: subprocess.Popen) -> None:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                await asyncio.to_thread(process.wait, 5.0)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                await asyncio.to_thread(process.wait, 5.0)
        for stream in (process.stdin, process.stdout):
            if stream:
                stream.close()
