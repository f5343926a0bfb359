"""One kernel's launches, whoever starts its process: the provisioner (JupyterLab, Notebook,
JupyterHub) or the kernel process itself (clients that ignore provisioners: VS Code, Positron).

Why one class: both starts must give the same kernel — the same launch path
(``launch.open_session``), the same launch log with the same steps, the same session the
kernel process attaches to, the same ``KernelEnvironment``, and the same end (the session,
then the agent side).  The provisioner calls ``start`` from ``pre_launch`` and ``stop`` from
``cleanup``; ``selflaunch`` calls them around the kernel application in the kernel process.
"""

from __future__ import annotations

import asyncio
import contextvars
import getpass
import hashlib
import logging
import os
import secrets
import time
from typing import Any, NamedTuple

from jupyter_core.paths import jupyter_runtime_dir

from .. import logfiles
from ..client import Endpoint
from ..client.environment import KernelEnvironment
from ..errors import RKError
from .errors import TransportError, readable, with_message
from .launch import LaunchObserver, Phase, close_session, open_session
from .settings import LaunchSettings
from .transports import AgentEndpoint, Transport

#: Seconds the agent keeps the session for the kernel process to attach to it.
ATTACH_WAIT = 120.0
#: The kernel whose launch runs in this context.  ``asyncio.to_thread`` copies the context
#: into the worker thread that connects and starts the agent, so the ssh modules' log records
#: land in the log of the launch they belong to, even when several kernels start at once on
#: one shared connection.
_LAUNCH: contextvars.ContextVar[str] = contextvars.ContextVar("rk_launch", default="")
_PACKAGE_LOG = logging.getLogger("rk_jupyter")


def persistent_name(kernelspec: str, notebook: str, user: str = "") -> str:
    """The name (its prefix: a restart adds a suffix) of the persistent session of a
    notebook, kernelspec and user: what a later kernel of the same notebook looks for."""
    key = "\0".join((user or getpass.getuser(), kernelspec, notebook))
    return "rkp-" + hashlib.sha256(key.encode()).hexdigest()[:24]


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


class _Opened(NamedTuple):
    """A launch's agent side, ready for its kernel process: its transport, its session (what
    ``close_session`` takes) and the kernel process's environment."""

    transport: Transport
    session: tuple[AgentEndpoint, bytes, str, str]
    environment: KernelEnvironment


