"""Ways to reach an agent: ``local`` (a process on this machine) and ``ssh`` (another host)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..settings import LaunchSettings
from .base import AgentEndpoint, Transport, TransportError

__all__ = ["AgentEndpoint", "Transport", "TransportError", "create_transport"]


def create_transport(settings: LaunchSettings | Mapping[str, Any], log_path: str,
                     pool: Any = None) -> Transport:
    """The transport ``settings.transport`` names (validated settings name one of
    ``settings.TRANSPORTS``; a kernelspec config is validated into settings first, and a bad
    one raises SettingsError).  ``pool`` is the ssh connection pool (default: the shared one).
    """
    if not isinstance(settings, LaunchSettings):
        settings = LaunchSettings.from_config(settings)
    if settings.transport == "ssh":
        from .ssh import SSHTransport  # paramiko is imported only when needed

        return SSHTransport(settings, log_path, pool=pool)
    from .local import LocalTransport

    return LocalTransport(settings, log_path)
