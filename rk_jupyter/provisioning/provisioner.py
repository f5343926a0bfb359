"""``rk-ssh-provisioner``: the kernel provisioner behind every ``rk-`` kernelspec."""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import time
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Bool, Dict, Float, Int, TraitType, Unicode

from ..client.environment import BY_PROVISIONER
from . import ports
from .errors import TransportError
from .kernel_start import KernelStart
from .prestart import SPARES
from .settings import LaunchSettings, default_of, key_of, settings_fields, value_type
from .transports import Transport

#: How long one ``poll`` waits for a kernel process asked to shut down, and how often it
#: looks meanwhile.  KernelManager looks every 0.1 s and sleeps between looks; a watch that
#: covers its sleep too sees the end within EXIT_POLL (the kernel exits ~0.05-0.15 s after
#: its shutdown reply).  Its own deadlines (SIGTERM, SIGKILL) run around the call unchanged.
EXIT_WATCH = 0.5
EXIT_POLL = 0.005


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

def watch_shutdown_all(manager: Any) -> None:
    """Mark ``manager`` (the MultiKernelManager) as stopping when its ``shutdown_all`` is
    called — the Jupyter server stops (SIGTERM, SIGINT, /api/shutdown, JupyterHub) — so that
    ``cleanup`` leaves persistent sessions running (``server_stopping``).  Why wrap it: a
    kernel's cleanup is called the same way whether a user shut the kernel down or the
    server is going, and jupyter_server's own flag (``ServerApp._stopping``) is not set on
    /api/shutdown.  Idempotent; works for a sync or an async ``shutdown_all``."""
    original = getattr(manager, "shutdown_all", None)
    if original is None or getattr(original, "rk_watched", False):
        return

    def shutdown_all(*args: Any, **kwargs: Any) -> Any:
        manager.rk_stopping = True
        return original(*args, **kwargs)

    shutdown_all.rk_watched = True  # type: ignore[attr-defined]
    manager.shutdown_all = shutdown_all


def server_stopping(manager: Any) -> bool:
    """True once ``manager``'s ``shutdown_all`` was called (``watch_shutdown_all``)."""
    return bool(getattr(manager, "rk_stopping", False))


def no_interrupt_when_stopping(kernel_manager: Any) -> None:
    """A persistent kernel's running cell goes on when the server stops: jupyter_client
    interrupts a kernel before it shuts it down (``_async_shutdown_kernel``), which would
    abort the cell the notebook is to find running when it comes back.  That interrupt is
    skipped while the server stops; a user's interrupt and a user's shutdown are as ever."""
    original = getattr(kernel_manager, "_async_interrupt_kernel", None)
    if original is None or getattr(original, "rk_watched", False):
        return

    async def interrupt_kernel() -> None:
        if server_stopping(getattr(kernel_manager, "parent", None)):
            return
        await original()

    interrupt_kernel.rk_watched = True  # type: ignore[attr-defined]
    kernel_manager._async_interrupt_kernel = interrupt_kernel


_TRAIT_TYPES: dict[type, type[TraitType]] = {str: Unicode, int: Int, float: Float, dict: Dict,
                                             bool: Bool}
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


