"""Kernel processes started before their launch: spares, ``SPARES_PER_COMMAND`` per kernel
command.

Why: after the engine (a fork of the agent's warm template) the kernel process's own start —
Python importing ipykernel and IPython, half a second — is what a second kernel or a restart
waits for.  ``take`` hands the launch to a process that has done that already
(``kernel.prestarted``) and ``launched`` starts its replacement in the background.  A spare is
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
#: Spares kept per kernel command while a kernel of it runs.  Two, because launches come in
#: bursts (JupyterLab restoring a workspace starts each of its notebooks' kernels; a kernel
#: started and soon restarted): a spare takes half a second of CPU to import, and a launch that
#: finds its replacement still importing waited for it (0.04-0.16 s of a 0.35 s start,
#: measured with one).  Each waiting spare holds ~67 MB (PSS), none once its kernels end.
SPARES_PER_COMMAND = 2


def _python_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("PYTHON")}


class Spares:
    """The spares of this server, ``SPARES_PER_COMMAND`` per kernel command prefix
    (``python [-P] -m``), oldest (most likely done importing) first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spares: dict[tuple[str, ...], list[subprocess.Popen[bytes]]] = {}
        self._kernels: dict[tuple[str, ...], int] = {}  # running kernels per prefix
        self._importing: set[int] = set()  # the pids of spares that have not imported yet

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
        if _python_env(env) != _python_env(os.environ):
            return None  # its imports would differ; the spares stay for launches that fit
        with self._lock:
            waiting = self._spares.get(prefix, [])
            spare = waiting.pop(0) if waiting else None
        if spare is None:
            return None
        if spare.poll() is not None:
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
        has begun: start its spares now (one, the others after it, ``_top_up``), so that they
        import while the agent and the engine start (a first kernel's launch).  ``unused``
        ends them again if the launch fails."""
        self._ensure(argv)

    def unused(self, argv: list[str]) -> None:
        """A launch that ``prepare`` began failed: end the spares unless a kernel of their
        command runs."""
        split = self._split(argv)
        if split is None:
            return
        with self._lock:
            spares = [] if self._kernels.get(split[0]) else self._spares.pop(split[0], [])
        for spare in spares:
            _dismiss(spare)

    def launched(self, cmd: list[str], new_kernel: bool) -> None:
        """A kernel of ``cmd`` was launched (``new_kernel``: not a restart of one): replace
        the spare it took (started now, in the background)."""
        split = self._split(cmd)
        if split is None:
            return
        prefix = split[0]
        with self._lock:
            if new_kernel:
                self._kernels[prefix] = self._kernels.get(prefix, 0) + 1
        self._ensure(cmd)

    def _ensure(self, cmd: list[str]) -> None:
        """Start the spares ``cmd``'s prefix lacks (``_top_up``)."""
        split = self._split(cmd)
        if split is not None:
            self._top_up(split[0], wanted_only=False)

    def _top_up(self, prefix: tuple[str, ...], wanted_only: bool) -> None:
        """Start one more spare for ``prefix`` unless it has ``SPARES_PER_COMMAND`` or one of
        them is still importing (``wanted_only``: unless its spares were ended too).  Spares
        import one after another, each started when the one before has imported
        (``_imported``): two imports at once took the second core from a first kernel's
        engine start (cold starts 0.2-0.4 s slower, measured)."""
        with self._lock:
            if wanted_only and prefix not in self._spares:
                return
            waiting = self._spares.setdefault(prefix, [])
            if len(waiting) >= SPARES_PER_COMMAND or \
                    any(spare.pid in self._importing for spare in waiting):
                return
            argv = [*prefix[:-1], SPARE_MODULE]
            read, write = os.pipe()  # the spare writes a byte on it once it has imported
            try:
                # Its own session, as launch_kernel gives a kernel (signals reach its group);
                # streams as a kernel's: stdin a pipe, stdout and stderr this server's.
                spare = subprocess.Popen(
                    [*argv, str(write)], stdin=subprocess.PIPE, start_new_session=True,
                    cwd=os.path.expanduser("~"), pass_fds=(write,))
            except OSError as exc:
                os.close(read)
                log.warning("cannot prestart a kernel process (%s): %s", argv[0], exc)
                return
            finally:
                os.close(write)
            waiting.append(spare)
            self._importing.add(spare.pid)
        threading.Thread(target=self._imported, args=(prefix, spare, read), daemon=True,
                         name=f"rk-spare-{spare.pid}").start()

    def _imported(self, prefix: tuple[str, ...], spare: subprocess.Popen[bytes],
                  read: int) -> None:
        """Wait for ``spare`` to have imported (its byte, or the end of the pipe if it ended),
        then start the next spare if one is still missing."""
        try:
            os.read(read, 1)
        except OSError:
            pass
        finally:
            os.close(read)
        with self._lock:
            self._importing.discard(spare.pid)
        self._top_up(prefix, wanted_only=True)

    def ended(self, cmd: list[str]) -> None:
        """A kernel of ``cmd`` has ended (not for a restart).  The spares go with the last
        kernel of their command: no idle process outlives them."""
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
            spares = self._spares.pop(prefix, [])
        for spare in spares:
            _dismiss(spare)

    def close(self) -> None:
        """End every spare (their stdin closes: they exit)."""
        with self._lock:
            spares = [spare for waiting in self._spares.values() for spare in waiting]
            self._spares = {}
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
