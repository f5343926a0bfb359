"""The agent's side of the Mathics3 templates (``template``): warm engines by fork.

One template per interpreter (the engine option ``python``), started when the agent starts
(``warm``, agent flag ``--warm mathics``) or by the first engine that asks for it.  An engine
asks ``fork`` for a worker process: it gets a ``Forked`` (what ``subprocess.Popen`` offers the
engine: ``pid``, ``stdin``/``stdout``/``stderr``, ``poll``, ``wait``, ``returncode``) or None,
and then starts a cold worker as before.  None comes when there is no fork (not Linux, no
pidfd), when the template cannot start (Mathics3 missing: the cold worker then says so in the
engine's own words) or has died (it is started again for the next engine).

Why the engine sees the same interface: the rules of ``process`` (a process group of its own,
statuses read without reaping so that the group id cannot be reused, SIGKILL of the group at
close) hold for a forked worker as for a cold one; only the parent differs (the template), so
the status and the reaping are asked of the template.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Any

from ..process import OutputTail, kill_group, python_argv, spawn
from .seqpacket import receive, send

log = logging.getLogger(__name__)

_TEMPLATE = "rk_jupyter.agent.engines.mathics.template"
# What holds the rk_jupyter package: a directory, or the zipapp deployed by the ssh transport
# (then __file__ is a path inside the archive).  A worker's or template's interpreter (option
# python) need not have rk_jupyter installed: it runs this one (engine.py uses it too).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))))
#: How long a template may take to import Mathics3 and build its session (a cold worker's
#: start, which takes 3-5 s on an idle machine).
TEMPLATE_START_TIMEOUT = 60.0
_REPLY_TIMEOUT = 10.0  # a fork or a status: milliseconds, unless the host is swamped
_POLL = 0.02


class TemplateGone(Exception):
    """The template ended or broke the protocol: no fork from it."""


class Template:
    """One running template process and the socket to it; calls are serialised."""

    def __init__(self, python: str) -> None:
        self.python = python
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.failure = ""  # why it is not usable, once it is not
        self.served = False  # it was ready once (so a failure later is worth a new start)
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        threading.Thread(target=self._start, daemon=True,
                         name="mathics-template-start").start()

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            argv = [*python_argv(self.python, _TEMPLATE, ROOT), str(theirs.fileno()),
                    str(os.getpid())]
            self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, pass_fds=(theirs.fileno(),))
        except OSError as exc:
            self._fail(f"cannot run {self.python}: {exc}")
            ours.close()
            return
        finally:
            theirs.close()
        assert self.proc.stderr is not None
        OutputTail(self.proc.stderr, lines=20, width=500,
                   label=f"mathics template {self.proc.pid}", level=logging.INFO)
        ours.settimeout(TEMPLATE_START_TIMEOUT)
        try:
            message, _ = receive(ours)
        except (OSError, ValueError) as exc:
            message = ["failed", str(exc)]
        match message:
            case ["ready", version]:
                ours.settimeout(_REPLY_TIMEOUT)
                self.sock = ours
                self.served = True
                log.info("Mathics3 %s template ready (pid %d, %s)", version, self.proc.pid,
                         self.python)
            case _:
                ours.close()
                self._fail(f"the template did not start: {message!r:.300}")
        self._ready.set()

    def _fail(self, why: str) -> None:
        if not self.failure:
            self.failure = why
            log.warning("Mathics3 template for %s: %s; engines start cold", self.python, why)
        if self.proc is not None:
            kill_group(self.proc)
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                pass
        self._ready.set()

    def usable(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) for the template to be ready; False if it is not."""
        return self._ready.wait(timeout) and not self.failure and self.sock is not None

    def call(self, message: list[Any], fds: list[int] | None = None) -> list[Any]:
        """One request and its reply; TemplateGone when the template cannot answer."""
        with self._lock:
            sock = self.sock
            if sock is None or self.failure:
                raise TemplateGone(self.failure or "not started")
            try:
                send(sock, message, fds)
                reply, extra = receive(sock)
            except (OSError, ValueError) as exc:
                reply, extra = None, []
                self._fail(f"it broke off: {exc}")
            for fd in extra:
                os.close(fd)
            if reply is None:
                self._fail("it ended")
                raise TemplateGone(self.failure)
            return reply

    def close(self) -> None:
        """End the template (its forked workers are not its to end: their engines are)."""
        with self._lock:
            self.failure = self.failure or "closed"
            if self.sock is not None:
                self.sock.close()
            self.sock = None
        self._fail("closed")


