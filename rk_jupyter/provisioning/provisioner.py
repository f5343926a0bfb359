"""``rk-ssh-provisioner``: the kernel provisioner behind every ``rk-`` kernelspec."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import textwrap
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from jupyter_core.paths import jupyter_runtime_dir
from traitlets import Dict, Float, Int, Unicode

from ..kernel.client import AgentClient, AgentError, Endpoint
from ..link.connection import Link
from ..link.frames import LinkError
from ..link.packets import packet
from .transports import AgentEndpoint, Transport, TransportError, create_transport

ENGINES = ("mathics", "wolfram")
CODECS = ("brotli", "zlib", "none")
#: Seconds the engine may take to start (a cold Wolfram kernel with a licence check is slow).
ENGINE_START_TIMEOUT = 150.0
#: Seconds the agent keeps the session for the kernel process to attach to it.
ATTACH_WAIT = 120.0
HOST_KEY_POLICIES = ("strict", "accept-new")
AGENT_DEPLOY = ("auto", "zipapp", "installed")
SSH_KEYS = ("host", "port", "user", "identity_file", "proxy_jump", "known_hosts", "ssh_config",
            "host_key_policy", "remote_python", "agent_deploy", "connect_timeout", "keepalive",
            "command_timeout")



def readable(message: str, width: int = 88) -> str:
    """JupyterLab shows a start error in a <pre>: wrap long lines so the fix at the end of a
    sentence is seen without scrolling sideways.  Indented lines are commands to copy and
    stay whole; words (paths) are never split."""
    return "\n".join(
        line if line[:1].isspace() else
        textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False) or line
        for line in message.splitlines()
    )


def close_session(endpoint: AgentEndpoint, token: bytes, codec: str, session: str) -> None:
    """Best effort: end a session whose kernel may never have attached to it."""
    try:
        link = Link.connect(endpoint.host, endpoint.port, token, codec, timeout=5.0)
    except LinkError:
        return
    try:
        link.send(0, packet("RKCloseSession", session))
    except LinkError:
        pass
    link.close()

class RemoteKernelProvisioner(LocalProvisioner):
    """Launches an agent through a transport, then the local kernel process that talks to it.

    jupyter_client passes the kernelspec's ``metadata.kernel_provisioner.config`` as these
    traits.  The kernel process itself is a local child, managed exactly as LocalProvisioner
    does; this class adds the agent's life cycle around it.
    """

    transport_name = Unicode(
        "local", help="how to reach the agent: 'local' (this machine) or 'ssh' (another host)"
    ).tag(config=True)
    engine = Unicode("mathics", help="'mathics' or 'wolfram'").tag(config=True)
    engine_options = Dict(help="engine options, e.g. kernel_path").tag(config=True)
    compression = Unicode("brotli", help="'brotli', 'zlib' or 'none'").tag(config=True)
    python = Unicode("", help="Python that runs a local agent (default: this one)").tag(
        config=True
    )
    reconnect_grace = Float(
        600.0, help="seconds a kernel may be cut off from its agent (network down, SSH "
        "reconnecting) before the agent ends its engine; nothing is lost meanwhile"
    ).tag(config=True)
    agent_start_timeout = Float(
        30.0, help="seconds to wait for the agent's ready line (with ssh: including its upload)"
    ).tag(config=True)

    # -- transport "ssh" ------------------------------------------------------------------
    host = Unicode(help="ssh: the remote host, a name or an ~/.ssh/config alias").tag(config=True)
    port = Int(0, help="ssh: port (0: ssh_config's Port, else 22)").tag(config=True)
    user = Unicode(help="ssh: login name (default: ssh_config's User, else the local user)").tag(
        config=True
    )
    identity_file = Unicode(
        help="ssh: private key file, offered after ssh-agent's keys and before ssh_config's "
        "IdentityFile; it must have no passphrase, or be loaded in ssh-agent (no passwords)"
    ).tag(config=True)
    proxy_jump = Unicode(
        help="ssh: jump host(s) like ssh -J: [user@]host[:port][,...]; 'none' disables "
        "ssh_config's ProxyJump"
    ).tag(config=True)
    known_hosts = Unicode(
        help="ssh: known_hosts file for the host key check (default: ssh_config's "
        "UserKnownHostsFile, else ~/.ssh/known_hosts)"
    ).tag(config=True)
    ssh_config = Unicode(
        help="ssh: ssh_config file (default ~/.ssh/config; /etc/ssh/ssh_config is read after it)"
    ).tag(config=True)
    host_key_policy = Unicode(
        "strict", help="ssh: 'strict' refuses a host key that known_hosts lacks; 'accept-new' "
        "records a new host's key; a changed key is refused under both"
    ).tag(config=True)
    remote_python = Unicode(
        "python3", help="ssh: the remote Python (3.10+) that runs the agent and, unless "
        "engine_options says otherwise, Mathics3"
    ).tag(config=True)
    agent_deploy = Unicode(
        "auto", help="ssh: 'auto' runs an installed rk_jupyter of this version, else copies "
        "the agent zipapp (once per version); 'zipapp' always uses the copy; 'installed' "
        "never copies"
    ).tag(config=True)
    connect_timeout = Float(
        10.0, help="ssh: seconds for each phase of connecting (TCP, handshake, each key tried)"
    ).tag(config=True)
    keepalive = Float(
        15.0, help="ssh: seconds between keepalive probes; 3 unanswered ones mean the "
        "connection is dead (0: no probes)"
    ).tag(config=True)
    command_timeout = Float(
        30.0, help="ssh: seconds for each remote command and SFTP operation"
    ).tag(config=True)

    transport: Transport | None = None
    _session: tuple[AgentEndpoint, bytes, str, str] | None = None

    def __init__(self, **kwargs: Any) -> None:
        if "transport" in kwargs:  # the kernelspec key; ``transport`` holds the live object
            kwargs["transport_name"] = kwargs.pop("transport")
        super().__init__(**kwargs)

    def _settings(self) -> dict[str, Any]:
        if self.engine not in ENGINES:
            raise TransportError(
                f"unknown engine {self.engine!r} in the kernelspec; use one of "
                f"{', '.join(ENGINES)}"
            )
        if self.compression not in CODECS:
            raise TransportError(
                f"unknown compression {self.compression!r} in the kernelspec; use one "
                f"of {', '.join(CODECS)}"
            )
        for name, value, allowed in (("host_key_policy", self.host_key_policy,
                                      HOST_KEY_POLICIES),
                                     ("agent_deploy", self.agent_deploy, AGENT_DEPLOY)):
            if value not in allowed:
                raise TransportError(f"unknown {name} {value!r} in the kernelspec; use one of "
                                     f"{', '.join(allowed)}")
        return {
            "transport": self.transport_name,
            "engine": self.engine,
            "engine_options": dict(self.engine_options),
            "compression": self.compression,
            "python": self.python,
            "agent_start_timeout": self.agent_start_timeout,
            **{name: getattr(self, name) for name in SSH_KEYS},
        }

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Called by KernelManager before each launch (also on restart): starts the agent (or
        leases a shared one) and puts its endpoint and token in the kernel's environment.

        Raises TransportError naming the cause, which JupyterLab shows when the start fails.
        """
        kwargs = await super().pre_launch(**kwargs)
        config = self._settings()
        kernel_id = str(self.kernel_id or "kernel")
        runtime = jupyter_runtime_dir()
        os.makedirs(runtime, exist_ok=True)
        log_path = os.path.join(runtime, f"rk-{kernel_id}-agent.log")
        token = secrets.token_urlsafe(32).encode()
        transport = create_transport(config, log_path)
        try:
            endpoint = await transport.start(kernel_id, token)
        except TransportError as exc:
            raise TransportError(readable(str(exc))) from None
        self.transport = transport
        token = endpoint.token or token
        session = f"{kernel_id}-{secrets.token_hex(4)}"
        client = AgentClient(Endpoint(
            endpoint.host, endpoint.port, token, codec=config["compression"],
            engine=config["engine"], engine_options=config["engine_options"], session=session,
        ), kernel_id)
        try:
            await asyncio.to_thread(client.open, ENGINE_START_TIMEOUT, ATTACH_WAIT)
        except AgentError as exc:
            self.transport = None
            await transport.stop()
            raise TransportError(readable(
                f"the {config['engine']} engine did not start on "
                f"{endpoint.description}: {exc}")) from None
        finally:
            client.close(end_session=False)
        self._session = (endpoint, token, config["compression"], session)
        kwargs["env"].update(
            {
                "RK_AGENT_HOST": endpoint.host,
                "RK_AGENT_PORT": str(endpoint.port),
                "RK_AGENT_TOKEN": token.decode(),
                "RK_TRANSPORT": self.transport.name,
                "RK_ENDPOINT": endpoint.description,
                "RK_ENGINE": config["engine"],
                "RK_ENGINE_OPTIONS": json.dumps(config["engine_options"]),
                "RK_COMPRESSION": config["compression"],
                "RK_KERNEL_ID": kernel_id,
                "RK_SESSION": session,
                "RK_RECONNECT_GRACE": str(self.reconnect_grace),
                # For ``%rkernel doctor``, which checks the chain these settings describe.
                "RK_SETTINGS": json.dumps(config),
                "RK_KERNELSPEC": os.path.basename(getattr(self.kernel_spec, "resource_dir", "")),
            }
        )
        return kwargs

    async def poll(self) -> int | None:
        """As LocalProvisioner's, but a dead agent also counts as a dead kernel: the kernel
        process is ended so that Jupyter's restarter and status see it."""
        status = await super().poll()
        if status is None and self.transport is not None and not self.transport.alive():
            self.log.error("rk_jupyter: %s", self.transport.death_reason())
            await super().kill()
            status = await super().poll()
        return status

    async def cleanup(self, restart: bool = False) -> None:
        """Called by KernelManager once the kernel process is gone: ends the session (in case
        the kernel died before it attached) and the agent."""
        await super().cleanup(restart)
        if self._session is not None:
            session, self._session = self._session, None
            if self.transport is not None and self.transport.alive():
                await asyncio.to_thread(close_session, *session)
        if self.transport is not None:
            transport, self.transport = self.transport, None
            await transport.stop(restart)