class RemoteKernelProvisioner(_SettingsProvisioner):
    """Launches an agent through a transport, then the local kernel process that talks to it.

    jupyter_client passes the kernelspec's ``metadata.kernel_provisioner.config`` as these
    traits (one per ``LaunchSettings`` key).  The kernel process itself is a local child,
    managed exactly as LocalProvisioner does; this class adds the agent's life cycle around it.
    """

    _start: KernelStart | None = None
    _kernel_cmd: list[str] | None = None  # the kernel's command, while the kernel lives
    _exit_asked = False  # a shutdown was requested of the running kernel process

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

    @property
    def transport(self) -> Transport | None:
        """The running launch's transport (None before the first and between launches)."""
        return self._start.transport if self._start is not None else None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Called by KernelManager before each launch (also on restart): starts the agent (or
        leases a shared one), opens the kernel's session and puts where to find it in the
        kernel's environment (``KernelEnvironment``, made by ``KernelStart``).

        Raises TransportError naming the cause and the fix (with a ``code``), which
        JupyterLab shows when the start fails.
        """
        self._reserve_ports()
        kwargs = await super().pre_launch(**kwargs)
        settings = self.launch_settings()
        kernel_id = str(self.kernel_id or "kernel")
        if self._start is None:  # a restart is another launch of the same kernel
            kernelspec = os.path.basename(getattr(self.kernel_spec, "resource_dir", ""))
            self._start = KernelStart(kernel_id, kernelspec, BY_PROVISIONER)
        argv = list(getattr(self.kernel_spec, "argv", None) or [])
        SPARES.prepare(argv)  # the kernel process imports while the agent side starts
        if settings.persistent:
            watch_shutdown_all(getattr(self.parent, "parent", None))
            no_interrupt_when_stopping(self.parent)
        try:
            environment = await self._start.start(
                settings, notebook=str(kwargs.get("env", {}).get("JPY_SESSION_NAME", "")))
        except TransportError:
            self._start = None  # no kernel: KernelManager calls no cleanup
            forget_failed_start(self.parent, kernel_id)
            SPARES.unused(argv)
            raise
        kwargs["env"].update(environment.to_env())
        return kwargs

    def _reserve_ports(self) -> None:
        """The kernel's five ports, from ``ports.reserve`` (below the ephemeral range, in
        jupyter_client's cache), before LocalProvisioner would pick them from the ephemeral
        range; its cleanup gives them back to the cache as its own."""
        km = self.parent
        if km is None or self.ports_cached or getattr(km, "transport", "tcp") != "tcp":
            return
        for name in ports.KERNEL_PORTS:
            if not getattr(km, name):
                setattr(km, name, ports.reserve())
        self.ports_cached = True

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        """As LocalProvisioner's — on a prestarted kernel process when one fits
        (``prestart``), and the next one started meanwhile — with the kernel process's
        start in the launch log."""
        started = time.monotonic()
        process = SPARES.take(cmd, kwargs)
        if process is None:
            info = await super().launch_kernel(cmd, **kwargs)
        else:  # what LocalProvisioner.launch_kernel records of the process it starts
            self.process, self.pid = process, process.pid
            try:
                self.pgid = os.getpgid(process.pid)
            except OSError:
                self.pgid = None
            self.cwd = kwargs.get("cwd", pathlib.Path.cwd())
            info = self.connection_info
        SPARES.launched(cmd, new_kernel=self._kernel_cmd is None)
        self._kernel_cmd = cmd
        self._exit_asked = False
        launched = time.monotonic() - started
        listening = await self._wait_listening()
        if self._start is not None:
            self._start.step("kernel process pid %s launched in %.2f s%s; %s after %.2f s",
                             self.pid, launched, "" if process is None else " (prestarted)",
                             "listening" if listening else "not listening yet",
                             time.monotonic() - started)
        return info

    async def _wait_listening(self) -> bool:
        """Return once the kernel process has bound its ZeroMQ ports (``ports.wait_listening``,
        bounded), so that the client's first connects succeed instead of waiting out
        ZeroMQ's reconnect interval; False when it did not (yet), or the kernel is not on
        TCP."""
        info = self.connection_info
        if info.get("transport", "tcp") != "tcp" or self.process is None:
            return False
        process = self.process
        return await ports.wait_listening(
            str(info.get("ip", "")),
            [int(info.get(name) or 0) for name in ports.KERNEL_PORTS],
            lambda: process.poll() is None)

    async def shutdown_requested(self, restart: bool = False) -> None:
        """Called by KernelManager once it has sent the kernel a shutdown request: from now
        on ``poll`` waits briefly for the process's exit (``EXIT_WATCH``).  For a restart,
        the next launch's agent side begins now (``KernelStart.open_next``), while this
        kernel process exits; ``pre_launch`` then takes it."""
        self._exit_asked = True
        if restart and self._start is not None:
            self._start.open_next(self.launch_settings())
        await super().shutdown_requested(restart)

    async def poll(self) -> int | None:
        """As LocalProvisioner's, but a dead agent also counts as a dead kernel: the kernel
        process is ended so that Jupyter's restarter and status see it.  After a shutdown
        request it waits up to ``EXIT_WATCH`` for the process to end, so that the caller's
        polling loop sees the end when it happens."""
        status = await super().poll()
        if status is None and self._exit_asked:
            # jupyter_client looks every 0.1 s for the end of a kernel it asked to shut down
            # (``_async_wait``), which otherwise adds up to 0.1 s to every restart.
            deadline = time.monotonic() + EXIT_WATCH
            while status is None and time.monotonic() < deadline:
                await asyncio.sleep(EXIT_POLL)
                status = await super().poll()
        transport = self.transport
        if status is None and transport is not None and not transport.alive():
            reason = transport.death_reason()
            self.log.error("rk_jupyter: %s", reason)
            if self._start is not None:
                self._start.step("the agent side died, ending the kernel: %s", reason,
                                 level=logging.ERROR)
            await super().kill()
            status = await super().poll()
        return status

    async def cleanup(self, restart: bool = False) -> None:
        """Called by KernelManager once the kernel process is gone: ends the session (in case
        the kernel died before it attached) and the agent — but a persistent kernel's
        session outlives a stopping Jupyter server (``server_stopping``)."""
        await super().cleanup(restart)
        if self._kernel_cmd is not None and not restart:
            SPARES.ended(self._kernel_cmd)
            self._kernel_cmd = None
        if self._start is not None:
            await self._start.stop(restart, detach=server_stopping(
                getattr(self.parent, "parent", None)))
            if not restart:
                self._start = None
