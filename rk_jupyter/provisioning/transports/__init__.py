"""Ways to reach an agent: ``local`` (a process on this machine) and ``ssh`` (another host)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..settings import LaunchSettings
from .base import AgentEndpoint, Transport, TransportError

__all__ = ["AgentEndpoint", "Transport", "TransportError", "create_transport",
           "transport_class"]


def create_transport(settings: LaunchSettings | Mapping[str, Any], log_path: str,
                     pool: Any = None) -> Transport:
    """The transport ``settings.transport`` names (validated settings name one of
    ``settings.TRANSPORTS``; a kernelspec config is validated into settings first, and a bad
    one raises SettingsError).  ``pool`` is the ssh connection pool (default: the shared one).
    """
    if not isinstance(settings, LaunchSettings):
        settings = LaunchSettings.from_config(settings)
    kind = transport_class(settings)
    if settings.transport == "ssh":
        return kind(settings, log_path, pool=pool)  # type: ignore[call-arg]
    return kind(settings, log_path)


def transport_class(settings: LaunchSettings) -> type[Transport]:
    """The class of ``settings.transport``, its modules imported now: only the transport a
    launch uses is loaded (the ssh one brings paramiko and the OpenSSH backend along)."""
    if settings.transport == "ssh":
        from .ssh import SSHTransport

        return SSHTransport
    from .local import LocalTransport

    return LocalTransport
