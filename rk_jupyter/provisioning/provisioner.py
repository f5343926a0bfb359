"""``rk-ssh-provisioner``: the kernel provisioner behind every ``rk-`` kernelspec."""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from jupyter_core.paths import jupyter_runtime_dir
from traitlets import Dict, Float, Unicode

from .transports import Transport, TransportError, create_transport

ENGINES = ("mathics", "wolfram")
CODECS = ("brotli", "zlib", "none")


class RemoteKernelProvisioner(LocalProvisioner):
    """Launches an agent through a transport, then the local kernel process that talks to it.

    jupyter_client passes the kernelspec's ``metadata.kernel_provisioner.config`` as these
    traits.  The kernel process itself is a local child, managed exactly as LocalProvisioner
    does; this class adds the agent's life cycle around it.
    """

    transport_name = Unicode("local", help="how to reach the agent: 'local'").tag(config=True)
    engine = Unicode("mathics", help="'mathics' or 'wolfram'").tag(config=True)
    engine_options = Dict(help="engine options, e.g. kernel_path").tag(config=True)
    compression = Unicode("brotli", help="'brotli', 'zlib' or 'none'").tag(config=True)
    python = Unicode("", help="Python that runs a local agent (default: this one)").tag(
        config=True
    )
    agent_start_timeout = Float(30.0, help="seconds to wait for the agent's ready line").tag(
        config=True
    )

    transport: Transport | None = None

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
        return {
            "transport": self.transport_name,
            "engine": self.engine,
            "engine_options": dict(self.engine_options),
            "compression": self.compression,
            "python": self.python,
            "agent_start_timeout": self.agent_start_timeout,
        }

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Called by KernelManager before each launch (also on restart): starts the agent and
        puts its endpoint and the per-launch token in the kernel's environment.

        Raises TransportError naming the cause, which JupyterLab shows when the start fails.
        """
        kwargs = await super().pre_launch(**kwargs)
        config = self._settings()
        kernel_id = str(self.kernel_id or "kernel")
        runtime = jupyter_runtime_dir()
        os.makedirs(runtime, exist_ok=True)
        log_path = os.path.join(runtime, f"rk-{kernel_id}-agent.log")
        token = secrets.token_urlsafe(32).encode()
        self.transport = create_transport(config, log_path)
        endpoint = await self.transport.start(kernel_id, token)
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
        """Called by KernelManager once the kernel process is gone: ends the agent."""
        await super().cleanup(restart)
        if self.transport is not None:
            transport, self.transport = self.transport, None
            await transport.stop(restart)