class KernelStart:
    """The launches of one kernel (a restart is a new launch of the same kernel).

    ``kernelspec`` is the kernelspec's name (for ``%rkernel doctor`` and the status);
    ``launched_by`` is ``environment.BY_PROVISIONER`` or ``BY_KERNEL``.  ``transport`` is
    the running launch's transport (None between launches); ``log`` the launch log, kept
    across restarts.
    """

    def __init__(self, kernel_id: str, kernelspec: str, launched_by: str) -> None:
        self.kernel_id = kernel_id
        self.kernelspec = kernelspec
        self.launched_by = launched_by
        self.transport: Transport | None = None
        self.log: LaunchLog | None = None
        self._session: tuple[AgentEndpoint, bytes, str, str] | None = None
        self._launched = False  # a launch succeeded: the next is a restart
        self.persistent = False  # the running launch's session outlives the Jupyter server
        self._next: asyncio.Task[_Opened] | None = None  # a restart's launch, begun early
        self._notebook = ""  # the notebook of the first launch (its restarts' too)

    async def start(self, settings: LaunchSettings, notebook: str = "") -> KernelEnvironment:
        """Start the agent (or lease a shared one) and open the kernel's session, which the
        agent keeps ATTACH_WAIT seconds for the kernel process to attach to; return what the
        kernel process must be told (its environment).

        ``notebook`` is the notebook's path (jupyter_server's ``JPY_SESSION_NAME``): with
        ``settings.persistent``, the first launch of this kernel takes over the detached
        session of the same notebook, kernelspec and user if the agent still holds one
        (``persistent_name``), so that its definitions and its running cell go on.

        Raises TransportError naming the cause and the fix (with a ``code``), in the words
        JupyterLab shows when a start fails; the log then says so too and is closed.
        """
        task, self._next = self._next, None
        if not self._launched:
            self._notebook = notebook
        opened = await (task if task is not None else self._launch(settings, notebook))
        self._launched = True
        self.transport = opened.transport
        self._session = opened.session
        return opened.environment

    def open_next(self, settings: LaunchSettings) -> None:
        """Called when a restart's shutdown has been requested: begin the next launch (the
        agent side, the new session) now, while the old kernel process exits, for ``start``
        to take; a restart then waits for the slower of the two, not for their sum (where
        ``settings.restart_overlaps``).  A launch begun so and never taken is ended by
        ``stop``."""
        if self._next is None and self._launched and settings.restart_overlaps():
            self._next = asyncio.ensure_future(self._launch(settings, self._notebook))

    async def _launch(self, settings: LaunchSettings, notebook: str) -> _Opened:
        """start's work, which leaves the running launch (``transport``, the session that
        ``stop`` ends) as it is."""
        launch = self._log()
        log_path = os.path.join(os.path.dirname(launch.path), f"rk-{self.kernel_id}-agent.log")
        token = secrets.token_urlsafe(32).encode()
        launch.secret(token)
        launch.step("launch of kernel %s by the %s: transport %s%s, engine %s, compression %s",
                    self.kernel_id, self.launched_by, settings.transport, settings.where(),
                    settings.engine, settings.compression)
        context = _LAUNCH.set(self.kernel_id)
        try:
            return await self._open(settings, log_path, token, launch, notebook)
        except TransportError as exc:
            self.failed(exc)
            raise with_message(exc, readable(str(exc))) from None
        finally:
            _LAUNCH.reset(context)

    def failed(self, error: RKError) -> None:
        """The launch failed before a kernel could use it (also: its settings could not be
        read): say so in the log, which then closes, since nobody calls ``stop``."""
        launch = self._log()
        launch.step("launch failed [%s]: %s", error.code, error, level=logging.ERROR)
        self.log = None
        launch.close()

    def _log(self) -> LaunchLog:
        """The kernel's launch log, opened at its first launch (a restart appends to it)."""
        if self.log is None:
            runtime = logfiles.private_dir(jupyter_runtime_dir())  # 0700: logs are private
            self.log = LaunchLog(os.path.join(runtime, f"rk-{self.kernel_id}.log"),
                                 self.kernel_id)
        return self.log

    async def _open(self, settings: LaunchSettings, log_path: str, token: bytes,
                    launch: LaunchLog, notebook: str) -> _Opened:
        """start's steps: the launch path, then the kernel's environment."""
        session = f"{self.kernel_id}-{secrets.token_hex(4)}"
        label: dict[str, Any] | None = None
        resume = ""
        if settings.persistent:
            self.persistent = True
            prefix = persistent_name(self.kernelspec, notebook)
            session = f"{prefix}-{secrets.token_hex(4)}"
            label = {"notebook": notebook, "kernelspec": self.kernelspec,
                     "user": getpass.getuser(), "kernel": self.kernel_id, "persistent": True}
            # A restart starts afresh; a notebook-less kernel has nothing to come back to.
            resume = prefix if notebook and not self._launched else ""
        launched = await open_session(settings, self.kernel_id, token, log_path,
                                      _LogObserver(launch), session=session,
                                      keep=settings.persist_for if settings.persistent
                                      else ATTACH_WAIT, label=label, resume=resume)
        session = launched.endpoint.session
        launched.client.close(end_session=False)  # the kernel process attaches to it
        agent = launched.agent
        environment = KernelEnvironment(
            endpoint=Endpoint(agent.host, agent.port, launched.token,
                              transport=launched.transport.name, description=agent.description,
                              codec=settings.compression, engine=settings.engine,
                              engine_options=settings.engine_request(), session=session),
            kernel_id=self.kernel_id,
            reconnect_grace=settings.reconnect_grace,
            transport_state=agent.state_file,
            # For ``%rkernel doctor``, which checks the chain these settings describe.
            settings=settings.as_dict(),
            kernelspec=self.kernelspec,
            launch_log=launch.path,
            launched_by=self.launched_by,
        )
        return _Opened(launched.transport, (agent, launched.token, settings.compression, session),
                       environment)

    async def _drop_next(self) -> None:
        """End a launch ``open_next`` began that no ``start`` took (the restart failed)."""
        task, self._next = self._next, None
        if task is None:
            return
        try:
            opened = await task
        except TransportError:
            return
        await _end_launch(opened.transport, opened.session)

    def step(self, message: str, *args: Any, level: int = logging.INFO) -> None:
        """A line in the launch log (none once the kernel is gone)."""
        if self.log is not None:
            self.log.step(message, *args, level=level)

    async def stop(self, restart: bool = False, detach: bool = False) -> None:
        """Once the kernel process is gone (or going): end the session (in case the kernel
        died before it attached) and the agent side.  ``restart``: another launch of this
        kernel follows, so the log stays open and a transport may keep its connection.
        ``detach`` (a persistent kernel whose Jupyter server stops): the session is left to
        wait for its notebook; the transport leaves a persistent agent running anyway."""
        started = time.monotonic()
        if not restart:
            await self._drop_next()
        session, self._session = self._session, None
        transport, self.transport = self.transport, None
        if session is not None and detach and self.persistent:
            self.step("the Jupyter server stops: persistent session %s is left running "
                      "for its notebook", session[3])
            session = None
        await _end_launch(transport, session, restart)
        launch = self.log
        if launch is not None:
            launch.step("cleanup done in %.2f s%s", time.monotonic() - started,
                        " (restart: the connection is kept)" if restart else "")
            if not restart:
                self.log = None
                launch.close()


async def _end_launch(transport: Transport | None,
                      session: tuple[AgentEndpoint, bytes, str, str] | None,
                      restart: bool = False) -> None:
    """End a launch's session (if its agent is still there) and then its transport."""
    if session is not None and transport is not None and transport.alive():
        await asyncio.to_thread(close_session, *session, restart)
    if transport is not None:
        await transport.stop(restart)
