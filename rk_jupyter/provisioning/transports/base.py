"""The contract between the provisioner and a transport."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..errors import TransportError

__all__ = ["AgentEndpoint", "Transport", "TransportError"]


@dataclass
class AgentEndpoint:
    """Where the kernel process finds the agent, seen from this machine.

    ``token`` is set when the agent is shared by several launches (ssh) and so has a token
    of its own, which the kernel must use instead of the launch's.  ``state_file``, if set, is
    a JSON file the transport keeps up to date with the state of the way to the agent
    (``ConnectionPool`` writes it), which ``%rkernel status`` shows.
    """

    host: str
    port: int
    description: str
    token: bytes | None = None
    state_file: str = ""


class Transport(ABC):
    """Starts an agent for one kernel launch and keeps the way to it open.

    The provisioner calls ``start`` from ``pre_launch`` (once per launch, also on restart),
    ``alive`` from ``poll`` (often, so it must be cheap), and ``stop`` from ``cleanup``.
    """

    name: str

    @abstractmethod
    async def start(self, kernel_id: str, token: bytes) -> AgentEndpoint:
        """Start the agent with ``token`` and return its endpoint once it listens.

        Raises TransportError within a bounded time when it cannot.
        """

    @abstractmethod
    def alive(self) -> bool:
        """False once the agent or the way to it is gone."""

    @abstractmethod
    def death_reason(self) -> str:
        """Why ``alive`` turned False (the agent's last words where known)."""

    def link_failure(self, endpoint: AgentEndpoint, error: Exception) -> TransportError:
        """Why no link to the agent at ``endpoint`` could be made (``error``: the link's or
        the client's failure).  Called by the launch path from a worker thread; a transport
        that can name a more precise cause (a server that forbids forwarding, an agent of
        another protocol) overrides it."""
        return TransportError(f"cannot open a link to the agent ({endpoint.description}): "
                              f"{error}", code="link.failed")

    def replaced(self, timeout: float) -> bool:
        """After a failed link: whether the agent had just ended and another took its place
        (waiting up to ``timeout`` s for that), so that the launch path tries the link
        again instead of failing.  Called from a worker thread; False by default (a
        transport whose agent is not replaced)."""
        return False

    @abstractmethod
    async def stop(self, restart: bool = False) -> None:
        """End this launch's agent side (its engines end with it); idempotent.

        ``restart`` is True when KernelManager restarts the kernel: a transport may keep
        what the next launch can reuse (an SSH connection) instead of closing it.
        """
