"""``rk-jupyter sessions NAME [--end ID]``: the sessions a persistent kernelspec's agent holds.

Why: a persistent session (kernelspec key ``persistent``) outlives the Jupyter server and
waits ``persist_for`` for its notebook; a user who will not come back, or wants the engine's
memory now, needs to see and end it without starting a kernel.  The agent is found where
the next Jupyter server would find it (the state file its launcher wrote:
``transports.local.AdoptedAgent``, over ssh ``ssh.pool.AgentState``), so this never starts
an agent.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

from .. import logfiles
from ..link.frames import LinkError
from .errors import TransportError
from .launch import close_session, list_sessions
from .settings import LaunchSettings
from .transports import AgentEndpoint
from .transports.local import AdoptedAgent, agent_key, state_path_of

#: Seconds ``end`` waits for the agent to stop listing the session it was told to end.
END_WAIT = 10.0


@dataclass(frozen=True)
class RunningAgent:
    """Where a kernelspec's running agent listens, and its token."""

    endpoint: AgentEndpoint
    token: bytes
    codec: str


@contextlib.contextmanager
def running_agent(settings: LaunchSettings) -> Iterator[RunningAgent | None]:
    """The kernelspec's agent while the block runs, if one runs (None: no agent, so no
    session).  Over ssh: a connection of its own and a forward to the agent an earlier
    server let go (the pool's ``adopt_only``), let go again at the end; TransportError
    (the connection's own, naming cause and fix) when the host cannot be reached."""
    if settings.transport == "local":
        agent = AdoptedAgent.find(state_path_of(agent_key(settings)), "")
        yield None if agent is None else RunningAgent(
            AgentEndpoint("127.0.0.1", agent.port, f"local agent pid {agent.pid}",
                          token=agent.token), agent.token, settings.compression)
        return
    from .ssh import backend  # paramiko and the ssh modules: only for an ssh kernelspec
    from .ssh.pool import NO_AGENT, ConnectionPool
    from .transports.ssh import connect_options

    pool = ConnectionPool()
    log_dir = logfiles.private_dir(jupyter_runtime_dir())
    try:
        lease = pool.acquire(backend.resolve(settings), connect_options(settings, log_dir,
                                                                        adopt_only=True))
    except TransportError as exc:
        if exc.code != NO_AGENT:
            raise
        yield None
        return
    try:
        yield RunningAgent(AgentEndpoint("127.0.0.1", lease.port, f"agent pid "
                                         f"{lease.agent.pid} on {settings.host}",
                                         token=lease.token), lease.token, settings.compression)
    finally:
        pool.release(lease)


def sessions(settings: LaunchSettings) -> list[dict[str, Any]]:
    """The sessions of the kernelspec's agent (``Session.summary``), oldest first."""
    with running_agent(settings) as agent:
        return [] if agent is None else _listed(agent)


def _listed(agent: RunningAgent) -> list[dict[str, Any]]:
    try:
        return list_sessions(agent.endpoint, agent.token, agent.codec)
    except LinkError as exc:
        raise TransportError(f"the agent ({agent.endpoint.description}) did not answer: {exc}",
                             "try again; if it keeps failing, its log (rk-*-agent.log in "
                             "Jupyter's runtime directory) says why",
                             code="sessions.no-answer") from None


def end(settings: LaunchSettings, name: str) -> bool:
    """End session ``name`` (its engine ends with it); False if the agent has no such
    session.  Waits (bounded) until the agent no longer lists it."""
    with running_agent(settings) as agent:
        if agent is None or not any(row["name"] == name for row in _listed(agent)):
            return False
        close_session(agent.endpoint, agent.token, agent.codec, name)
        deadline = time.monotonic() + END_WAIT
        while time.monotonic() < deadline:
            if not any(row["name"] == name for row in _listed(agent)):
                return True
            time.sleep(0.1)
    raise TransportError(f"the agent still lists session {name} {END_WAIT:g} s after it was "
                         "told to end it", "run the command again", code="sessions.not-ended")


def table(rows: list[dict[str, Any]], now: float | None = None) -> list[tuple[str, ...]]:
    """The rows ``rk-jupyter sessions`` prints: ID, NOTEBOOK, STARTED, LAST ACTIVE, STATE."""
    now = time.time() if now is None else now

    def when(stamp: Any) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) \
            if isinstance(stamp, (int, float)) else "-"

    out = [("ID", "NOTEBOOK", "STARTED", "LAST ACTIVE", "STATE")]
    for row in rows:
        label = row.get("label") or {}
        state = str(row.get("state", "?"))
        if row.get("attached"):
            state += ", attached"
        elif isinstance(row.get("expires"), (int, float)):
            left = max(row["expires"] - now, 0)
            state += f", detached (ends in {left / 3600:.1f} h)" if left >= 3600 \
                else f", detached (ends in {left / 60:.0f} min)"
        out.append((str(row.get("name", "?")), str(label.get("notebook") or "-"),
                    when(row.get("started")), when(row.get("last_active")), state))
    return out
