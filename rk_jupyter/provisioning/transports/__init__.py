"""Ways to reach an agent: ``local`` (a process on this machine) and, later, ``ssh``."""

from __future__ import annotations

from typing import Any

from .base import AgentEndpoint, Transport, TransportError
from .local import LocalTransport

__all__ = ["AgentEndpoint", "Transport", "TransportError", "create_transport"]


def create_transport(config: dict[str, Any], log_path: str) -> Transport:
    """The transport the kernelspec's provisioner config asks for."""
    name = config.get("transport", "local")
    if name == "local":
        return LocalTransport(config, log_path)
    raise TransportError(f"unknown transport {name!r} in the kernelspec; use 'local'")
