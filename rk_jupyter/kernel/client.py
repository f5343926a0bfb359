"""The kernel's end of the link: one session on an agent, with a reader thread.

Everything here is transport-agnostic: the provisioner hands the kernel an endpoint (a local
agent, or a port forwarded through SSH) and a token; this module only speaks the link.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..link.connection import Link
from ..link.frames import FrameError, LinkError
from ..link.packets import packet, packet_name

SESSION_CHANNEL = 1


class AgentError(Exception):
    """The agent or its engine cannot serve us; the message names the cause."""


@dataclass
class LinkDown:
    """Queued in place of a packet when the link ends, so that no waiter waits forever."""

    reason: str


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
    ``interrupt``/``ping``/``close`` may be called from any thread."""

    def __init__(self, endpoint: Endpoint, kernel_id: str = "") -> None:
        self.endpoint = endpoint
        self.kernel_id = kernel_id
        self.link: Link | None = None
        self.engine_info: dict[str, Any] = {}
        self.started = time.time()
        self.last_rtt: float | None = None
        self.down: str | None = None
        self._packets: queue.Queue[Any] = queue.Queue()
        self._pongs: dict[int, threading.Event] = {}
        self._ping_ids = itertools.count(1)

    def open(self, timeout: float = 150.0, keep: float = 0.0) -> dict[str, Any]:
        """Connect, authenticate and attach to the endpoint's session, or start a new one
        (named ``endpoint.session`` if set) with its engine; return the engine's info.

        ``keep`` is how long the agent keeps the session when this link goes.
        Raises AgentError naming the cause (unreachable agent, wrong token, engine failure).
        """
        ep = self.endpoint
        try:
            self.link = Link.connect(ep.host, ep.port, ep.token, ep.codec, timeout=15.0)
        except LinkError as exc:
            raise AgentError(str(exc)) from None
        threading.Thread(target=self._read, name="link-reader", daemon=True).start()
        request = {"channel": SESSION_CHANNEL, "keep": keep, "kernel": self.kernel_id}
        if ep.attach:
            self.link.send(0, packet("RKAttachSession", {**request, "session": ep.session}))
        else:
            request.update(engine=ep.engine, options=ep.engine_options)
            if ep.session:
                request["session"] = ep.session
            self.link.send(0, packet("RKOpenSession", request))
        reply = self.next_packet(timeout)
        name = packet_name(reply)
        if name == "RKSessionReady":
            self.engine_info = reply.args[0]
            self.started = time.time()
            return self.engine_info
        if name == "RKError":
            raise AgentError(reply.args[0])
        if isinstance(reply, LinkDown):
            raise AgentError(
                f"the link to the agent ended while the engine started: {reply.reason}"
            )
        if reply is None:
            raise AgentError(f"the engine did not start within {timeout:.0f} s")
        raise AgentError(f"unexpected answer from the agent: {reply!r}")

    def send(self, pkt: Any) -> None:
        if self.link is None or self.down:
            raise AgentError(self.down or "not connected")
        try:
            self.link.send(SESSION_CHANNEL, pkt)
        except LinkError as exc:
            raise AgentError(f"the link to the agent is down: {exc}") from None

    def next_packet(self, timeout: float) -> Any:
        """The next packet of our session, a LinkDown, or None after ``timeout`` s."""
        try:
            return self._packets.get(timeout=timeout)
        except queue.Empty:
            return None

    def request(self, pkt: Any, answer: str, timeout: float) -> Any:
        """Send ``pkt`` and return the argument of the first ``answer`` packet."""
        self.send(pkt)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            reply = self.next_packet(remaining)
            if isinstance(reply, LinkDown):
                raise AgentError(reply.reason)
            if packet_name(reply) == answer:
                return reply.args[0] if reply.args else None
        raise AgentError(f"no {answer} from the agent within {timeout:.0f} s")

    def interrupt(self) -> None:
        self.send(packet("RKInterrupt"))

    def ping(self, timeout: float = 5.0) -> float:
        """Round-trip time to the agent in seconds; raises AgentError on timeout."""
        if self.link is None or self.down:
            raise AgentError(self.down or "not connected")
        ident = next(self._ping_ids)
        event = threading.Event()
        self._pongs[ident] = event
        start = time.perf_counter()
        try:
            self.link.send(0, packet("RKPing", ident))
            if not event.wait(timeout):
                raise AgentError(f"the agent did not answer a ping within {timeout:.0f} s")
        except LinkError as exc:
            raise AgentError(f"the link to the agent is down: {exc}") from None
        finally:
            self._pongs.pop(ident, None)
        self.last_rtt = time.perf_counter() - start
        return self.last_rtt

    def close(self, end_session: bool = True) -> None:
        """Close the link, ending the session (and its engine) unless ``end_session`` is
        False, in which case the agent keeps it as long as it was opened to; idempotent."""
        if self.link is None:
            return
        link, self.link = self.link, None
        if end_session:
            try:
                link.send(SESSION_CHANNEL, packet("RKTerminate"))
            except LinkError:
                pass
        link.close()

    def _read(self) -> None:
        link = self.link
        assert link is not None
        try:
            while True:
                channel, expr = link.recv(timeout=None)
                name = packet_name(expr)
                if channel == 0 and name == "RKPong":
                    event = self._pongs.get(expr.args[0] if expr.args else None)
                    if event:
                        event.set()
                else:
                    self._packets.put(expr)
        except FrameError as exc:
            self.down = f"the agent sent a malformed frame ({exc}); the link was closed"
            link.close()
        except LinkError as exc:
            self.down = f"the link to the agent ended: {exc}"
        self._packets.put(LinkDown(self.down))
