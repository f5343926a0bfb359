"""``rk-ssh-provisioner``: the kernel provisioner behind every ``rk-`` kernelspec."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import secrets
import textwrap
import time
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from jupyter_core.paths import jupyter_runtime_dir
from traitlets import Dict, Float, Int, Unicode

from .. import logfiles
from ..client import AgentClient, AgentError, Endpoint
from ..link.compression import PREFERENCES
from ..link.connection import Link
from ..link.frames import LinkError
from ..link.packets import packet
from .transports import AgentEndpoint, Transport, TransportError, create_transport

ENGINES = ("mathics", "wolfram")
#: Seconds the engine may take to start (a cold Wolfram kernel with a licence check is slow).
ENGINE_START_TIMEOUT = 150.0
#: Seconds the agent keeps the session for the kernel process to attach to it.
ATTACH_WAIT = 120.0
HOST_KEY_POLICIES = ("strict", "accept-new")
AGENT_DEPLOY = ("auto", "zipapp", "installed")
SSH_KEYS = ("host", "port", "user", "identity_file", "proxy_jump", "known_hosts", "ssh_config",
            "host_key_policy", "remote_python", "agent_deploy", "connect_timeout", "keepalive",
            "command_timeout")
#: The kernel's environment variable that names its launch log (for ``%rkernel log``).
LAUNCH_LOG_ENV = "RK_LAUNCH_LOG"
#: The kernel whose ``pre_launch`` runs in this context.  ``asyncio.to_thread`` copies the
#: context into the worker thread that connects and starts the agent, so the ssh modules'
#: log records land in the log of the launch they belong to, even when several kernels start
#: at once on one shared connection.
_LAUNCH: contextvars.ContextVar[str] = contextvars.ContextVar("rk_launch", default="")
_PACKAGE_LOG = logging.getLogger("rk_jupyter")


def readable(message: str, width: int = 88) -> str:
    """JupyterLab shows a start error in a <pre>: wrap long lines so the fix at the end of a
    sentence is seen without scrolling sideways.  Indented lines are commands to copy and
    stay whole; words (paths) are never split."""
    return "\n".join(
        line if line[:1].isspace() else
        textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False) or line
        for line in message.splitlines()
    )


class LaunchLog:
    """``rk-<kernel_id>.log`` in Jupyter's runtime directory: every step of a launch with its
    time, like the old tunnel.log, and the ssh modules' records made on the launch's behalf.

    Secrets never reach the file: nothing here formats a token, and as a second line of
    defence every record is scrubbed of the tokens registered with ``secret`` before it is
    written (the scrubbed text replaces the record's, so no other handler sees them either).

    The file is created 0600 and capped (``logfiles``); opening one removes the per-kernel
    logs of its directory (``rk-*.log``) unwritten for ``logfiles.RETENTION_DAYS``.
    """

    def __init__(self, path: str, kernel_id: str) -> None:
        self.path = path
        self.kernel_id = kernel_id
        self._secrets: set[str] = set()
        logfiles.prune(os.path.dirname(path), "rk-*.log*")
        self._handler = logfiles.PrivateRotatingFileHandler(path)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        self._handler.addFilter(self._mine)
        if _PACKAGE_LOG.getEffectiveLevel() > logging.INFO:
            _PACKAGE_LOG.setLevel(logging.INFO)  # the steps are INFO records
        _PACKAGE_LOG.addHandler(self._handler)
        self._started = time.monotonic()

    def secret(self, value: bytes | str) -> None:
        """Never write ``value``."""
        self._secrets.add(value.decode() if isinstance(value, bytes) else value)

    def step(self, message: str, *args: Any, level: int = logging.INFO) -> None:
        """One line, with the seconds since the launch began."""
        _PACKAGE_LOG.log(level, "[%6.2f s] " + message, time.monotonic() - self._started,
                         *args, extra={"rk_launch": self.kernel_id})

    def close(self) -> None:
        _PACKAGE_LOG.removeHandler(self._handler)
        self._handler.close()

    def _mine(self, record: logging.LogRecord) -> bool:
        if getattr(record, "rk_launch", None) != self.kernel_id \
                and _LAUNCH.get() != self.kernel_id:
            return False
        text = record.getMessage()
        for value in self._secrets:
            text = text.replace(value, "[secret]")
        record.msg, record.args = text, None
        return True


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
    compression = Unicode(
        "brotli", help="'brotli', 'brotli-max' (smaller, slower: for slow or metered networks), "
        "'zlib' or 'none'").tag(config=True)
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
    _launch_log: LaunchLog | None = None

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
        if self.compression not in PREFERENCES:
            raise TransportError(
                f"unknown compression {self.compression!r} in the kernelspec; use one "
                f"of {', '.join(PREFERENCES)}"
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
            "reconnect_grace": self.reconnect_grace,
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
        runtime = logfiles.private_dir(jupyter_runtime_dir())  # 0700: the logs are private
        log_path = os.path.join(runtime, f"rk-{kernel_id}-agent.log")
        token = secrets.token_urlsafe(32).encode()
        if self._launch_log is None:  # a restart appends to the same kernel's log
            self._launch_log = LaunchLog(os.path.join(runtime, f"rk-{kernel_id}.log"),
                                         kernel_id)
        launch = self._launch_log
        launch.secret(token)
        where = f" to {config['host']}" if config["transport"] == "ssh" else ""
        launch.step("launch of kernel %s: transport %s%s, engine %s, compression %s",
                    kernel_id, config["transport"], where, config["engine"],
                    config["compression"])
        context = _LAUNCH.set(kernel_id)
        try:
            return await self._launch(kwargs, config, kernel_id, log_path, token, launch)
        except TransportError as exc:
            launch.step("launch failed: %s", exc, level=logging.ERROR)
            self._launch_log = None  # no kernel: KernelManager calls no cleanup
            launch.close()
            raise
        finally:
            _LAUNCH.reset(context)

    async def _launch(self, kwargs: dict[str, Any], config: dict[str, Any], kernel_id: str,
                      log_path: str, token: bytes, launch: LaunchLog) -> dict[str, Any]:
        """pre_launch's steps, each logged with its time."""
        transport = create_transport(config, log_path)
        started = time.monotonic()
        launch.step("transport %s: starting the agent", transport.name)
        try:
            endpoint = await transport.start(kernel_id, token)
        except TransportError as exc:
            raise TransportError(readable(str(exc))) from None
        self.transport = transport
        token = endpoint.token or token
        launch.secret(token)
        timings = getattr(getattr(transport, "lease", None), "timings", None)
        launch.step("transport %s started in %.2f s%s: %s", transport.name,
                    time.monotonic() - started,
                    f" ({', '.join(f'{k} {v:.2f} s' for k, v in timings.items())})"
                    if timings else "", endpoint.description)
        session = f"{kernel_id}-{secrets.token_hex(4)}"
        client = AgentClient(Endpoint(
            endpoint.host, endpoint.port, token, codec=config["compression"],
            engine=config["engine"], engine_options=config["engine_options"], session=session,
        ), kernel_id)
        started = time.monotonic()
        launch.step("opening session %s: starting the %s engine", session, config["engine"])
        try:
            info = await asyncio.to_thread(client.open, ENGINE_START_TIMEOUT, ATTACH_WAIT)
        except AgentError as exc:
            if client.link is None:  # no link at all: the way to the agent, not the engine
                message = await asyncio.to_thread(self._link_failure, transport, endpoint,
                                                  str(exc))
            else:
                message = (f"the {config['engine']} engine did not start on "
                           f"{endpoint.description}: {exc}")
            self.transport = None
            await transport.stop()
            raise TransportError(readable(message)) from None
        finally:
            client.close(end_session=False)
        launch.step("engine ready in %.2f s: %s %s (codec %s)", time.monotonic() - started,
                    info.get("name", config["engine"]), info.get("version", ""),
                    client.link.codec if client.link else config["compression"])
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
                "RK_TRANSPORT_STATE": endpoint.state_file,
                # For ``%rkernel doctor``, which checks the chain these settings describe.
                "RK_SETTINGS": json.dumps(config),
                "RK_KERNELSPEC": os.path.basename(getattr(self.kernel_spec, "resource_dir", "")),
                LAUNCH_LOG_ENV: launch.path,
            }
        )
        return kwargs

    def _link_failure(self, transport: Transport, endpoint: AgentEndpoint, error: str) -> str:
        """Why no link to the agent could be made: a server that forbids forwarding, an
        agent of another protocol, or the link's own words."""
        lease = getattr(transport, "lease", None)
        if lease is not None:
            from .ssh.remote_agent import forwarding_refused  # paramiko: only for ssh

            refused = forwarding_refused(lease.shared.connection, lease.agent.port,
                                         self.connect_timeout)
            if refused:
                return refused
        message = f"cannot open a link to the agent ({endpoint.description}): {error}"
        if "protocol version mismatch" in error and lease is not None:
            message += (". Or set agent_deploy to 'zipapp' in the kernelspec: this "
                        "rk_jupyter's own agent is then copied there and used")
        return message

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        """As LocalProvisioner's, with the kernel process's start in the launch log."""
        started = time.monotonic()
        info = await super().launch_kernel(cmd, **kwargs)
        if self._launch_log is not None:
            self._launch_log.step("kernel process pid %s launched in %.2f s",
                                  self.pid, time.monotonic() - started)
        return info

    async def poll(self) -> int | None:
        """As LocalProvisioner's, but a dead agent also counts as a dead kernel: the kernel
        process is ended so that Jupyter's restarter and status see it."""
        status = await super().poll()
        if status is None and self.transport is not None and not self.transport.alive():
            reason = self.transport.death_reason()
            self.log.error("rk_jupyter: %s", reason)
            if self._launch_log is not None:
                self._launch_log.step("the agent side died, ending the kernel: %s", reason,
                                      level=logging.ERROR)
            await super().kill()
            status = await super().poll()
        return status

    async def cleanup(self, restart: bool = False) -> None:
        """Called by KernelManager once the kernel process is gone: ends the session (in case
        the kernel died before it attached) and the agent."""
        started = time.monotonic()
        await super().cleanup(restart)
        if self._session is not None:
            session, self._session = self._session, None
            if self.transport is not None and self.transport.alive():
                await asyncio.to_thread(close_session, *session)
        if self.transport is not None:
            transport, self.transport = self.transport, None
            await transport.stop(restart)
        launch = self._launch_log
        if launch is not None:
            launch.step("cleanup done in %.2f s%s", time.monotonic() - started,
                        " (restart: the connection is kept)" if restart else "")
            if not restart:
                self._launch_log = None
                launch.close()
