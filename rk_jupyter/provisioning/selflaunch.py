"""A kernel process that launches its own engine: for clients that ignore provisioners.

VS Code's Jupyter extension, Positron and jupyverse start a kernel by running
``kernel.json``'s argv with a connection file and never call ``rk-ssh-provisioner``.  The
argv ``rk-jupyter add`` writes names the kernelspec's directory (``KERNELSPEC_FLAG``); when
no provisioner has set the kernel's environment, ``rk_jupyter.kernel``'s entry point calls
``SelfLaunch.begin`` before the kernel application starts, and ``stop`` once it has ended.

It runs the provisioner's own launch (``KernelStart``: the launch path, the launch log, the
session the kernel attaches to, the ``RK_*`` environment), so everything a provisioner gives
holds here: SSH with either client, reconnect, compression, status, the log, interrupt by
message.  The transport lives in the kernel process: a ``shutdown_request`` ends it through
``stop``; a killed kernel process takes it along (the local agent's stdin lifeline closes; the
OpenSSH master has PR_SET_PDEATHSIG, paramiko's connection dies with the process), and the
agent then ends the session after the reconnect grace, as when Jupyter itself is killed.

Imported only in that case: with a provisioner the kernel process loads no launch side.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import uuid

from ..client.environment import BY_KERNEL, START_ERROR
from ..errors import RKError
from .errors import SettingsError
from .kernel_start import KernelStart
from .settings import LaunchSettings
from .transports import transport_class

#: How long ``stop`` may take (the agent side ends in seconds; a dead SSH connection must not
#: hold the kernel process's exit).
STOP_TIMEOUT = 30.0
#: Longest the kernel's imports wait for the launch's own (``loaded``): a bound, not a cost.
LOAD_WAIT = 2.0


class SelfLaunch:
    """The engine launch of one kernel process started without a provisioner.

    ``begin`` starts it on a thread of its own, so that the kernel application starts
    meanwhile (its heartbeat answers while an SSH connection is made: a client that watches
    the heartbeat must not take a slow launch for a dead kernel); the kernel waits for it
    (``wait``) before it attaches.
    """

    def __init__(self, spec_dir: str, connection_file: str = "") -> None:
        self.spec_dir = spec_dir
        kernel_id = kernel_id_of(connection_file)
        self._start = KernelStart(kernel_id, os.path.basename(os.path.normpath(spec_dir)),
                                  BY_KERNEL)
        self._thread = threading.Thread(target=self._launch, name="rk-self-launch",
                                        daemon=True)
        self._launched = False
        #: Set once the launch has imported what it runs (or failed before): see ``loaded``.
        self._loaded = threading.Event()

    @classmethod
    def begin(cls, spec_dir: str, connection_file: str = "") -> SelfLaunch:
        """Start launching the engine of the kernelspec in ``spec_dir``; ``connection_file``
        names the kernel's id (its logs, its session)."""
        launch = cls(spec_dir, connection_file)
        launch._thread.start()
        return launch

    def loaded(self, timeout: float = LOAD_WAIT) -> None:
        """Block until the launch has imported its transport (at most ``timeout``).  Why:
        the kernel's own imports (ipykernel, IPython: half a second of CPU) run best while the
        launch waits on SSH and the engine, not while it imports too: both hold the GIL, and
        every such import delays the launch, the longest part of the start."""
        self._loaded.wait(timeout)

    def wait(self) -> None:
        """Block until the launch has put what the kernel needs into the environment: the
        ``RK_*`` variables a provisioner would set, or ``RK_START_ERROR`` with the launch's
        coded error, which the kernel shows in the first cell.  Bounded by the launch's own
        timeouts (connect, agent start, engine start)."""
        self._thread.join()

    def _launch(self) -> None:
        start = self._start
        try:
            try:
                settings = settings_of(self.spec_dir)
                transport_class(settings)
            except SettingsError as exc:
                start.failed(exc)
                raise
            finally:
                self._loaded.set()
            environment = asyncio.run(start.start(settings))
        except RKError as exc:  # in the launch log already (KernelStart)
            os.environ[START_ERROR] = json.dumps(exc.as_dict())
            return
        except Exception as exc:  # a kernel must still start, to show why it has no engine
            error = RKError(f"the launch failed unexpectedly: {type(exc).__name__}: {exc}",
                            "rk-jupyter doctor NAME checks each step of it",
                            code="kernel.launch-crashed")
            start.failed(error)
            os.environ[START_ERROR] = json.dumps(error.as_dict())
            return
        os.environ.update(environment.to_env())
        self._launched = True

    def stop(self) -> None:
        """End the session and the agent side.  Called by the kernel's ``do_shutdown`` (the
        client may kill the process soon after its shutdown reply) and again once the kernel
        application has ended (any other way out).  Idempotent; returns within STOP_TIMEOUT.
        Runs on a thread of its own: the caller's thread may be running an event loop."""
        self.wait()
        if not self._launched:
            return
        self._launched = False
        ended = threading.Thread(target=asyncio.run, args=(self._start.stop(),),
                                 name="rk-self-launch-stop", daemon=True)
        ended.start()
        ended.join(STOP_TIMEOUT)
        if ended.is_alive():
            self._start.step("the agent side did not end within %.0f s", STOP_TIMEOUT,
                             level=logging.ERROR)


def settings_of(spec_dir: str) -> LaunchSettings:
    """The launch settings in ``spec_dir``'s kernel.json (its provisioner config, exactly
    what the provisioner would be given).  SettingsError naming the file and the fix."""
    path = os.path.join(spec_dir, "kernel.json")
    try:
        with open(path, encoding="utf-8") as handle:
            spec = json.load(handle)
        config = spec["metadata"]["kernel_provisioner"]["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SettingsError(
            f"cannot read the launch settings of this kernel from {path}: "
            f"{getattr(exc, 'strerror', None) or exc!r}",
            "install the kernelspec again with rk-jupyter add (and restart the editor so "
            "that it reads the new kernel.json)", code="settings.unreadable") from None
    return LaunchSettings.from_config(config)


def kernel_id_of(connection_file: str) -> str:
    """The kernel's id, from its connection file's name as clients make them
    (``kernel-<id>.json``), else a new one; it names the launch's logs and session."""
    stem = os.path.splitext(os.path.basename(connection_file))[0]
    stem = stem[len("kernel-"):] if stem.startswith("kernel-") else stem
    return stem if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", stem) else str(uuid.uuid4())
