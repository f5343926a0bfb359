"""The kernel's end of the link: one session on an agent, with a reader thread.

Everything here is transport-agnostic: the provisioner hands the kernel an endpoint (a local
agent, or a port forwarded through SSH) and a token; this module only speaks the link.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import RKError
from ..link.connection import Link
from ..link.frames import FrameError, LinkError, LinkTimeout
from ..link.launcher import ENGINE_START_WAIT, LINK_TIMEOUT
from ..link.outbox import ACK, Outbox
from ..link.packets import (
    END_OF,
    ENDS_ANY_REQUEST,
    NO_SESSION_ERROR,
    error_code,
    packet,
    packet_name,
)

log = logging.getLogger("rk_jupyter")

SESSION_CHANNEL = 1
#: How often a request waiting for its answer looks whether the link went down.
REQUEST_POLL = 0.25

# AgentError codes of this side (the agent's own come with its RKError packets, see
# rk_jupyter.link.packets): what a front end decides on.
UNREACHABLE = "agent.unreachable"  # no link to the agent (refused, wrong token, timeout)
NO_ANSWER = "agent.no-answer"  # the agent did not answer a request in time
UNEXPECTED = "agent.unexpected"  # the agent answered with something we cannot read
NOT_CONNECTED = "session.not-connected"  # used before open or after close
LINK_DOWN = "session.link-down"  # the link ended for good: the session is lost to us
AGENT_GONE = "session.agent-gone"  # the agent's process ended (the transport saw it)
RECONNECTING = "session.reconnecting"  # the link is being re-established
ENGINE_ENDED = "engine.ended"  # the engine ended serving a request (the session goes on)


#: Requests that an agent answers with the end of an evaluation; and every request that a new
#: session can answer when the old one never got it.
_EVALUATIONS = frozenset(END_OF)
_REQUESTS = _EVALUATIONS | {"RKComplete", "RKInspect", "RKEngineState"}
_ANY_END = frozenset(END_OF.values()) | ENDS_ANY_REQUEST


class AgentError(RKError):
    """The agent or its engine cannot serve us; the message names the cause, the code is
    one of the constants above or an RKError packet's code."""

    code = "agent.error"


class SessionLost(AgentError):
    """The session cannot go on (link down, agent gone): a front end tells the
    user to start again; nothing more comes on this client."""

    code = LINK_DOWN


@dataclass
class LinkDown:
    """Queued in place of a packet when the link ends, so that no waiter waits forever."""

    reason: str


@dataclass
class TakenOver:
    """What an attach says of the session as an earlier kernel left it: the evaluations
    (packet names, oldest first) whose ends that kernel did not acknowledge — running,
    queued, or ended while it was away; their output comes again, and a kernel process that
    takes the session over shows it (``Evaluator.adopt``) — the engine's last In[n], and how
    many packets the agent forgot (it keeps ``MAX_UNACKED_BYTES`` of them)."""

    owed: list[str] = field(default_factory=list)
    line: int | None = None
    forgotten: int = 0


@dataclass
class Endpoint:
    """Where the kernel finds its agent, as the provisioner describes it."""

    host: str
    port: int
    token: bytes
    transport: str = "local"
    description: str = ""
    codec: str = "brotli"
    engine: str = "mathics"
    engine_options: dict[str, Any] = field(default_factory=dict)
    session: str = ""
    attach: bool = False  # True: the session exists (the provisioner opened it); attach to it


