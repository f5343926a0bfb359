"""The ``local`` transport: the agent runs on this machine (the embedded default)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

from ... import logfiles
from ...link.launcher import ORPHAN_LINGER, READY_PREFIX, TOKEN_ENV
from ...logfiles import open_private
from ...safepath import module_argv
from .. import agent_state, ports
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


#: Seconds a shared agent outlives its last kernel when that kernel is restarting, so that
#: the restart's launch finds it (with its warm engine template) instead of starting another.
RESTART_LINGER = 30.0


class SharedAgent:
    """One ``python -m rk_jupyter.agent`` child of this Jupyter server, in its own process
    group, shared by the kernels of one kernelspec (``LocalAgents``).

    Its stdin stays open as a lifeline: if the Jupyter server dies, the pipe closes and the
    agent ends its engines (``--exit-on-stdin-eof``).  Its token is the first launch's; every
    kernel that shares it uses that one (``AgentEndpoint.token``), as over ssh.
    """

    def __init__(self, python: str, engine: str, timeout: float, log_path: str,
                 token: bytes, state_path: str = "") -> None:
        self.python = python
        self.log_path = log_path
        self.token = token
        self.leases = 0
        self.linger: threading.Timer | None = None
        self._end_lock = threading.Lock()
        self._ended = False
        self.port = ports.reserve()  # from jupyter_client's cache: no kernel is given it
        env = dict(os.environ, **{TOKEN_ENV: token.decode()})
        # Neither Jupyter's working directory on sys.path (a planted json.py would run as
        # the user) nor as the agent's own (a shared /tmp, a group folder): it works in the
        # user's home, as the agent over SSH does, so relative paths in a notebook's Wolfram
        # code mean the same on either transport.
        cmd = module_argv(python, "rk_jupyter.agent", "--exit-on-stdin-eof",
                          "--port", str(self.port), "--warm", engine, "--log-file", log_path)
        # A persistent kernelspec's agent outlives this Jupyter server while it keeps a
        # session for a notebook (its lifeline's end is then not the end), and says in
        # ``state_path`` where the next server finds it (``AdoptedAgent``).
        self.state_path = state_path
        if state_path:
            cmd += ["--keep-sessions-on-stdin-eof", "--orphan-linger", str(ORPHAN_LINGER)]
        try:
            with open_private(log_path, "ab") as stderr:
                self.process = subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                    env=env, start_new_session=True, cwd=os.path.expanduser("~"))
        except OSError as exc:
            ports.release(self.port)
            raise python_cannot_run(python, exc) from None
        result: list[Any] = []
        reader = threading.Thread(target=lambda: result.append(_ready(self.process.stdout)),
                                  daemon=True, name="local-agent-ready")
        reader.start()
        reader.join(timeout)
        ready = result[0] if result else None
        if not isinstance(ready, dict):
            self.end()
            why = (f"did not report ready within {timeout:.0f} s" if ready is None
                   else str(ready))
            raise TransportError(
                f"the local agent ({python} -m rk_jupyter.agent) {why}. "
                f"Its log {log_path} ends with:\n{tail(log_path)}",
                code="agent.start-failed")
        self.pid = int(ready["pid"])
        if state_path:
            agent_state.write(state_path, self.pid, self.port, token)

    def alive(self) -> bool:
        return self.process.poll() is None

    def detach(self) -> None:
        """Let a persistent agent go on without this server: its lifeline closes, and it
        ends by itself once it keeps no session (``--orphan-linger`` later)."""
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def end(self) -> None:
        """SIGTERM to its group (it ends its engines), SIGKILL after 5 s; its port back to
        the cache.  Blocking: call it from a thread; idempotent."""
        with self._end_lock:
            if self._ended:
                return
            self._ended = True
        process = self.process
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                process.wait(5.0)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except OSError:
                    pass
                process.wait(5.0)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        ports.release(self.port)


class AdoptedAgent:
    """A persistent kernelspec's agent that an earlier Jupyter server started and left
    running (``SharedAgent.detach``), found through its state file: its sessions wait for
    their notebooks.  Not our child: alive while its pid runs the agent; ended by signal."""

    process = None

    def __init__(self, pid: int, port: int, token: bytes, state_path: str,
                 log_path: str) -> None:
        self.pid, self.port, self.token = pid, port, token
        self.state_path = state_path
        self.log_path = log_path
        self.leases = 0
        self.linger: threading.Timer | None = None
        ports.claim(port)

    @classmethod
    def find(cls, state_path: str, log_path: str) -> AdoptedAgent | None:
        """The agent ``state_path`` describes if it still runs and listens; else None (and
        a stale file is removed)."""
        state = agent_state.read(state_path)
        if state is None:
            return None
        if not _runs_agent(state["pid"]) or not ports.listens(state["port"]):
            agent_state.remove(state_path)
            return None
        return cls(state["pid"], state["port"], state["token"], state_path, log_path)

    def alive(self) -> bool:
        return _runs_agent(self.pid)

    def detach(self) -> None:
        """Nothing holds it: it ends by itself once it keeps no session."""

    def end(self) -> None:
        """SIGTERM to its group (it ends its engines), SIGKILL after 5 s."""
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pid, sig)
            except OSError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not self.alive():
                    return
                time.sleep(0.05)


def _runs_agent(pid: int) -> bool:
    """``pid`` is a live rk_jupyter agent of this user (not a zombie, not a reused pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            cmdline = file.read()
        with open(f"/proc/{pid}/stat", "rb") as file:
            state = file.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return b"rk_jupyter.agent" in cmdline and state != b"Z"


def agent_key(settings: LaunchSettings) -> str:
    """Which local agent a kernel of ``settings`` shares: one per distinct settings."""
    return json.dumps(settings.as_dict(), sort_keys=True, default=str)


def state_path_of(key: str) -> str:
    """Where a persistent kernelspec's agent says where it listens (in Jupyter's private
    runtime directory, 0600: the file holds its token)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(logfiles.private_dir(jupyter_runtime_dir()), f"rk-agent-{digest}.json")


def _ready(stream: Any) -> dict[str, Any] | Exception:
    try:
        return read_ready_line(stream)
    except (EOFError, ValueError) as exc:
        return exc


class LocalAgents:
    """The local agents of this Jupyter server: one per kernelspec's settings, leased by its
    kernels and ended with the last of them (``RESTART_LINGER`` later when that one restarts).

    Why shared: an agent warms its engine (``--warm``: the Mathics3 template) once, and every
    later kernel of the kernelspec — a second notebook, a restart — gets a fork of it in
    milliseconds instead of a cold engine in seconds.  Calls are blocking (run them in a
    thread); one lock serialises them, so that two kernels starting at once share one agent.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._agents: dict[str, SharedAgent] = {}

    def lease(self, settings: LaunchSettings, log_path: str,
              token: bytes) -> SharedAgent | AdoptedAgent:
        """The kernelspec's running agent, or a new one (with ``token``, logging to
        ``log_path``); TransportError when it cannot start."""
        key = agent_key(settings)
        with self._lock:
            agent = self._agents.get(key)
            if agent is not None and not agent.alive():
                self._drop(key, agent)
                agent = None
            state_path = state_path_of(key) if settings.persistent else ""
            if agent is None and state_path:
                agent = AdoptedAgent.find(state_path, log_path)
            if agent is None:
                agent = SharedAgent(settings.python or sys.executable, settings.engine,
                                    settings.agent_start_timeout, log_path, token, state_path)
            self._agents[key] = agent
            if agent.linger is not None:
                agent.linger.cancel()
                agent.linger = None
            agent.leases += 1
            return agent

    def release(self, agent: SharedAgent | AdoptedAgent, restart: bool) -> None:
        """A kernel is done with ``agent``: the last one ends it, at once or, when it is
        restarting, ``RESTART_LINGER`` s later unless a launch leases it meanwhile.  A
        persistent kernelspec's agent is let go instead (``detach``): it may keep sessions
        for notebooks (the kernel's own was ended, or left running, before this)."""
        with self._lock:
            agent.leases -= 1
            if agent.leases > 0:
                return
            if restart and agent.alive():
                agent.linger = threading.Timer(RESTART_LINGER, self._expire, (agent,))
                agent.linger.daemon = True
                agent.linger.start()
                return
            self._forget(agent)
        if agent.state_path:
            agent.detach()
        else:
            agent.end()

    def _expire(self, agent: SharedAgent | AdoptedAgent) -> None:
        with self._lock:
            if agent.leases > 0 or agent.linger is None:
                return
            agent.linger = None
            self._forget(agent)
        if agent.state_path:
            agent.detach()
        else:
            agent.end()

    def _forget(self, agent: SharedAgent) -> None:
        for key, known in list(self._agents.items()):
            if known is agent:
                del self._agents[key]

    def _drop(self, key: str, agent: SharedAgent) -> None:
        """A dead agent: off the table; its port back (its kernels are ended by ``poll``)."""
        del self._agents[key]
        threading.Thread(target=agent.end, daemon=True).start()


#: This Jupyter server's local agents.
AGENTS = LocalAgents()


class LocalTransport(Transport):
    """The agent on this machine: the kernelspec's shared agent (``LocalAgents``)."""

    name = "local"

    def __init__(self, settings: LaunchSettings, log_path: str,
                 agents: LocalAgents | None = None) -> None:
        self.settings = settings
        self.log_path = log_path
        self.agents = agents or AGENTS
        self.agent: SharedAgent | AdoptedAgent | None = None

    @property
    def port(self) -> int | None:
        """The agent's port (None before start and after stop)."""
        return self.agent.port if self.agent is not None else None

    @property
    def process(self) -> subprocess.Popen | None:
        """The agent's process (None before start and after stop)."""
        return self.agent.process if self.agent is not None else None

    async def start(self, kernel_id: str, token: bytes) -> AgentEndpoint:
        self.agent = agent = await asyncio.to_thread(self.agents.lease, self.settings,
                                                     self.log_path, token)
        return AgentEndpoint("127.0.0.1", agent.port,
                             f"local agent pid {agent.pid} on 127.0.0.1:{agent.port}",
                             token=agent.token)

    def alive(self) -> bool:
        return self.agent is not None and self.agent.alive()

    def death_reason(self) -> str:
        agent = self.agent
        code = agent.process.poll() if agent and agent.process else None
        log_path = agent.log_path if agent else self.log_path
        return f"the local agent exited (status {code}); its log ends with:\n{tail(log_path)}"

    async def stop(self, restart: bool = False) -> None:
        agent, self.agent = self.agent, None
        if agent is not None:
            await asyncio.to_thread(self.agents.release, agent, restart)
