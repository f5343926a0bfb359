"""Ways to reach an agent: ``local`` (a process on this machine) and ``ssh`` (another host)."""

from __future__ import annotations

from typing import Any

from .base import AgentEndpoint, Transport, TransportError
from .local import LocalTransport

__all__ = ["AgentEndpoint", "Transport", "TransportError", "create_transport"]

TRANSPORTS = ("local", "ssh")


def create_transport(config: dict[str, Any], log_path: str) -> Transport:
    """The transport the kernelspec's provisioner config asks for."""
    name = config.get("transport", "local")
    if name == "local":
        return LocalTransport(config, log_path)
    if name == "ssh":
        from .ssh import SSHTransport  # paramiko is imported only when needed

        return SSHTransport(config, log_path)
    raise TransportError(f"unknown transport {name!r} in the kernelspec; use "
                         f"{' or '.join(repr(t) for t in TRANSPORTS)}")