class AgentClient:
    """A session on an agent.  ``next_packet`` is for the kernel's shell thread;
    ``send``/``interrupt``/``ping``/``close`` may be called from any thread.

    With ``grace`` > 0 a dropped link is not the end: the reader reconnects to the same
    endpoint with back-off for up to ``grace`` seconds, attaches to the session again and
    both sides resend what the other has not seen (see the counting rule in
    ``rk_jupyter.link.packets``); a heartbeat notices a silent network within
    ``3 * heartbeat`` seconds.  A running cell simply waits meanwhile.

    With ``reopen``, an agent found without our session when we reconnect (the agent ended
    and the launcher started another: see ``provisioning.ssh.pool``) gets it opened again,
    with a fresh engine (``_reopen``); the evaluations it took with it end with
    ``RKEngineDied`` and the next one is told by ``RKEngineRestarted``, as when an engine
    ends, naming ``agent_end()``, the launcher's word on how the agent ended.
    """

    def __init__(self, endpoint: Endpoint, kernel_id: str = "", grace: float = 0.0,
                 heartbeat: float = 5.0, reopen: bool = False,
                 agent_end: Callable[[], str] | None = None) -> None:
        self.endpoint = endpoint
        self.reopen = reopen
        self.agent_end = agent_end
        self.kernel_id = kernel_id
        self.grace = grace
        self.heartbeat = heartbeat
        self.link: Link | None = None
        self.engine_info: dict[str, Any] = {}
        self.engine_restarts = 0
        self.last_engine_end = ""
        # The engine is known to have ended and the agent starts a fresh one with the next
        # request that needs it (a front end then takes no line of its own: see the kernel).
        self.engine_gone = False
        self.started = time.time()
        self.last_rtt: float | None = None
        self.down: str | None = None
        self.reconnects = 0
        self.keep = 0.0
        self.reconnecting_since: float | None = None
        self._outbox = Outbox()  # what we sent and received, counted; under _send_lock
        # Evaluations sent and not yet ended, oldest first: (their count, packet name); a
        # session opened again answers each the old one took with RKEngineDied.
        self._unanswered: collections.deque[tuple[int, str]] = collections.deque()
        self._ack_due = False  # the agent has not been told about what we received lately
        self._send_lock = threading.Lock()
        self._closing = False
        self._down_at = 0  # how many packets we had sent when the link last went down
        self._attached: dict[str, Any] = {}  # what the last attach of _reconnect said
        # Why our session is being opened again on a new agent, until it is (``_reopen``).
        self._replacing: AgentError | None = None
        self._last_heard = time.monotonic()
        # What the last attach said of the session's earlier kernel (``open``'s attach: a
        # persistent session this kernel process takes over).
        self.taken_over = TakenOver()
        self._packets: queue.Queue[Any] = queue.Queue()
        self._pongs: dict[int, threading.Event] = {}
        self._ping_ids = itertools.count(1)

    def open(self, timeout: float = ENGINE_START_WAIT, keep: float = 0.0,
             label: dict[str, Any] | None = None) -> dict[str, Any]:
        """Connect, authenticate and attach to the endpoint's session, or start a new one
        (named ``endpoint.session`` if set) with its engine; return the engine's info.

        ``keep`` is how long the agent keeps the session when this link goes; ``label`` what
        a new session is (a persistent kernel's notebook: ``RKSessions`` shows it).
        Raises AgentError naming the cause (unreachable agent, wrong token, engine failure).
        """
        ep = self.endpoint
        self.keep = keep
        if ep.attach:
            try:
                self.link = self._connect(LINK_TIMEOUT)
                info = self._attach(self.link, timeout)
            except AgentError as exc:
                # The agent is being replaced, or the connection re-established: with a
                # grace, try again (and open the session anew where ``reopen`` allows).
                if self.grace <= 0 or (exc.code == NO_SESSION_ERROR and not self.reopen):
                    raise
                lost = self._reconnect(str(exc), min(self.grace, timeout))
                if lost is not None:
                    raise AgentError(lost, code=exc.code) from None
                info = self._attached  # empty when it was opened anew
            self._start_threads()
            if info.get("name"):
                self.engine_info = info
                return info
            return self._wait_ready(timeout)
        self.link = self._connect(LINK_TIMEOUT)
        request = {"channel": SESSION_CHANNEL, "keep": keep, "kernel": self.kernel_id}
        request.update(engine=ep.engine, options=ep.engine_options)
        if label:
            request["label"] = label
        if ep.session:
            request["session"] = ep.session
        self._start_threads()
        self.link.send(0, packet("RKOpenSession", request))
        return self._wait_ready(timeout)

    def _connect(self, timeout: float) -> Link:
        ep = self.endpoint
        try:
            return Link.connect(ep.host, ep.port, ep.token, ep.codec, timeout=timeout,
                                path="local" if ep.transport == "local" else "remote")
        except LinkError as exc:
            raise AgentError(str(exc), code=UNREACHABLE) from None

    def _start_threads(self) -> None:
        threading.Thread(target=self._read, name="link-reader", daemon=True).start()
        if self.grace > 0 and self.heartbeat > 0:
            threading.Thread(target=self._beat, name="link-heartbeat", daemon=True).start()

    def _wait_ready(self, timeout: float) -> dict[str, Any]:
        reply = self.next_packet(timeout)
        name = packet_name(reply)
        if name == "RKSessionReady":
            self.engine_info = reply.args[0]
            self.started = time.time()
            return self.engine_info
        if name == "RKError":
            raise AgentError(reply.args[0], code=error_code(reply))
        if isinstance(reply, LinkDown):
            raise SessionLost(
                f"the link to the agent ended while the engine started: {reply.reason}"
            )
        if reply is None:
            raise AgentError(f"the engine did not start within {timeout:.0f} s", code=NO_ANSWER)
        raise AgentError(f"unexpected answer from the agent: {reply!r}", code=UNEXPECTED)

    def _attach(self, link: Link, timeout: float) -> dict[str, Any]:
        """Attach ``link`` to our session (before its reader runs); resend what the agent
        lacks.  Returns the RKAttached info; raises AgentError if the session is gone."""
        info, seen, acknowledged = self._ask_attach(link, self._outbox.received, timeout)
        with self._send_lock:
            self._outbox.catch_up(acknowledged)
            for pkt in self._outbox.resend(seen):
                link.send(SESSION_CHANNEL, pkt)
            self.link = link
        return info

    def _ask_attach(self, link: Link, received: int,
                    timeout: float) -> tuple[dict[str, Any], int, int]:
        """Send RKAttachSession for our session, saying we have ``received`` of its packets;
        (the RKAttached info, how many of ours it has, how many of its own any link
        acknowledged).  AgentError for a refusal (its code) or no answer within ``timeout``."""
        link.send(0, packet("RKAttachSession", {
            "channel": SESSION_CHANNEL, "session": self.endpoint.session,
            "received": received, "keep": self.keep, "kernel": self.kernel_id,
            "heartbeat": self.heartbeat if self.grace > 0 else 0,
        }))
        try:
            _, reply = link.recv(timeout)
        except LinkError as exc:
            raise AgentError(f"the agent did not answer the attach: {exc}",
                             code=NO_ANSWER) from None
        name = packet_name(reply)
        if name == "RKError":
            raise AgentError(reply.args[0], code=error_code(reply))
        if name != "RKAttached" or not isinstance(reply.args[0], dict):
            raise AgentError(f"unexpected answer to an attach: {reply!r}", code=UNEXPECTED)
        info = dict(reply.args[0])
        self.taken_over = TakenOver(info.pop("owed", None) or [], info.pop("line", None),
                                    info.pop("forgotten", 0) or 0)
        return info, info.pop("received", 0), info.pop("acknowledged", 0)

    def send(self, pkt: Any) -> None:
        """Send a session packet (with our acknowledgement, when one is due); while
        reconnecting it waits in the resend buffer."""
        if self.down:
            raise SessionLost(self.down)
        with self._send_lock:
            self._record(pkt)
            link = self.link
            if link is None:
                raise AgentError("not connected", code=NOT_CONNECTED)
            try:
                if self._ack_due:
                    self._ack_due = False
                    link.send_many(SESSION_CHANNEL, [self._outbox.ack(), pkt])
                else:
                    link.send(SESSION_CHANNEL, pkt)
            except LinkError as exc:
                if self.grace <= 0:
                    raise SessionLost(f"the link to the agent is down: {exc}") from None

    def _record(self, pkt: Any) -> None:
        """Count and keep ``pkt`` (under the send lock); an evaluation is also unanswered
        until its end comes (``_answered``)."""
        self._outbox.record(pkt)
        name = packet_name(pkt)
        if name in _EVALUATIONS:
            self._unanswered.append((self._outbox.sent, name))

    def _answered(self, name: str) -> None:
        """A packet that may end the oldest unanswered evaluation came (reader thread)."""
        with self._send_lock:
            if self._unanswered and (name == END_OF[self._unanswered[0][1]]
                                     or name in ENDS_ANY_REQUEST):
                self._unanswered.popleft()

    def acknowledge(self) -> None:
        """Tell the agent now what arrived (rather than with the next request or heartbeat):
        a kernel that takes over the session after this one is killed is sent again only
        what this one did not see.  Best effort: a link that is down acknowledges on attach."""
        with self._send_lock:
            link = self.link
            if not self._ack_due or link is None:
                return
            self._ack_due = False
            try:
                link.send(SESSION_CHANNEL, self._outbox.ack())
            except LinkError:
                pass

    def next_packet(self, timeout: float) -> Any:
        """The next packet of our session, a LinkDown, or None after ``timeout`` s."""
        try:
            return self._packets.get(timeout=timeout)
        except queue.Empty:
            return None

    @property
    def engine_queued(self) -> bool:
        """The engine waits in a scheduler's queue (its session is ready, it is not): the
        next evaluation waits for it, so a front end takes no line of its own meanwhile."""
        queued = (self.engine_info.get("extra") or {}).get("queued")
        return isinstance(queued, dict) and queued.get("state") == "PENDING"

    def engine_restarted(self, info: dict[str, Any]) -> None:
        """The agent replaced an engine that ended (RKEngineRestarted): keep what status
        shows."""
        self.engine_info = {k: v for k, v in info.items() if k not in ("restarts", "cause")}
        self.engine_restarts = int(info.get("restarts", self.engine_restarts + 1))
        self.last_engine_end = str(info.get("cause", ""))
        self.engine_gone = False

    def request(self, pkt: Any, answer: str, timeout: float) -> Any:
        """Send ``pkt`` and return the argument of the first ``answer`` packet; AgentError
        when the agent refuses it (RKError), does not answer within ``timeout`` s, or the
        link goes down meanwhile (``RECONNECTING``: a request is not worth waiting for a
        network or an agent that is coming back)."""
        self.send(pkt)
        deadline = time.monotonic() + timeout
        notices: list[Any] = []  # RKEngineRestarted: the next cell says it, not a Tab
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                if self.reconnecting_since is not None:
                    raise AgentError("the link to the agent is being re-established",
                                     code=RECONNECTING)
                reply = self.next_packet(min(remaining, REQUEST_POLL))
                if reply is None:
                    continue
                if isinstance(reply, LinkDown):
                    raise SessionLost(reply.reason)
                name = packet_name(reply)
                if name == answer:
                    return reply.args[0] if reply.args else None
                if name == "RKError":
                    raise AgentError(str(reply.args[0]) if reply.args else "refused",
                                     code=error_code(reply))
                if name == "RKEngineDied":
                    self.engine_gone = True
                    raise AgentError(str(reply.args[0]) if reply.args else "the engine ended",
                                     code=ENGINE_ENDED)
                if name == "RKEngineRestarted":
                    self.engine_restarted(reply.args[0] if reply.args else {})
                    notices.append(reply)
        finally:
            self._put_back(notices)
        raise AgentError(f"no {answer} from the agent within {timeout:.0f} s", code=NO_ANSWER)

    def _put_back(self, packets: list[Any]) -> None:
        """Queue ``packets`` again, in order, ahead of what came after them."""
        if packets:
            with self._packets.mutex:
                self._packets.queue.extendleft(reversed(packets))
                self._packets.not_empty.notify()

    def engine_state(self, timeout: float = 2.0) -> dict[str, Any]:
        """The engine's RKEngineStatus (state, memory, limit, restarts, last end), asked now;
        AgentError if it does not come within ``timeout`` s.  Packets of other requests that
        arrive meanwhile are put back, in order, for whoever waits for them."""
        self.send(packet("RKEngineState"))
        deadline = time.monotonic() + timeout
        others: list[Any] = []
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                reply = self.next_packet(remaining)
                if packet_name(reply) == "RKEngineStatus":
                    state = dict(reply.args[0]) if reply.args else {}
                    self.engine_gone = self.engine_gone or state.get("state") == "ended"
                    return state
                if reply is not None:
                    others.append(reply)
                    if isinstance(reply, LinkDown):
                        raise SessionLost(reply.reason)
        finally:
            self._put_back(others)
        raise AgentError(f"the agent did not tell the engine's state within {timeout:g} s",
                         code=NO_ANSWER)

    def interrupt(self) -> None:
        self.send(packet("RKInterrupt"))

    def ping(self, timeout: float = 5.0) -> float:
        """Round-trip time to the agent in seconds; raises AgentError on timeout."""
        link = self.link
        if self.down:
            raise SessionLost(self.down)
        if self.reconnecting_since is not None:
            raise AgentError("reconnecting to the agent", code=RECONNECTING)
        if link is None:
            raise AgentError("not connected", code=NOT_CONNECTED)
        ident = next(self._ping_ids)
        event = threading.Event()
        self._pongs[ident] = event
        start = time.perf_counter()
        try:
            link.send(0, packet("RKPing", ident))
            if not event.wait(timeout):
                raise AgentError(f"the agent did not answer a ping within {timeout:.0f} s",
                                 code=NO_ANSWER)
        except LinkError as exc:
            raise AgentError(f"the link to the agent is down: {exc}", code=LINK_DOWN) from None
        finally:
            self._pongs.pop(ident, None)
        self.last_rtt = time.perf_counter() - start
        return self.last_rtt

    def close(self, end_session: bool = True, restart: bool = False) -> None:
        """Close the link, ending the session (and its engine) unless ``end_session`` is
        False, in which case the agent keeps it as long as it was opened to; idempotent.
        ``restart``: the kernel restarts (the engine may keep its Slurm job for the next)."""
        self._closing = True
        if self.link is None:
            return
        link, self.link = self.link, None
        try:
            if end_session:
                link.send(SESSION_CHANNEL, packet("RKTerminate", {"restart": restart})
                          if restart else packet("RKTerminate"))
            else:
                with self._send_lock:
                    link.send(SESSION_CHANNEL, self._outbox.ack())
        except LinkError:
            pass
        link.close()

    def _read(self) -> None:
        """The reader thread: every packet of the link onto the queue, reconnects, and a
        LinkDown at the end, whatever ended it — a bug included: a reader that died without
        one would leave every later cell waiting for ever."""
        try:
            self._read_links()
        except Exception as exc:
            log.exception("the link reader failed")
            self.down = (f"the kernel's link reader failed ({exc!r}); this is a bug in "
                         "rk_jupyter: the kernel's log shows where; restart the kernel")
            self._packets.put(LinkDown(self.down))

    def _read_links(self) -> None:
        reason = ""
        while True:
            link = self.link
            if link is None:
                break
            try:
                self._read_link(link)
            except FrameError as exc:
                reason = f"the agent sent a malformed frame ({exc}); the link was closed"
                link.close()
            except LinkError as exc:
                reason = f"the link to the agent ended: {exc}"
            if self._closing:
                break
            with self._send_lock:
                self._down_at = self._outbox.sent
            log.info("%s; reconnecting", reason)
            started = time.monotonic()
            lost = self._reconnect(reason)
            if lost is not None:
                log.warning("the session is lost: %s", lost)
                reason = lost
                break
            log.info("attached again after %.1f s", time.monotonic() - started)
        self.down = reason or "the link was closed"
        self._packets.put(LinkDown(self.down))

    def _read_link(self, link: Link) -> None:
        while True:
            channel, expr = link.recv(timeout=None)
            self._last_heard = time.monotonic()
            name = packet_name(expr)
            if channel == 0:
                if name == "RKPong":
                    event = self._pongs.get(expr.args[0] if expr.args else None)
                    if event:
                        event.set()
                else:
                    self._packets.put(expr)
            elif name == ACK:
                with self._send_lock:  # send changes the kept packets too
                    self._outbox.take(expr)
            else:
                self._outbox.take(expr)  # counted: this reader thread alone writes the count
                if name in _ANY_END:
                    self._answered(name)
                self._packets.put(expr)
                # Acknowledged with the next request or heartbeat, not here: this thread's
                # send would compete with the shell thread taking the packet just queued.
                # Every packet, not only a cell's end: a kernel that takes over a persistent
                # session after this one is gone is sent again only what was not
                # acknowledged, a heartbeat's worth of a running cell's output at most.
                self._ack_due = True

    def _reconnect(self, reason: str, within: float | None = None) -> str | None:
        """Reconnect and attach again within the grace period (or ``within`` s): None when
        attached again, else why the session is lost (``reason``, or the agent's word that
        it has ended)."""
        if self.grace <= 0 or not self.endpoint.session:
            return reason
        self.reconnecting_since = time.time()
        deadline = time.monotonic() + (self.grace if within is None else within)
        # A client that can open its session again never gives up on its own: past the grace
        # the agent has ended the session, and a fresh one is opened once the agent is
        # reachable again; until then requests answer at once (``request``) and the
        # launcher ends the kernel if its connection is lost for good.
        bounded = within is not None or not self.reopen
        delays = iter((0.1, 0.25, 0.5, 1.0, 2.0))
        while not self._closing and (not bounded or time.monotonic() < deadline):
            left = max(deadline - time.monotonic(), 0.1) if bounded else 10.0
            time.sleep(min(next(delays, 5.0), left))
            try:
                link = self._connect(min(10.0, left))
            except AgentError:
                continue
            try:
                if self._replacing is not None:  # a session we opened again, link lost
                    self._attached = self._attach_reopened(link)
                else:
                    self._attached = self._attach(link, 10.0)
            except AgentError as exc:
                if exc.code != NO_SESSION_ERROR:
                    link.close()
                    continue
                if not self.reopen:  # it ended: waiting longer brings nothing
                    link.close()
                    self.reconnecting_since = None
                    return str(exc)
                try:
                    self._attached = {}
                    self._reopen(link, exc)
                except AgentError as again:  # refused: the engine cannot start there
                    link.close()
                    self.reconnecting_since = None
                    return f"{exc}; opening it again failed: {again}"
                except LinkError:  # lost meanwhile: attach to what it opened, or open again
                    link.close()
                    continue
            except LinkError:
                link.close()
                continue
            self.reconnects += 1
            self.reconnecting_since = None
            self._last_heard = time.monotonic()
            return None
        self.reconnecting_since = None
        return reason

    def _reopen(self, link: Link, gone: AgentError) -> None:
        """Open our session again on ``link``'s agent, which lacks it, with a fresh engine (on
        the reader thread, before it reads the new link), then ``_reopened``.  Raises
        AgentError when the agent refuses (the engine cannot start), LinkError when the link
        goes down meanwhile: the next attempt then attaches to the session opened here
        (``_replacing`` remembers why it is new)."""
        if self._replacing is None:
            self._replacing = gone
        ep = self.endpoint
        log.info("the agent lacks session %s (%s): opening it again", ep.session, gone.cause)
        link.send(0, packet("RKOpenSession", {
            "channel": SESSION_CHANNEL, "keep": self.keep, "kernel": self.kernel_id,
            "engine": ep.engine, "options": ep.engine_options, "session": ep.session}))
        # An engine may take long to start (twenty at once on two cores: a minute), while a
        # network may go silent meanwhile: this link is not yet the heartbeat's, so it is
        # pinged here, and a silence of three beats ends the wait (LinkError: try again).
        beat = self.heartbeat if self.heartbeat > 0 else 5.0
        deadline = time.monotonic() + ENGINE_START_WAIT
        heard = time.monotonic()
        while True:
            try:
                _, reply = link.recv(min(beat, max(deadline - time.monotonic(), 0.1)))
            except LinkTimeout:
                now = time.monotonic()
                if now >= deadline:
                    raise
                if now - heard > 3 * beat:
                    raise LinkError("the link went silent while the engine started") from None
                link.send(0, packet("RKPing", 0))
                continue
            heard = time.monotonic()
            name = packet_name(reply)
            if name == "RKSessionReady":
                break
            if name == "RKError":
                raise AgentError(str(reply.args[0]), code=error_code(reply))
        info = dict(reply.args[0]) if reply.args and isinstance(reply.args[0], dict) else {}
        self._reopened(link, info, reply)

    def _attach_reopened(self, link: Link) -> dict[str, Any]:
        """Attach to the session a lost link had opened again (``_reopen``): it counts from
        its own start, not from our old session's packets, which are not sent to it."""
        info, _, acknowledged = self._ask_attach(link, 0, 10.0)
        self._reopened(link, info, None, acknowledged)  # its start is sent again by itself
        return info

    def _reopened(self, link: Link, info: dict[str, Any], ready: Any,
                  acknowledged: int = 0) -> None:
        """The session is open again on ``link``: what the old one owed us is answered here.
        Each evaluation it may have taken ends with RKEngineDied, then RKEngineRestarted says
        why once; the requests sent after the link went down never reached it and go to the
        new session.  ``ready``: the new session's RKSessionReady when it came here."""
        gone, self._replacing = self._replacing, None
        opening = not self.engine_info  # still opening: the session's start is the answer
        ended = self.agent_end() if self.agent_end else ""
        cause = (f"the agent ended ({ended}) and a new one was started" if ended else
                 f"the agent no longer had this kernel's session "
                 f"({gone.cause if gone else 'it ended'})")
        with self._send_lock:
            pending = [] if opening else self._outbox.pending()
            # Every evaluation the old session may have taken and not answered, also one it
            # acknowledged on an attach before it ended (those are no longer pending).
            for count, _ in ([] if opening else self._unanswered):
                if count <= self._down_at:
                    self._packets.put(packet(
                        "RKEngineDied", f"{cause}: this evaluation was lost with it", False))
            self._unanswered.clear()
            if opening and ready is not None:
                self._packets.put(ready)
            elif not opening:
                self._packets.put(packet("RKEngineRestarted", {
                    **info, "restarts": self.engine_restarts + 1, "cause": cause}))
            self._outbox = Outbox()
            self._outbox.catch_up(acknowledged)
            if ready is not None:
                self._outbox.take(ready)  # the new session's first packet
            for count, pkt in pending:
                if count > self._down_at and packet_name(pkt) in _REQUESTS:
                    self._record(pkt)
                    link.send(SESSION_CHANNEL, pkt)
            self.link = link

    def _beat(self) -> None:
        """Ping now and then; a link silent for three beats is closed, so the reader
        reconnects instead of waiting on a network that no longer delivers."""
        while not self._closing and not self.down:
            time.sleep(self.heartbeat)
            link = self.link
            if link is None or self.reconnecting_since is not None:
                continue
            if time.monotonic() - self._last_heard > 3 * self.heartbeat:
                link.close()
                continue
            try:
                link.send(0, packet("RKPing", 0))
                with self._send_lock:
                    if self._ack_due:
                        self._ack_due = False
                        link.send(SESSION_CHANNEL, self._outbox.ack())
            except LinkError:
                link.close()
