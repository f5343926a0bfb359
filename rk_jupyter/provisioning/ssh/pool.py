"""One SSH connection per (SSH client, user, host, port), shared by every kernel of this
Jupyter process (an OpenSSH master or a paramiko transport: ``backend.Connection``).

Each connection carries one agent (per distinct AgentSettings; normally just one) serving
every kernel as its own session, and one local forward to it: each kernel process opens its
own TCP connection to the forward, i.e. its own channel on the shared connection.  Kernels
hold a Lease; the last release ends the agent and closes the connection.  A release for a
restart keeps both for RESTART_GRACE seconds, so the next launch finds them warm.

A lost connection (keepalive unanswered, closed by the server or the network) is not the end
when ``reconnect_grace`` > 0: the pool connects again with back-off for that long, points the
forwards at the new connection without closing their listeners (kernel processes reconnect to
the port they know), checks with a link handshake through each forward that its agent still
runs (it keeps its kernels' sessions meanwhile) and adopts it.  Leases stay alive while this
goes on, so the provisioner does not kill the kernel; they die with a reason saying so when
the grace runs out, or when the agent turns out to be gone.

An agent that ends while its connection lives (killed, the OOM killer, a login node's process
reaper) is replaced, with the same ``reconnect_grace`` > 0: a new agent with the same token
behind the same forward (``_replace_ended``), so that each kernel's client, reconnecting to
the port it knows, finds an agent without its session and opens it again, with a fresh engine
(``client.agent``).  Its engines ended with it (they are its children, on its pipes): what
they held is lost, and the kernels say so.  One agent per connection and settings at a time:
a kernel start that finds the ended agent replaces it the same way, under the same lock.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import secrets
import shlex
import threading
import time
from dataclasses import dataclass, field

from ...link.connection import Link
from ...link.frames import LinkError
from .. import agent_state
from ..errors import TransportError
from .backend import Connection, Forward, connect
from .remote_agent import STOP_GRACE, AgentSettings, RemoteAgent
from .target import SSHTarget

log = logging.getLogger("rk_jupyter.ssh")

RESTART_GRACE = 30.0
WATCH_INTERVAL = 0.5  # seconds between checks of a shared connection (reconnect_grace > 0)
BACKOFF = (0.5, 1.0, 2.0, 4.0)  # seconds between reconnect attempts, then BACKOFF_MAX
BACKOFF_MAX = 5.0


#: Link checks of an agent after a reconnect, and the seconds between them: the first link
#: through a forward just pointed at a new connection can fail while its master settles.
CHECK_ATTEMPTS = (0.0, 0.5, 1.0)


def _check_agent(slot: _Slot, timeout: float) -> str | None:
    """None when the slot's agent answers a link handshake through its forward (tried
    ``CHECK_ATTEMPTS`` times), else the last failure."""
    failure = ""
    for delay in CHECK_ATTEMPTS:
        time.sleep(delay)
        try:
            Link.connect("127.0.0.1", slot.forwarder.port, slot.agent.token, "none",
                         timeout=timeout).close()
            return None
        except LinkError as exc:
            failure = str(exc)
    return failure


def _end_agent(connection: Connection, pid: int, timeout: float) -> bool:
    """End agent ``pid`` on the host if it still runs (SIGTERM: it ends its engines; its
    process group killed after STOP_GRACE); False when no agent runs with that pid."""
    script = (f"ps -o args= -p {pid} 2>/dev/null | grep -Eq 'agent[.]pyz|rk_jupyter[.]agent' "
              f"|| exit 3; kill -TERM {pid}; i=0; "
              f"while kill -0 {pid} 2>/dev/null && [ $i -lt {int(STOP_GRACE * 10)} ]; do "
              "sleep 0.1; i=$((i+1)); done; "
              f"G=$(ps -o pgid= -p {pid} 2>/dev/null | tr -d ' '); "
              f'kill -KILL "-${{G:-{pid}}}" 2>/dev/null || kill -KILL {pid} 2>/dev/null; exit 0')
    try:
        status, _ = connection.run("sh -c " + shlex.quote(script), timeout + 2 * STOP_GRACE)
    except TransportError as exc:
        log.warning("cannot end agent pid %d: %s", pid, exc)
        return False
    return status == 0


def _agent_log(options: ConnectOptions, target: SSHTarget) -> str:
    return os.path.join(options.log_dir,
                        f"rk-ssh-{target.user}@{target.hostname}-{target.port}.log")


@dataclass(frozen=True)
class ConnectOptions:
    """Everything acquire needs besides the target."""

    agent: AgentSettings
    host_key_policy: str = "strict"
    connect_timeout: float = 10.0
    keepalive: float = 15.0
    log_dir: str = "."
    reconnect_grace: float = 0.0  # seconds to re-establish a lost connection (0: do not)
    # Only adopt a persistent agent an earlier server left (``rk-jupyter sessions``): never
    # start one (TransportError code NO_AGENT when there is none).
    adopt_only: bool = False


#: acquire with ``adopt_only`` found no agent to adopt.
NO_AGENT = "sessions.no-agent"


class AgentState:
    """Where a persistent agent listens and its token, in a 0600 file beside the launch logs
    (Jupyter's private runtime directory), one per host and agent settings: how the next
    Jupyter server's pool finds the agent this one let go (``_Slot.let_go``)."""

    def __init__(self, target: SSHTarget, settings: AgentSettings, log_dir: str) -> None:
        key = json.dumps([list(target.key), settings.python, settings.deploy])
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.path = os.path.join(log_dir, f"rk-ssh-agent-{digest}.json")

    def write(self, agent: RemoteAgent) -> None:
        try:
            agent_state.write(self.path, agent.pid, agent.port, agent.token)
        except OSError as exc:
            log.warning("cannot record the persistent agent in %s: %s", self.path, exc)

    def read(self) -> dict | None:
        return agent_state.read(self.path)

    def remove(self) -> None:
        agent_state.remove(self.path)


@dataclass
class _Slot:
    """An agent and the forward to it, with the number of kernels using them."""

    settings: AgentSettings
    agent: RemoteAgent
    forwarder: Forward
    refs: int = 0
    lost: str = ""  # why the agent cannot be used after a reconnect (it was gone)
    gone: str = ""  # the agent was found gone after a reconnect: why (it is replaced)
    replaced: int = 0  # how many agents of this slot ended and were replaced
    last_end: str = ""  # how the last one ended

    def alive(self) -> bool:
        return not self.lost and self.agent.alive() and self.forwarder.alive()

    def stop(self) -> None:
        self.forwarder.close()
        self.agent.stop()

    def end(self) -> None:
        """No kernel of this server uses the agent: stop it, or let a persistent one go on
        (it keeps sessions for notebooks; it ends by itself once it keeps none)."""
        if self.settings.persistent:
            self.forwarder.close()
            self.agent.let_go()
        else:
            self.stop()


@dataclass
class _Shared:
    """A connection (made by the first acquire) and its agents."""

    target: SSHTarget
    options: ConnectOptions | None = None  # the first acquire's, used to reconnect
    connection: Connection | None = None
    slots: list[_Slot] = field(default_factory=list)
    refs: int = 0
    keep_until: float = 0.0  # a restart is under way: reap nothing before this (monotonic)
    setup: threading.Lock = field(default_factory=threading.Lock)
    closed: threading.Event = field(default_factory=threading.Event)
    reconnects: int = 0
    reconnecting_since: float | None = None  # wall clock, for status displays
    failure: str = ""  # the connection is lost for good: why
    agent_end: str = ""  # how the last agent that ended (and was replaced) did

    @property
    def state_path(self) -> str:
        """Where ``publish`` writes the connection's state for the kernels' status displays
        (kernel processes cannot see this pool: it lives in the Jupyter server)."""
        directory = self.options.log_dir if self.options else "."
        t = self.target
        return os.path.join(directory,
                            f"rk-ssh-{t.user}@{t.hostname}-{t.port}-{os.getpid()}.state.json")

    def publish(self, state: str, last_error: str = "", agent_end: str = "") -> None:
        """Write the state (connected, reconnecting, lost) with when it began, and how the
        last agent that ended did (``agent_end``, kept from earlier writes); never raises:
        a status display is not worth failing a connection for."""
        since = self.reconnecting_since if state == "reconnecting" else None
        client = self.connection.description if self.connection else self.target.backend
        self.agent_end = agent_end or self.agent_end
        record = {"target": str(self.target), "client": client, "state": state,
                  "since": since or time.time(), "reconnects": self.reconnects,
                  "last_error": last_error or self.failure, "agent_end": self.agent_end}
        path = self.state_path
        try:
            with open(f"{path}.tmp", "w", encoding="utf-8") as file:
                json.dump(record, file)
            os.replace(f"{path}.tmp", path)
        except OSError as exc:
            log.info("cannot write the connection state to %s: %s", path, exc)

    def unpublish(self) -> None:
        try:
            os.unlink(self.state_path)
        except OSError:
            pass

    def replaces(self, slot: _Slot) -> bool:
        """Whether an ended agent of ``slot`` is (about to be) replaced: the connection
        lives and the pool watches it (``reconnect_grace`` > 0)."""
        return (not slot.lost and not self.failure and not self.closed.is_set()
                and self.options is not None and self.options.reconnect_grace > 0
                and self.connection is not None and self.connection.alive())

    def reconnecting(self) -> bool:
        """The connection is lost and the pool is (or is about to be) re-establishing it."""
        if self.failure or self.closed.is_set() or self.options is None \
                or self.options.reconnect_grace <= 0:
            return False
        return self.reconnecting_since is not None or (
            self.connection is not None and not self.connection.alive())


@dataclass
class Lease:
    """One kernel launch's way to its agent; ``timings`` say what this acquire had to do
    (0.0 for what it found ready: a warm start)."""

    shared: _Shared
    slot: _Slot
    timings: dict[str, float]

    @property
    def port(self) -> int:
        """The local forwarded port."""
        return self.slot.forwarder.port

    @property
    def token(self) -> bytes:
        return self.slot.agent.token

    @property
    def agent(self) -> RemoteAgent:
        return self.slot.agent

    @property
    def state_path(self) -> str:
        """The JSON file with the shared connection's state (see ``_Shared.publish``)."""
        return self.shared.state_path

    def alive(self) -> bool:
        """True while the agent is reachable, and while a lost connection is re-established
        within the grace (the kernel waits meanwhile; it must not be killed)."""
        if self.shared.failure or self.slot.lost:
            return False
        return self.shared.reconnecting() or self.slot.alive() or self.shared.replaces(self.slot)

    def death_reason(self) -> str:
        if reason := self.shared.failure or self.slot.lost:
            return reason
        if reason := self.slot.agent.death_reason():  # not replaced (no reconnect_grace)
            return f"{reason}\nRestart the kernel to start a new agent."
        if not self.slot.forwarder.alive():
            return f"the local forward 127.0.0.1:{self.port} to the agent was closed"
        return ""


class ConnectionPool:
    """The process-wide table of shared connections (thread-safe; calls block)."""

    def __init__(self, restart_grace: float = RESTART_GRACE) -> None:
        self.restart_grace = restart_grace
        self._shared: dict[tuple[str, str, str, int], _Shared] = {}
        self._lock = threading.Lock()

    def connections(self) -> list[Connection]:
        """The live shared connections (for status displays and tests)."""
        with self._lock:
            return [s.connection for s in self._shared.values()
                    if s.connection is not None and s.connection.alive()]

    def acquire(self, target: SSHTarget, options: ConnectOptions) -> Lease:
        """A lease on the agent for ``target``, connecting and starting it if needed.

        Raises TransportError (bounded by the connect and agent start timeouts).
        """
        self._await_reconnect(target)
        with self._lock:
            shared = self._shared.get(target.key)
            # One lost for good (or not watched) is left to its kernels; a new one is made.
            if shared is None or shared.failure or (shared.connection is not None
                                                    and not shared.connection.alive()):
                shared = self._shared[target.key] = _Shared(target, options)
            shared.refs += 1
            shared.keep_until = 0.0  # the restart it was kept for (if any) has come
        timings = {"connect": 0.0, "agent": 0.0}
        try:
            hops = target.hops
            wait = options.connect_timeout * 4 * hops + options.agent.start_timeout
            if not shared.setup.acquire(timeout=wait):
                raise TransportError(f"another kernel's connection to {target} is still being "
                                     f"set up after {wait:g} s", code="ssh.setup-busy")
            try:
                if shared.connection is None:
                    started = time.monotonic()
                    shared.connection = connect(target, options.host_key_policy,
                                                options.connect_timeout, options.keepalive)
                    timings["connect"] = time.monotonic() - started
                    log.info("connected to %s in %.2f s (SSH client: %s)", target,
                             timings["connect"], shared.connection.description)
                    shared.publish("connected")
                    if options.reconnect_grace > 0:
                        threading.Thread(target=self._watch, args=(shared,), daemon=True,
                                         name=f"ssh-pool-watch-{target.hostname}").start()
                else:
                    self._replace_ended(shared)
                slot = self._take_slot(shared, options.agent)
                if slot is None and options.agent.persistent:
                    slot = self._adopt_slot(shared.connection, options)
                    if slot is not None:
                        with self._lock:
                            shared.slots.append(slot)
                            slot.refs += 1
                if slot is None and options.adopt_only:
                    raise TransportError(f"no agent of these settings runs on {target}",
                                         code=NO_AGENT)
                if slot is None:
                    started = time.monotonic()
                    slot = self._start_slot(shared.connection, options)
                    timings["agent"] = time.monotonic() - started
                    with self._lock:
                        shared.slots.append(slot)
                        slot.refs += 1
            finally:
                shared.setup.release()
        except BaseException:
            self._release(shared, None)
            raise
        return Lease(shared, slot, timings)

    def _await_reconnect(self, target: SSHTarget) -> None:
        """A start that comes while the connection to ``target`` is being re-established
        waits for it (within its grace) instead of opening a second connection with a
        second agent: one agent per host connection."""
        with self._lock:
            shared = self._shared.get(target.key)
        if shared is None or not shared.reconnecting():
            return
        assert shared.options is not None
        deadline = time.monotonic() + shared.options.reconnect_grace
        log.info("the connection to %s is being re-established: the start waits for it",
                 target)
        while shared.reconnecting() and time.monotonic() < deadline \
                and not shared.closed.wait(WATCH_INTERVAL):
            pass

    def release(self, lease: Lease, keep: bool = False) -> None:
        """The kernel is gone.  ``keep`` (a restart): keep what is unused for a while."""
        self._release(lease.shared, lease.slot, keep)

    # -- internals ------------------------------------------------------------------------

    def _watch(self, shared: _Shared) -> None:
        """Re-establish the shared connection whenever it is lost, until it is closed or a
        reconnect fails for good."""
        while not shared.closed.wait(WATCH_INTERVAL):
            connection = shared.connection
            if connection is not None and not connection.alive():
                if not self._reconnect(shared, connection):
                    return
                continue
            if shared.setup.acquire(timeout=WATCH_INTERVAL):  # not beside a kernel's start
                try:
                    self._replace_ended(shared)
                finally:
                    shared.setup.release()

    def _replace_ended(self, shared: _Shared) -> None:
        """Start a new agent, with the same token and behind the same forward, for each slot
        whose agent ended while the connection lives and kernels use it; the caller holds
        ``shared.setup``.  A failure marks the slot lost (its kernels then end, saying why)."""
        with self._lock:
            ended = [slot for slot in shared.slots
                     if slot.refs > 0 and not slot.agent.alive() and shared.replaces(slot)]
        for slot in ended:
            connection = shared.connection
            assert connection is not None
            reason, slot.gone = slot.gone or slot.agent.death_reason(), ""
            slot.last_end = reason
            slot.replaced += 1
            shared.publish("connected", agent_end=reason)
            log.warning("%s; starting a new agent for the %d kernel(s) that used it", reason,
                        slot.refs)
            agent = RemoteAgent(connection, slot.settings, slot.agent.token,
                                slot.agent.log_path)
            try:
                agent.start()
            except TransportError as exc:
                slot.lost = f"{reason}; a new agent could not be started: {exc}"
                log.error("%s", slot.lost)
                continue
            slot.forwarder.redirect(("127.0.0.1", agent.port))
            slot.agent = agent
            if slot.settings.persistent and shared.options is not None:
                AgentState(shared.target, slot.settings, shared.options.log_dir).write(agent)
            log.info("agent pid %d on %s replaces the one that ended; kernels open their "
                     "sessions again on it", agent.pid, shared.target)

    def _reconnect(self, shared: _Shared, lost: Connection) -> bool:
        """Connect again with back-off within the grace, then take the agents over; False
        when the grace ran out (``shared.failure`` says why) or the pool closed it."""
        assert shared.options is not None
        options, target = shared.options, shared.target
        why = lost.death_reason()
        started = time.monotonic()
        deadline = started + options.reconnect_grace
        shared.reconnecting_since = time.time()
        shared.publish("reconnecting", why)
        log.warning("%s; re-establishing it (for up to %g s)", why, options.reconnect_grace)
        delays = iter(BACKOFF)
        last_error = why
        while not shared.closed.is_set() and (remaining := deadline - time.monotonic()) > 0:
            try:
                connection = connect(target, options.host_key_policy,
                                     min(options.connect_timeout, remaining), options.keepalive)
            except Exception as exc:  # noqa: BLE001 - one failed attempt must not end the watch
                last_error = str(exc) or type(exc).__name__
                log.info("reconnect to %s failed: %s", target, last_error)
                shared.publish("reconnecting", last_error)
                shared.closed.wait(min(next(delays, BACKOFF_MAX), remaining))
                continue
            if shared.closed.is_set():
                connection.close()
                return False
            if self._take_over(shared, connection):
                lost.close()
                shared.reconnects += 1
                shared.reconnecting_since = None
                shared.publish("connected")
                log.info("re-established the SSH connection to %s after %.1f s",
                         target, time.monotonic() - started)
                return True
            last_error = connection.death_reason() or "the new connection failed at once"
            connection.close()
        if shared.closed.is_set():
            return False
        shared.failure = (f"the SSH connection to {target} was lost ({why}) and could not be "
                          f"re-established for {options.reconnect_grace:g} s "
                          f"(reconnect_grace); last error: {last_error}")
        shared.reconnecting_since = None
        shared.publish("lost")
        log.error("%s", shared.failure)
        return False

    def _take_over(self, shared: _Shared, connection: Connection) -> bool:
        """Point the forwards at ``connection`` and adopt each agent still running there;
        a gone agent marks its slot lost.  False if the new connection itself failed."""
        assert shared.options is not None
        timeout = shared.options.connect_timeout
        with self._lock:
            slots = list(shared.slots)
        for slot in slots:
            slot.forwarder.retarget(connection)
            failure = _check_agent(slot, timeout)
            if failure is not None:
                if not connection.alive():
                    return False
                # Replaced below, once the connection is the shared one (_replace_ended);
                # one that still runs but does not answer is ended first: one agent per
                # host connection (twenty kernels' engines twice over, otherwise).
                ended = _end_agent(connection, slot.agent.pid, timeout)
                slot.gone = (f"the SSH connection to {shared.target} was re-established, but "
                             f"the agent (pid {slot.agent.pid}) " + (
                                 f"did not answer through it ({failure}) and was ended"
                                 if ended else
                                 f"was gone ({failure}; did the remote host restart, or did "
                                 "it end, with no session yet, when the connection "
                                 "dropped?)"))
                log.warning("%s", slot.gone)
                continue
            try:
                slot.agent.adopt(connection)
            except TransportError as exc:
                log.info("cannot watch the agent over the new connection: %s", exc)
                return False
            log.info("agent pid %d on %s adopted after the reconnect", slot.agent.pid,
                     shared.target)
        shared.connection = connection
        if shared.setup.acquire(timeout=WATCH_INTERVAL):  # not beside a kernel's start
            try:
                self._replace_ended(shared)
            finally:
                shared.setup.release()
        return True

    def _take_slot(self, shared: _Shared, settings: AgentSettings) -> _Slot | None:
        with self._lock:
            for slot in shared.slots:
                if slot.settings == settings and slot.alive():
                    slot.refs += 1
                    return slot
            return None

    def _start_slot(self, connection: Connection, options: ConnectOptions) -> _Slot:
        target = connection.target
        agent = RemoteAgent(connection, options.agent, secrets.token_urlsafe(32).encode(),
                            _agent_log(options, target))
        agent.start()
        try:
            forwarder = connection.forward(("127.0.0.1", agent.port), options.connect_timeout)
        except OSError as exc:
            agent.stop()
            raise TransportError(f"cannot listen on a local port for the forward: {exc}",
                                 code="ssh.forward-listen") from None
        if options.agent.persistent:
            AgentState(target, options.agent, options.log_dir).write(agent)
        return _Slot(options.agent, agent, forwarder)

    def _adopt_slot(self, connection: Connection, options: ConnectOptions) -> _Slot | None:
        """The persistent agent an earlier Jupyter server left on the host (``AgentState``),
        if it still runs and holds its token: a forward to it and a watcher of its pid.
        None (and the stale record removed) when there is none."""
        target = connection.target
        state = AgentState(target, options.agent, options.log_dir)
        found = state.read()
        if found is None:
            return None
        try:
            forwarder = connection.forward(("127.0.0.1", found["port"]),
                                           options.connect_timeout)
        except OSError:
            return None
        try:
            Link.connect("127.0.0.1", forwarder.port, found["token"], "none",
                         timeout=options.connect_timeout).close()
            agent = RemoteAgent(connection, options.agent, found["token"],
                                _agent_log(options, target))
            agent.adopt(connection, {"pid": found["pid"], "port": found["port"]})
        except (LinkError, TransportError) as exc:
            log.info("the persistent agent recorded in %s is gone (%s)", state.path, exc)
            forwarder.close()
            state.remove()
            return None
        log.info("adopted persistent agent pid %d on %s (left by an earlier Jupyter server)",
                 found["pid"], target)
        return _Slot(options.agent, agent, forwarder)

    def _release(self, shared: _Shared, slot: _Slot | None, keep: bool = False) -> None:
        with self._lock:
            shared.refs -= 1
            if slot is not None:
                slot.refs -= 1
            # Kept for the restart's next launch only if nothing uses it now: that launch may
            # have leased it already (``KernelStart.open_next``), and a keep set after it
            # came would hold the agent and the connection restart_grace past the last end.
            keep = keep and shared.refs <= 0
            if keep:
                shared.keep_until = time.monotonic() + self.restart_grace
        if keep:
            timer = threading.Timer(self.restart_grace + 0.1, self._reap, (shared,))
            timer.daemon = True
            timer.start()
        else:
            self._reap(shared)

    def _reap(self, shared: _Shared) -> None:
        """Stop the agents no kernel uses; close the connection when no kernel uses it."""
        with self._lock:
            if time.monotonic() < shared.keep_until:
                return  # the restart's own timer comes back later
            idle = [slot for slot in shared.slots if slot.refs <= 0]
            shared.slots = [slot for slot in shared.slots if slot.refs > 0]
            close = shared.refs <= 0
            if close:
                shared.closed.set()
            if close and self._shared.get(shared.target.key) is shared:
                del self._shared[shared.target.key]
        for slot in idle:
            slot.end()
        if close:
            shared.unpublish()
        if close and shared.connection is not None:
            shared.connection.close()
            log.info("closed the SSH connection to %s (no kernel uses it)", shared.target)

    def shutdown(self) -> None:
        """Stop every agent and close every connection, whoever still uses them.

        Runs at interpreter exit: a Jupyter server that exits without shutting its kernels
        down (JupyterHub stops servers with SIGINT, which jupyter_server ignores without a
        terminal) must not leave engines on remote hosts for the reconnect grace — its
        kernels could not reach their agents anyway, the forwards live in this process."""
        with self._lock:
            everything = list(self._shared.values())
            self._shared.clear()
        for shared in everything:
            shared.closed.set()
            shared.unpublish()
            for slot in shared.slots:
                slot.end()
            if shared.connection is not None:
                shared.connection.close()


POOL = ConnectionPool()
atexit.register(POOL.shutdown)
