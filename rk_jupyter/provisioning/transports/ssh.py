"""The ``ssh`` transport: the agent runs on another host, reached through one shared SSH
connection per (user, host, port) (see ``rk_jupyter.provisioning.ssh``).

A lost connection is re-established by the pool within ``reconnect_grace`` (the provisioner's
trait, passed in the config); ``alive`` stays True meanwhile, so that ``poll`` leaves the
kernel running while it waits for its agent.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

from ..ssh.pool import POOL, ConnectOptions, Lease
from ..ssh.remote_agent import AgentSettings
from ..ssh.target import load_ssh_config, resolve_target
from .base import AgentEndpoint, Transport, TransportError

#: The provisioner's default reconnect_grace, for a config that does not carry it.
DEFAULT_RECONNECT_GRACE = 600.0


@dataclass
class SSHTransport(Transport):
    """Leases the shared connection's agent for one kernel launch."""

    name = "ssh"

    def __init__(self, config: dict[str, Any], log_path: str) -> None:
        self.config = config
        self.log_dir = os.path.dirname(os.path.abspath(log_path))
        self.lease: Lease | None = None

    async def start(self, kernel_id: str, token: bytes) -> AgentEndpoint:
        c = self.config
        if not c.get("host"):
            raise TransportError("the kernelspec uses transport 'ssh' but names no host")
        ssh_config = await asyncio.to_thread(load_ssh_config, c.get("ssh_config") or None)
        target = resolve_target(
            c["host"], port=c.get("port") or None, user=c.get("user") or None,
            identity_file=c.get("identity_file") or None,
            proxy_jump=c.get("proxy_jump") or None, known_hosts=c.get("known_hosts") or None,
            ssh_config=ssh_config,
        )
        options = ConnectOptions(
            agent=AgentSettings(
                python=c.get("remote_python") or "python3",
                deploy=c.get("agent_deploy") or "auto",
                start_timeout=float(c.get("agent_start_timeout", 30.0)),
                command_timeout=float(c.get("command_timeout", 30.0)),
            ),
            host_key_policy=c.get("host_key_policy") or "strict",
            connect_timeout=float(c.get("connect_timeout", 10.0)),
            keepalive=float(c.get("keepalive", 15.0)),
            log_dir=self.log_dir,
            reconnect_grace=float(c.get("reconnect_grace", DEFAULT_RECONNECT_GRACE)),
        )
        self.lease = lease = await asyncio.to_thread(POOL.acquire, target, options)
        agent = lease.agent
        return AgentEndpoint(
            "127.0.0.1", lease.port,
            f"agent pid {agent.pid} on {target} (remote 127.0.0.1:{agent.port}), "
            f"forwarded from 127.0.0.1:{lease.port}",
            token=lease.token,
            state_file=lease.state_path,
        )

    def alive(self) -> bool:
        return self.lease is not None and self.lease.alive()

    def death_reason(self) -> str:
        return self.lease.death_reason() if self.lease else "the ssh transport was not started"

    async def stop(self, restart: bool = False) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:
            await asyncio.to_thread(POOL.release, lease, restart)
