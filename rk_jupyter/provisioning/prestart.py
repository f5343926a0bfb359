"""Kernel processes started before their launch, one spare per kernel command.

Why: after the engine (a fork of the agent's warm template) the kernel process's own start —
Python importing ipykernel and IPython, half a second — is what a second kernel or a restart
waits for.  ``take`` hands the launch to a process that has done that already
(``kernel.prestarted``) and ``launched`` starts the next spare in the background.  The spare is
a child of this Jupyter server in a session of its own, as ``jupyter_client.launch_kernel``
makes a kernel, so the provisioner's poll, signals and kill work on it unchanged; it reads its
launch from stdin, so nothing of the launch (its token) is in its argv.  It ends when this
server does (its stdin closes), or with the last kernel of its command (``ended``).

A launch is handed over only when it is exactly what a fresh process would have run: the same
interpreter and flags, ``-m rk_jupyter.kernel``, no redirected streams, and the same Python
environment variables (PYTHONPATH…, which shaped the spare's imports); otherwise the caller
launches as usual.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from typing import Any

log = logging.getLogger(__name__)

KERNEL_MODULE = "rk_jupyter.kernel"
SPARE_MODULE = "rk_jupyter.kernel.prestarted"


def _python_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("PYTHON")}


class Spares:
    """The spares of this server, one per kernel command prefix (``python [-P] -m``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spares: dict[tuple[str, ...], subprocess.Popen[bytes]] = {}
        self._kernels: dict[tuple[str, ...], int] = {}  # running kernels per prefix

    @staticmethod
    def _split(cmd: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
        """(command prefix up to the module, the kernel's arguments), or None for a command
        that is not ``… -m rk_jupyter.kernel …``."""
        for i in range(1, len(cmd)):
            if cmd[i] == KERNEL_MODULE and cmd[i - 1] == "-m":
                return tuple(cmd[: i + 1]), cmd[i + 1:]
        return None

    def take(self, cmd: list[str], kwargs: dict[str, Any]) -> subprocess.Popen[bytes] | None:
        """Launch ``cmd`` (with jupyter_client's launch ``kwargs``) on a spare: the spare's
        Popen, now the kernel; None when there is no fitting spare."""
        split = self._split(cmd)
        if split is None or any(kwargs.get(k) is not None
                                for k in ("stdin", "stdout", "stderr")) \
                or kwargs.get("independent"):
            return None
        prefix, args = split
        env = dict(kwargs.get("env") or os.environ)
        with self._lock:
            spare = self._spares.pop(prefix, None)
        if spare is None:
            return None
        if spare.poll() is not None or _python_env(env) != _python_env(os.environ):
            _dismiss(spare)
            return None
        env["JPY_PARENT_PID"] = str(os.getpid())  # as launch_kernel sets it: the parent poller
        order = {"args": args, "env": env, "cwd": str(kwargs.get("cwd") or os.getcwd())}
        try:
            assert spare.stdin is not None
            spare.stdin.write(json.dumps(order).encode() + b"\n")
            spare.stdin.close()  # as launch_kernel closes a kernel's stdin pipe
        except OSError as exc:
            log.warning("the prestarted kernel process %d is gone (%s)", spare.pid, exc)
            _dismiss(spare)
            return None
        return spare

    def prepare(self, argv: list[str]) -> None:
        """A launch of the kernelspec ``argv`` (its ``{connection_file}`` not filled in yet)
        has begun: start its spare now, so that it imports while the agent and the engine
        start (a first kernel's launch), unless one is there.  ``unused`` ends it again if the
        launch fails."""
        self._ensure(argv)

    def unused(self, argv: list[str]) -> None:
        """A launch that ``prepare`` began failed: end the spare unless a kernel of its
        command runs."""
        split = self._split(argv)
        if split is None:
            return
        with self._lock:
            spare = None if self._kernels.get(split[0]) else self._spares.pop(split[0], None)
        if spare is not None:
            _dismiss(spare)

    def launched(self, cmd: list[str], new_kernel: bool) -> None:
        """A kernel of ``cmd`` was launched (``new_kernel``: not a restart of one): keep a
        spare for the next launch (started now, in the background, unless one is there)."""
        split = self._split(cmd)
        if split is None:
            return
        prefix = split[0]
        with self._lock:
            if new_kernel:
                self._kernels[prefix] = self._kernels.get(prefix, 0) + 1
        self._ensure(cmd)

    def _ensure(self, cmd: list[str]) -> None:
        """Start a spare for ``cmd``'s prefix unless one is there."""
        split = self._split(cmd)
        if split is None:
            return
        prefix = split[0]
        with self._lock:
            if prefix in self._spares:
                return
            argv = [*prefix[:-1], SPARE_MODULE]
            try:
                # Its own session, as launch_kernel gives a kernel (signals reach its group);
                # streams as a kernel's: stdin a pipe, stdout and stderr this server's.
                self._spares[prefix] = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, start_new_session=True,
                    cwd=os.path.expanduser("~"))
            except OSError as exc:
                log.warning("cannot prestart a kernel process (%s): %s", argv[0], exc)

    def ended(self, cmd: list[str]) -> None:
        """A kernel of ``cmd`` has ended (not for a restart).  The spare goes with the last
        kernel of its command: no idle process outlives them."""
        split = self._split(cmd)
        if split is None:
            return
        prefix = split[0]
        with self._lock:
            left = self._kernels.get(prefix, 0) - 1
            if left > 0:
                self._kernels[prefix] = left
                return
            self._kernels.pop(prefix, None)
            spare = self._spares.pop(prefix, None)
        if spare is not None:
            _dismiss(spare)

    def close(self) -> None:
        """End every spare (their stdin closes: they exit)."""
        with self._lock:
            spares, self._spares = list(self._spares.values()), {}
        for spare in spares:
            _dismiss(spare)


def _dismiss(spare: subprocess.Popen[bytes]) -> None:
    """End a spare that will not be used: an end of stdin is its signal to exit."""
    try:
        if spare.stdin is not None:
            spare.stdin.close()
    except OSError:
        pass
    threading.Thread(target=_reap, args=(spare,), daemon=True).start()


def _reap(spare: subprocess.Popen[bytes]) -> None:
    try:
        spare.wait(10)
    except subprocess.TimeoutExpired:
        spare.kill()
        spare.wait()


#: This Jupyter server's spare kernel processes.
SPARES = Spares()
