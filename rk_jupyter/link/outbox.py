"""A session's reliable delivery, both ends: the counting rule of ``rk_jupyter.link.packets``.

Why one class: the kernel's client (``rk_jupyter.client.agent``) and the agent's session
(``rk_jupyter.agent.session``) follow the same rule — count every packet of the session's
channel but RKAck, keep what was sent until the peer's ``RKAck[count]`` says it arrived, and on
attach send again exactly what the peer has not seen — so the rule is written once, here.

Standard library only (it travels with the agent).  Not thread-safe: the owner holds its own
lock around each call, the same lock under which it writes to the link, so that the count of a
packet and its place on the wire agree.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .packets import packet, packet_name

ACK = "RKAck"


class Outbox:
    """What one end of a session sent and received, counted.

    ``sent`` counts our packets, ``received`` the peer's (RKAck itself is not counted);
    ``limit`` bounds how many unacknowledged packets are kept (None: no bound), for a peer that
    acknowledges nothing.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.sent = 0
        self.received = 0
        self._unacked: deque[tuple[int, Any]] = deque()

    def record(self, pkt: Any) -> bool:
        """Count ``pkt`` as sent and keep it until acknowledged; call it just before sending
        ``pkt`` (also when it cannot go now: it is sent again on attach).  False when the
        limit made us forget the oldest kept packet (a later reconnect could lose it)."""
        self.sent += 1
        self._unacked.append((self.sent, pkt))
        if self.limit is not None and len(self._unacked) > self.limit:
            self._unacked.popleft()
            return False
        return True

    def take(self, pkt: Any) -> bool:
        """Account for one packet that arrived on the session's channel: an RKAck drops what
        it acknowledges and returns True (it is ours, not the caller's); any other packet is
        counted and returns False (the caller handles it)."""
        if packet_name(pkt) != ACK:
            self.received += 1
            return False
        if pkt.args and isinstance(pkt.args[0], int):
            self.acknowledge(pkt.args[0])
        return True

    def acknowledge(self, count: int) -> None:
        """The peer has our first ``count`` packets: forget them."""
        while self._unacked and self._unacked[0][0] <= count:
            self._unacked.popleft()

    def resend(self, seen: int | None = None) -> list[Any]:
        """What to send again on a new link, in order, after the peer said (on attach) that it
        has our first ``seen`` packets (None: it did not say)."""
        if seen is not None:
            self.acknowledge(seen)
        return [pkt for _, pkt in self._unacked]

    def pending(self) -> list[tuple[int, Any]]:
        """(count, packet) of ours the peer has not acknowledged, in order: what a peer that
        ended may have taken with it."""
        return list(self._unacked)

    def acknowledged(self) -> int:
        """How many of our packets are acknowledged: a peer attaching for the first time
        counts on from there (another client may have seen the first ones)."""
        return self._unacked[0][0] - 1 if self._unacked else self.sent

    def catch_up(self, acknowledged: int) -> None:
        """Attaching to a session whose first ``acknowledged`` packets another client took:
        count them as received, so that our acknowledgements count on from there."""
        self.received = max(self.received, acknowledged)

    def ack(self) -> Any:
        """The RKAck that tells the peer how many of its packets arrived."""
        return packet(ACK, self.received)
