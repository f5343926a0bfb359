"""Ways to reach an agent: ``local`` (a process on this machine) and ``ssh`` (another host)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import AgentEndpoint, Transport, TransportError

if TYPE_CHECKING:
    from ..settings import LaunchSettings

__all__ = ["AgentEndpoint", "Transport", "TransportError", "create_transport"]


def create_transport(settings: LaunchSettings, log_path: str, pool: Any = None) -> Transport:
    """The transport ``settings.transport`` names (the settings are validated: it is one of
    ``settings.TRANSPORTS``).  ``pool`` is the ssh connection pool (default: the shared one)."""
    if settings.transport == "ssh":
        from .ssh import SSHTransport  # paramiko is imported only when needed

        return SSHTransport(settings, log_path, pool=pool)
    from .local import LocalTransport

    return LocalTransport(settings, log_path)
