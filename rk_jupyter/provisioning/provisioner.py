"""``rk-ssh-provisioner``: the kernel provisioner behind every ``rk-`` kernelspec."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import secrets
import time
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from jupyter_core.paths import jupyter_runtime_dir
from traitlets import Dict, Float, Int, TraitType, Unicode

from .. import logfiles
from ..client import Endpoint
from ..client.environment import KernelEnvironment
from ..link.connection import Link
from ..link.frames import LinkError
from ..link.packets import packet
from .errors import TransportError, readable, with_message
from .launch import LaunchObserver, Phase, open_session
from .settings import LaunchSettings, default_of, key_of, settings_fields, value_type
from .transports import AgentEndpoint, Transport

#: Seconds the agent keeps the session for the kernel process to attach to it.
ATTACH_WAIT = 120.0
#: The kernel whose ``pre_launch`` runs in this context.  ``asyncio.to_thread`` copies the
#: context into the worker thread that connects and starts the agent, so the ssh modules'
#: log records land in the log of the launch they belong to, even when several kernels start
#: at once on one shared connection.
_LAUNCH: contextvars.ContextVar[str] = contextvars.ContextVar("rk_launch", default="")
_PACKAGE_LOG = logging.getLogger("rk_jupyter")


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


def forget_failed_start(kernel_manager: Any, kernel_id: str) -> None:
    """Take a kernel whose start failed off its MultiKernelManager's list of starting kernels.

    jupyter_client (8.x) keeps a failed start's id in ``MultiKernelManager._pending_kernels``
    (``_add_kernel_when_ready`` logs the error but pops the id only on success), and
    jupyter_server's ``shutdown_all`` then raises "404: Kernel does not exist" for it: the
    server does not stop on SIGTERM (under JupyterHub: not before the spawner's next signal,
    ``term_timeout`` later).  Called by ``pre_launch`` when it fails; a no-op under a manager
    without that table.
    """
    pending = getattr(getattr(kernel_manager, "parent", None), "_pending_kernels", None)
    if isinstance(pending, dict):
        pending.pop(kernel_id, None)

_TRAIT_TYPES: dict[type, type[TraitType]] = {str: Unicode, int: Int, float: Float, dict: Dict}
#: The kernelspec key that is not named like its provisioner trait (``transport`` holds the
#: live Transport object).
TRAIT_NAMES = {"transport": "transport_name"}


def _settings_traits() -> dict[str, TraitType]:
    """One configurable trait per settings key, with the schema's type, default and help."""
    traits: dict[str, TraitType] = {}
    for f in settings_fields():
        kind = _TRAIT_TYPES[value_type(f)]
        default = default_of(f)
        trait = kind(help=key_of(f).full_help) if kind is Dict else \
            kind(default, help=key_of(f).full_help)
        traits[TRAIT_NAMES.get(f.name, f.name)] = trait.tag(config=True)
    return traits


#: LocalProvisioner with the settings' traits (made from the schema, not written out again).
_SettingsProvisioner = type(LocalProvisioner)(
    "_SettingsProvisioner", (LocalProvisioner,), {"__doc__": "The settings as traits.",
                                                  **_settings_traits()})


class _LogObserver(LaunchObserver):
    """Writes the launch path's phases into the launch log, with their times."""

    def __init__(self, launch: LaunchLog) -> None:
        self.launch = launch
        self.transport = ""

    def begin(self, name: str, transport: Transport, detail: str) -> None:
        self.transport = transport.name
        self.launch.step("%s", detail)

    def end(self, phase: Phase) -> None:
        if phase.error is not None:
            self.launch.step("%s failed after %.2f s [%s]", phase.name, phase.seconds,
                             phase.error.code, level=logging.ERROR)
        elif phase.name == "agent":
            timings = ", ".join(f"{k} {v:.2f} s" for k, v in phase.timings.items())
            self.launch.step("transport %s started in %.2f s%s: %s",
                             self.transport, phase.seconds,
                             f" ({timings})" if timings else "", phase.detail)
        else:
            self.launch.step("%s ready in %.2f s: %s", phase.name, phase.seconds, phase.detail)

    def secret(self, value: bytes) -> None:
        self.launch.secret(value)


