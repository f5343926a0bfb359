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
    ``limit`` bounds how many unacknowledged packets are kept and ``max_bytes`` roughly how
    many bytes they hold (``size``) (None: no bound), for a peer that acknowledges nothing or
    is away (a persistent session's kernel).  ``forgotten`` counts the packets so lost.
    """

    def __init__(self, limit: int | None = None, max_bytes: int | None = None) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.sent = 0
        self.received = 0
        self.forgotten = 0
        self._bytes = 0
        self._unacked: deque[tuple[int, Any, int]] = deque()

    def record(self, pkt: Any) -> bool:
        """Count ``pkt`` as sent and keep it until acknowledged; call it just before sending
        ``pkt`` (also when it cannot go now: it is sent again on attach).  False when a
        limit made us forget the oldest kept packets (a later reconnect could lose them)."""
        self.sent += 1
        size = size_of(pkt) if self.max_bytes is not None else 0
        self._unacked.append((self.sent, pkt, size))
        self._bytes += size
        kept = True
        while len(self._unacked) > 1 and (
                (self.limit is not None and len(self._unacked) > self.limit)
                or (self.max_bytes is not None and self._bytes > self.max_bytes)):
            self._bytes -= self._unacked.popleft()[2]
            self.forgotten += 1
            kept = False
        return kept

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
            self._bytes -= self._unacked.popleft()[2]

    def resend(self, seen: int | None = None) -> list[Any]:
        """What to send again on a new link, in order, after the peer said (on attach) that it
        has our first ``seen`` packets (None: it did not say)."""
        if seen is not None:
            self.acknowledge(seen)
        return [pkt for _, pkt, _ in self._unacked]

    def pending(self) -> list[tuple[int, Any]]:
        """(count, packet) of ours the peer has not acknowledged, in order: what a peer that
        ended may have taken with it."""
        return [(count, pkt) for count, pkt, _ in self._unacked]

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


def size_of(value: Any) -> int:
    """Roughly the bytes ``value`` (a packet) carries: its strings and bytes, 8 for anything
    else; for bounding what is kept, not for the wire."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if isinstance(value, dict):
        return sum(size_of(k) + size_of(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return 8 + sum(size_of(v) for v in value)
    args = getattr(value, "args", None)
    if isinstance(args, (list, tuple)):
        return 8 + sum(size_of(v) for v in args)
    return 8
