"""The ``ssh`` transport: the agent runs on another host, reached through one shared SSH
connection per (user, host, port) (see ``rk_jupyter.provisioning.ssh``).

A lost connection is re-established by the pool within ``reconnect_grace``; ``alive`` stays
True meanwhile, so that ``poll`` leaves the kernel running while it waits for its agent.
"""

from __future__ import annotations

import asyncio
import os
import time

from ...link.handshake import PROTOCOL_VERSION
from ..settings import LaunchSettings
from ..ssh import backend
from ..ssh.pool import POOL, ConnectionPool, ConnectOptions, Lease
from ..ssh.remote_agent import AgentSettings
from .base import AgentEndpoint, Transport, TransportError

#: Seconds a failed link waits to see whether the agent has just ended (its exec channel
#: closing is how the pool learns it).
NOTICE = 3.0


def connect_options(s: LaunchSettings, log_dir: str, adopt_only: bool = False) -> ConnectOptions:
    """The pool's options for a kernelspec's settings (``adopt_only``: see ConnectOptions)."""
    return ConnectOptions(
        agent=AgentSettings(python=s.remote_python, deploy=s.agent_deploy,
                            start_timeout=s.agent_start_timeout,
                            command_timeout=s.command_timeout,
                            # engines in Slurm jobs are not forked on the login node
                            warm=() if s.slurm else (s.engine,),
                            persistent=s.persistent),
        host_key_policy=s.host_key_policy,
        connect_timeout=s.connect_timeout,
        keepalive=s.keepalive,
        log_dir=log_dir,
        reconnect_grace=s.reconnect_grace,
        adopt_only=adopt_only,
    )


class SSHTransport(Transport):
    """Leases the shared connection's agent for one kernel launch (from ``pool``: the
    process's shared POOL unless the caller, like the doctor, brings its own)."""

    name = "ssh"

    def __init__(self, settings: LaunchSettings, log_path: str,
                 pool: ConnectionPool | None = None) -> None:
        self.settings = settings
        self.log_dir = os.path.dirname(os.path.abspath(log_path))
        self.pool = pool or POOL
        self.lease: Lease | None = None

    async def start(self, kernel_id: str, token: bytes) -> AgentEndpoint:
        target = await asyncio.to_thread(backend.resolve, self.settings)
        options = connect_options(self.settings, self.log_dir)
        self.lease = lease = await asyncio.to_thread(self.pool.acquire, target, options)
        agent = lease.agent
        return AgentEndpoint(
            "127.0.0.1", lease.port,
            f"agent pid {agent.pid} on {target} (remote 127.0.0.1:{agent.port}), "
            f"forwarded from 127.0.0.1:{lease.port}",
            token=lease.token,
            state_file=lease.state_path,
        )

    def link_failure(self, endpoint: AgentEndpoint, error: Exception) -> TransportError:
        """A server that refuses forwarding, an agent of another protocol (its ready line
        says which it speaks), or the link's own words."""
        lease = self.lease
        if lease is None or lease.shared.connection is None:
            return super().link_failure(endpoint, error)
        refused = lease.shared.connection.forwarding_refused(lease.agent.port,
                                                             self.settings.connect_timeout)
        if refused is not None:
            return refused
        if lease.agent.ready.get("protocol") != PROTOCOL_VERSION:
            return TransportError(
                f"cannot open a link to the agent ({endpoint.description}): {error}",
                "or set agent_deploy to 'zipapp' in the kernelspec: this rk_jupyter's own "
                "agent is then copied there and used", code="link.protocol-mismatch")
        return super().link_failure(endpoint, error)

    def replaced(self, timeout: float) -> bool:
        """The pool replaces an agent that ended while the connection lives: a link that
        failed because it had just ended (not yet noticed when it was leased) is worth
        another try once the new one listens.  An agent still alive after NOTICE s failed
        the link for another reason."""
        lease = self.lease
        if lease is None:
            return False
        old = lease.agent
        started = time.monotonic()
        while (waited := time.monotonic() - started) < timeout:
            if lease.agent is not old and lease.agent.alive():
                return True
            if not lease.alive() or (old.alive() and waited > NOTICE):
                return False
            time.sleep(0.1)
        return False

    def alive(self) -> bool:
        return self.lease is not None and self.lease.alive()

    def death_reason(self) -> str:
        return self.lease.death_reason() if self.lease else "the ssh transport was not started"

    async def stop(self, restart: bool = False) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:
            await asyncio.to_thread(self.pool.release, lease, restart)
