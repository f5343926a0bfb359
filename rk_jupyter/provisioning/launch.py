"""The one launch path: transport → agent → link → engine, each phase reported to an observer.

Why one: the provisioner (a Jupyter kernel start), the IPython magics (``%rkernel connect``)
and the doctor (``rk-jupyter doctor``) all open a session the same way, so a launch fails
with the same error, at the same phase, whoever asked for it; the doctor shows the timing
and the first failing phase of this very path instead of rebuilding it.

Phases, in order:

``agent``   the transport starts (or leases) an agent and returns where it listens;
``link``    a link to the agent is made: TCP (through the forward, with ssh) and the
            token handshake, which also agrees on the protocol and the codec;
``engine``  a session is opened on the agent and its engine started.

A failure is raised as a TransportError whose ``code`` names what failed (``link.failed``,
``link.protocol-mismatch``, ``ssh.forwarding-refused``, ``engine.start-failed``, or the
transport's own); what was started is stopped again before it is raised.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..client import AgentClient, AgentError, Endpoint
from ..errors import RKError
from ..link.compression import split_preference
from ..link.connection import Link
from ..link.frames import LinkError
from ..link.launcher import ENGINE_START_WAIT, LINK_TIMEOUT
from ..link.packets import packet, packet_name
from .errors import TransportError
from .settings import LaunchSettings
from .transports import AgentEndpoint, Transport, create_transport

PHASES = ("agent", "link", "engine")


@dataclass(frozen=True)
class Phase:
    """One phase as it ended: its name (one of PHASES), the seconds it took, what it found
    (``detail``) or the error that ended it."""

    name: str
    seconds: float
    detail: str = ""
    error: RKError | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


class LaunchObserver:
    """Told of each phase as it begins and ends; the default does nothing.

    The provisioner's writes its launch log; the doctor's turns phases into report rows.
    Called on the thread that runs ``open_session``; must not raise.
    """

    def begin(self, name: str, transport: Transport, detail: str) -> None:
        """Phase ``name`` begins (``detail``: what it is about to do)."""

    def end(self, phase: Phase) -> None:
        """A phase ended, passed or failed."""

    def secret(self, value: bytes) -> None:
        """The launch now uses ``value`` (a shared agent's own token): never show it."""


@dataclass
class LaunchedSession:
    """What ``open_session`` made: the running transport, where its agent is, the token the
    link uses (the transport's, when it shares an agent), the open client of the session and
    the engine's info.  The caller owns all of it: ``client.close`` and ``transport.stop``."""

    settings: LaunchSettings
    transport: Transport
    agent: AgentEndpoint
    token: bytes
    client: AgentClient
    info: dict[str, Any]
    phases: list[Phase]

    @property
    def endpoint(self) -> Endpoint:
        return self.client.endpoint


async def open_session(settings: LaunchSettings, kernel_id: str, token: bytes, log_path: str,
                       observer: LaunchObserver | None = None, *, session: str = "",
                       keep: float = 0.0, pool: Any = None, label: dict[str, Any] | None = None,
                       resume: str = "") -> LaunchedSession:
    """Start the agent through the transport ``settings`` name, make a link to it and open a
    session with its engine; report each phase to ``observer``.

    ``token`` is the launch's own (used unless the transport shares an agent that has one);
    ``session`` names the session (empty: the agent picks one); ``keep`` is how long the
    agent keeps the session when the link goes (the provisioner's kernel process attaches
    to it after this returns); ``label`` says what the session is (``RKSessions``);
    ``resume``: a detached session named so, or ``resume`` + "-" + anything, is taken
    instead of opening one (a persistent kernel's notebook, back on a new Jupyter server):
    then ``info`` is ``{"resumed": its summary}`` and ``endpoint.session`` its name.
    ``pool`` is the ssh connection pool (default: the process's shared one; the doctor
    passes a private one).  Raises TransportError within bounded time.
    """
    observer = observer or LaunchObserver()
    phases: list[Phase] = []

    def ended(phase: Phase) -> Phase:
        phases.append(phase)
        observer.end(phase)
        return phase

    transport = create_transport(settings, log_path, pool=pool)
    observer.begin("agent", transport, f"transport {transport.name}: starting the agent")
    started = time.monotonic()
    try:
        agent = await transport.start(kernel_id, token)
    except TransportError as exc:
        ended(Phase("agent", time.monotonic() - started, error=exc))
        raise
    ended(Phase("agent", time.monotonic() - started, agent.description,
                timings=dict(getattr(getattr(transport, "lease", None), "timings", None) or {})))
    token = agent.token or token
    observer.secret(token)
    client = AgentClient(Endpoint(
        agent.host, agent.port, token, transport=transport.name,
        description=agent.description, codec=settings.compression, engine=settings.engine,
        engine_options=settings.engine_request(), session=session,
    ), kernel_id, grace=settings.reconnect_grace if session else 0.0, reopen=True)
    # With a grace, a link lost while the engine starts (the SSH connection re-established,
    # the agent replaced) is made again and the start goes on: the start waits, bounded by
    # ENGINE_START_WAIT, instead of failing.
    try:
        observer.begin("link", transport, f"link to {agent.host}:{agent.port}")
        started = time.monotonic()
        for attempt in (1, 2):
            try:
                detail = await asyncio.to_thread(_link, agent, token, settings.compression)
                break
            except LinkError as exc:
                # An agent that had just ended is replaced behind the same port: once more.
                if attempt == 1 and await asyncio.to_thread(transport.replaced,
                                                            settings.agent_start_timeout):
                    continue
                error = await asyncio.to_thread(transport.link_failure, agent, exc)
                ended(Phase("link", time.monotonic() - started, error=error))
                raise error from None
        ended(Phase("link", time.monotonic() - started, detail))
        if resume:
            found = await asyncio.to_thread(_resumable, agent, token, settings.compression,
                                            resume)
            if found is not None:
                client.endpoint.session = found["name"]
                since = time.strftime("%Y-%m-%d %H:%M", time.localtime(found["started"]))
                ended(Phase("engine", 0.0, f"resuming persistent session {found['name']} "
                            f"({found['state']}, In[{found.get('line') or 1}], started "
                            f"{since})"))
                return LaunchedSession(settings, transport, agent, token, client,
                                       {"resumed": found}, phases)
        observer.begin("engine", transport, f"opening session {session or 'of ' + kernel_id}: "
                       f"starting the {settings.engine} engine")
        started = time.monotonic()
        try:
            info = await asyncio.to_thread(client.open, ENGINE_START_WAIT, keep, label)
        except AgentError as exc:
            linked = client.link is not None and not client.down
            client.close()
            if session and not linked:  # the agent may have opened it: nothing may stay
                await asyncio.to_thread(close_session, agent, token, settings.compression,
                                        session)
            if linked:
                error = TransportError(f"the {settings.engine} engine did not start on "
                                       f"{agent.description}: {exc.cause}", exc.fix,
                                       code="engine.start-failed")
            else:  # the link failed now although it worked a moment ago
                error = await asyncio.to_thread(transport.link_failure, agent, exc)
            ended(Phase("engine" if linked else "link", time.monotonic() - started,
                        error=error))
            raise error from None
        codec = client.link.codec if client.link else settings.compression
        queued = (info.get("extra") or {}).get("queued")
        what = (f"{info.get('name', settings.engine)} {info.get('version', '')}" if not queued
                else f"{info.get('name', settings.engine)} queued in Slurm job "
                f"{queued.get('id', '?')} ({queued.get('state')}, {queued.get('reason')}): "
                "the kernel is up, its first cell waits for the job")
        ended(Phase("engine", time.monotonic() - started, f"{what} (codec {codec})"))
    except BaseException:
        await transport.stop()
        raise
    return LaunchedSession(settings, transport, agent, token, client, info, phases)


def close_session(endpoint: AgentEndpoint, token: bytes, codec: str, session: str,
                  restart: bool = False) -> None:
    """Best effort: end a session whose kernel may never have attached to it (``restart``:
    the kernel restarts, so its engine may keep a Slurm job for the next session)."""
    try:
        link = Link.connect(endpoint.host, endpoint.port, token, codec, timeout=5.0)
    except LinkError:
        return
    try:
        link.send(0, packet("RKCloseSession", session, {"restart": restart}))
    except LinkError:
        pass
    link.close()


def list_sessions(endpoint: AgentEndpoint, token: bytes, codec: str,
                  timeout: float = LINK_TIMEOUT) -> list[dict[str, Any]]:
    """The agent's live sessions (``RKSessionList``: each ``Session.summary``), oldest
    first; LinkError when the agent cannot be reached or does not answer in time."""
    link = Link.connect(endpoint.host, endpoint.port, token, codec, timeout=timeout)
    try:
        link.send(0, packet("RKSessions"))
        deadline = time.monotonic() + timeout
        while True:
            channel, reply = link.recv(max(deadline - time.monotonic(), 0.01))
            if channel == 0 and packet_name(reply) == "RKSessionList":
                return [row for row in (reply.args[0] if reply.args else [])
                        if isinstance(row, dict)]
    finally:
        link.close()


def _resumable(endpoint: AgentEndpoint, token: bytes, codec: str,
               prefix: str) -> dict[str, Any] | None:
    """The detached session of ``open_session``'s ``resume``, the most recently active one
    if several (a restart's session and one not yet ended); None if there is none."""
    try:
        rows = list_sessions(endpoint, token, codec)
    except LinkError:
        return None
    mine = [row for row in rows if not row.get("attached") and isinstance(row.get("name"), str)
            and (row["name"] == prefix or row["name"].startswith(prefix + "-"))]
    return max(mine, key=lambda row: row.get("last_active") or 0, default=None)


def _link(agent: AgentEndpoint, token: bytes, codec: str) -> str:
    """Make a link and close it again: the token, the protocol and the codec agreed, or a
    LinkError.  What it found, for the launch log and the doctor."""
    link = Link.connect(agent.host, agent.port, token, codec, timeout=LINK_TIMEOUT)
    link.close()
    agreed = link.negotiated
    detail = (f"token accepted; protocol {agreed.peer_protocol}, codec {agreed.name}, "
              f"agent rk_jupyter {agreed.peer_version}")
    if agreed.peer_version != __version__:
        detail += f" (this side: {__version__})"
    if agreed.name != codec:
        package = split_preference(codec)[0]
        detail += (f"; {codec} was asked for but the agent's Python lacks it (pip install "
                   f"{package} there compresses better)")
    return detail