class Forked:
    """A worker forked by a template, seen by the engine as a Popen (``process``'s rules)."""

    def __init__(self, template: Template, pid: int, stdin: IO[bytes], stdout: IO[bytes],
                 stderr: IO[bytes]) -> None:
        self.template = template
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None  # set once reaped (``wait``)
        try:  # what tells its end once the template cannot
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            self._pidfd = None

    def poll(self) -> int | None:
        """The exit status (negative: a signal), None while it runs; it is not reaped."""
        if self.returncode is not None:
            return self.returncode
        try:
            match self.template.call(["status", self.pid]):
                case ["status", _, status]:
                    return None if status is None else int(status)
        except TemplateGone:
            pass
        return self._status_without_template()

    def _status_without_template(self) -> int | None:
        """The template is gone (init reaped the worker if it ended): the pidfd tells whether
        it ended, not how; a killed worker is the likely case and is said so."""
        import select

        if self._pidfd is None or not select.select([self._pidfd], [], [], 0)[0]:
            return None
        return -signal.SIGKILL

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the end, then have the template reap it; TimeoutExpired as Popen's."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"forked worker {self.pid}", timeout or 0)
            time.sleep(_POLL)
        try:
            self.template.call(["release", self.pid])
        except TemplateGone:
            pass
        self.returncode = status
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        return status


class Templates:
    """The agent's templates, one per interpreter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._templates: dict[str, Template] = {}
        self.enabled = sys.platform == "linux" and hasattr(os, "pidfd_open")

    def warm(self, python: str) -> None:
        """Start the template for ``python`` now (in the background) unless it runs."""
        if self.enabled:
            self._template(python)

    def _template(self, python: str) -> Template:
        with self._lock:
            template = self._templates.get(python)
            # One that never started (Mathics3 missing) is not tried again; one that ran and
            # then died (killed, out of memory) is.
            if template is None or (template.served and template.failure):
                template = self._templates[python] = Template(python)
            return template

    def fork(self, python: str, config: dict[str, Any], timeout: float) -> Forked | None:
        """A worker forked from ``python``'s template (started if need be, waited for at
        most ``timeout`` s), or None: then the engine starts a cold one."""
        if not self.enabled:
            return None
        template = self._template(python)
        if not template.usable(timeout):
            return None
        pipes = [os.pipe() for _ in range(3)]
        theirs = [pipes[0][0], pipes[1][1], pipes[2][1]]
        ours = [pipes[0][1], pipes[1][0], pipes[2][0]]
        try:
            reply = template.call(["fork", {**config, "cwd": os.getcwd()}], theirs)
        except TemplateGone:
            reply = None
        finally:
            for fd in theirs:
                os.close(fd)
        match reply:
            case ["forked", int(pid)]:
                return Forked(template, pid, os.fdopen(ours[0], "wb"),
                              os.fdopen(ours[1], "rb", buffering=0),
                              os.fdopen(ours[2], "rb"))
        for fd in ours:
            os.close(fd)
        if reply is not None:
            log.warning("the Mathics3 template could not fork: %r", reply)
        return None

    def close(self) -> None:
        """End every template (the agent is stopping)."""
        with self._lock:
            self.enabled = False
            templates, self._templates = list(self._templates.values()), {}
        for template in templates:
            template.close()


#: The agent's templates (one agent process, one registry).
TEMPLATES = Templates()