class RemoteKernelProvisioner(_SettingsProvisioner):
    """Launches an agent through a transport, then the local kernel process that talks to it.

    jupyter_client passes the kernelspec's ``metadata.kernel_provisioner.config`` as these
    traits (one per ``LaunchSettings`` key).  The kernel process itself is a local child,
    managed exactly as LocalProvisioner does; this class adds the agent's life cycle around it.
    """

    transport: Transport | None = None
    _session: tuple[AgentEndpoint, bytes, str, str] | None = None
    _launch_log: LaunchLog | None = None

    def __init__(self, **kwargs: Any) -> None:
        for key, trait in TRAIT_NAMES.items():
            if key in kwargs:  # the kernelspec's key; the attribute holds the live object
                kwargs[trait] = kwargs.pop(key)
        super().__init__(**kwargs)

    def launch_settings(self) -> LaunchSettings:
        """The traits as validated settings; SettingsError (a TransportError) names a bad
        key and the values it allows."""
        return LaunchSettings.from_config({
            f.name: getattr(self, TRAIT_NAMES.get(f.name, f.name)) for f in settings_fields()})

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Called by KernelManager before each launch (also on restart): starts the agent (or
        leases a shared one), opens the kernel's session and puts where to find it in the
        kernel's environment (``KernelEnvironment``).

        Raises TransportError naming the cause and the fix (with a ``code``), which
        JupyterLab shows when the start fails.
        """
        kwargs = await super().pre_launch(**kwargs)
        settings = self.launch_settings()
        kernel_id = str(self.kernel_id or "kernel")
        runtime = logfiles.private_dir(jupyter_runtime_dir())  # 0700: the logs are private
        log_path = os.path.join(runtime, f"rk-{kernel_id}-agent.log")
        token = secrets.token_urlsafe(32).encode()
        if self._launch_log is None:  # a restart appends to the same kernel's log
            self._launch_log = LaunchLog(os.path.join(runtime, f"rk-{kernel_id}.log"),
                                         kernel_id)
        launch = self._launch_log
        launch.secret(token)
        launch.step("launch of kernel %s: transport %s%s, engine %s, compression %s",
                    kernel_id, settings.transport, settings.where(), settings.engine,
                    settings.compression)
        context = _LAUNCH.set(kernel_id)
        try:
            return await self._launch(kwargs, settings, kernel_id, log_path, token, launch)
        except TransportError as exc:
            launch.step("launch failed [%s]: %s", exc.code, exc, level=logging.ERROR)
            self._launch_log = None  # no kernel: KernelManager calls no cleanup
            launch.close()
            forget_failed_start(self.parent, kernel_id)
            raise with_message(exc, readable(str(exc))) from None
        finally:
            _LAUNCH.reset(context)

    async def _launch(self, kwargs: dict[str, Any], settings: LaunchSettings, kernel_id: str,
                      log_path: str, token: bytes, launch: LaunchLog) -> dict[str, Any]:
        """pre_launch's steps: the launch path, then the kernel's environment."""
        session = f"{kernel_id}-{secrets.token_hex(4)}"
        launched = await open_session(settings, kernel_id, token, log_path, _LogObserver(launch),
                                      session=session, keep=ATTACH_WAIT)
        launched.client.close(end_session=False)  # the kernel process attaches to it
        self.transport = launched.transport
        agent = launched.agent
        self._session = (agent, launched.token, settings.compression, session)
        environment = KernelEnvironment(
            endpoint=Endpoint(agent.host, agent.port, launched.token,
                              transport=launched.transport.name, description=agent.description,
                              codec=settings.compression, engine=settings.engine,
                              engine_options=settings.engine_request(), session=session),
            kernel_id=kernel_id,
            reconnect_grace=settings.reconnect_grace,
            transport_state=agent.state_file,
            # For ``%rkernel doctor``, which checks the chain these settings describe.
            settings=settings.as_dict(),
            kernelspec=os.path.basename(getattr(self.kernel_spec, "resource_dir", "")),
            launch_log=launch.path,
        )
        kwargs["env"].update(environment.to_env())
        return kwargs

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
