"""The Mathics3 template: a process that has paid Mathics3's start-up once and forks workers.

Why: a cold worker spends ~4 s importing Mathics3, loading its builtins and building a
session's definitions before it can evaluate ``1+1``; every kernel start and restart waited for
that.  The template does it once per interpreter, when the agent starts (``forkserver``), and
each new engine is a ``fork`` of it: ready in milliseconds, sharing the template's memory
pages until it writes them.

What the template holds: Mathics3 imported, builtins loaded, one ``MathicsSession`` built
(definitions, autoloaded packages) — and never evaluates anything of a user's.  It is single-
threaded and opens no socket other than the one it was given, so a fork copies nothing that
another thread was halfway through.

Protocol (agent ↔ template) on a ``SOCK_SEQPACKET`` Unix socket (fd passed as argv), one WXF
message per packet (``pipe.encode_frame`` without its length prefix):

- template → agent, once: ``["ready", version]`` or the worker's ``["fatal", …]``.
- ``["fork", config]`` with three descriptors attached (the worker's stdin, stdout, stderr)
  → ``["forked", pid]``: the child is a worker (``worker.serve``) in a session and process
  group of its own, in the working directory ``config["cwd"]``, as a cold worker is.
- ``["status", pid]`` → ``["status", pid, status]``: its exit status (negative: a signal), or
  None while it runs.  The child is **not reaped** (``WNOWAIT``) until
  ``["release", pid]`` → ``["released", pid]``: until then its pid, which is also its process
  group id, cannot be reused, so the agent may signal the group safely (``process``).

The template and each child watch the agent through a pidfd the template opened at start:
when the agent is gone they exit, whatever ended it.  A child does not depend on the template:
a template that is killed leaves its engines running for their kernels.
"""

from __future__ import annotations

import gc
import os
import random
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any

from .pipe import Channel
from .seqpacket import receive, send
from .worker import import_failure, serve

#: The title (``ps``) of a forked worker: what a cold one's command line says, so that people
#: and tools that look for workers find both kinds.
WORKER_TITLE = "python -m rk_jupyter.agent.engines.mathics.worker (forked)"
_WATCH = 1.0  # seconds between the template's checks that the agent is alive


def set_title(title: str) -> None:
    """Make ``ps`` show ``title`` as this process's command line (Linux: the argv area of
    /proc/self/stat's arg_start..arg_end is overwritten in place, as setproctitle does).

    Why: a forked worker would otherwise show the template's command line, and whoever looks
    for an engine (a user in ``top``, the tests, the chaos harness) would not find it.
    Does nothing where that area cannot be found.
    """
    import ctypes

    try:
        with open("/proc/self/stat", "rb") as file:
            fields = file.read().rpartition(b")")[2].split()
        start, end = int(fields[45]), int(fields[46])  # fields 48 and 49 of stat(5)
    except (OSError, ValueError, IndexError):
        return
    if end <= start:
        return
    data = title.encode()[: end - start - 1]
    ctypes.memmove(start, data + b"\0" * (end - start - len(data)), end - start)


class Template:
    """The template's state: its session and the children it forked (not yet released)."""

    def __init__(self, sock: socket.socket, agent_fd: int) -> None:
        self.sock = sock
        self.agent_fd = agent_fd
        self.children: set[int] = set()
        # Mathics3 is imported here, so that its absence is reported as a worker's would be.
        import mathics
        from mathics.core.load_builtin import import_and_load_builtins

        import_and_load_builtins()
        from mathics.session import MathicsSession

        self.version: str = mathics.__version__
        self.session = MathicsSession(catch_interrupt=True)

    def serve(self) -> None:
        """Answer the agent until it closes the socket or is gone."""
        while True:
            ready = select.select([self.sock, self.agent_fd], [], [], _WATCH)[0]
            if self.agent_fd in ready:
                return
            if self.sock not in ready:
                continue
            message, fds = receive(self.sock, 3)
            if message is None:
                return
            match message:
                case ["fork", config] if len(fds) == 3:
                    send(self.sock, self.fork(fds, dict(config)))
                case ["status", int(pid)]:
                    send(self.sock, ["status", pid, self.status(pid)])
                case ["release", int(pid)]:
                    self.release(pid)
                    send(self.sock, ["released", pid])
                case _:
                    for fd in fds:
                        os.close(fd)
                    send(self.sock, ["failed", f"unknown request {message!r:.100}"])

    def fork(self, fds: list[int], config: dict[str, Any]) -> list[Any]:
        """Fork a worker on the three descriptors; close them here either way."""
        sys.stderr.flush()
        # Every object so far goes to the collector's permanent generation: a worker's
        # collections then never write to (and so copy) the pages it shares with us.
        gc.freeze()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            return ["failed", f"fork: {exc}"]
        if pid == 0:  # the child: never returns
            status = 70
            try:
                status = self._child(fds, config)
            except SystemExit as exc:  # Quit[n], Exit[n]: a cold worker's exit status too
                status = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            except BaseException:  # noqa: BLE001 - the child must end here, not in the loop
                traceback.print_exc()
            finally:
                try:
                    sys.stderr.flush()
                finally:
                    os._exit(status)
        for fd in fds:
            os.close(fd)
        self.children.add(pid)
        return ["forked", pid]

    def _child(self, fds: list[int], config: dict[str, Any]) -> int:
        os.setsid()  # a session and process group of its own, as spawn() gives a cold worker
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        self.sock.close()
        set_title(WORKER_TITLE)
        if config.get("cwd"):  # the agent's working directory now, as a cold worker's
            os.chdir(str(config["cwd"]))
        _fresh_process_state()
        return serve(Channel.claim_stdio(), config, session=self.session,
                     agent_fd=self.agent_fd)

    def status(self, pid: int) -> int | None:
        """The child's exit status, without reaping it; None while it runs."""
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return None if pid in self.children else -signal.SIGKILL
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def release(self, pid: int) -> None:
        """Reap the child once it has ended (the agent asks after its own wait)."""
        if pid in self.children and self.status(pid) is not None:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.children.discard(pid)


def _fresh_process_state() -> None:
    """What a forked worker must not share with its siblings: random state (Mathics3 draws
    from numpy's generator, seeded per process) and the clock SessionTime[] counts from."""
    random.seed()
    try:
        from mathics.builtin import datentime
        from mathics.builtin.numbers import randomnumbers

        randomnumbers.random_seed()
        datentime.START_TIME = time.time()
    except (ImportError, AttributeError):
        traceback.print_exc()


def main() -> int:
    """argv: the control socket's fd, the agent's pid.  Say ready (or why not), then serve."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    agent = int(sys.argv[2])
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stray output goes to stderr (the agent's log), never to a child
    os.close(devnull)
    sys.stdout = sys.stderr
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        agent_fd = os.pidfd_open(agent)
    except (AttributeError, OSError) as exc:
        send(sock, ["failed", f"no pidfd for the agent: {exc}"])
        return 2
    if os.getppid() != agent:  # the agent was gone before the pidfd was opened
        return 3
    try:
        template = Template(sock, agent_fd)
    except ImportError as exc:
        traceback.print_exc()
        send(sock, import_failure(exc))
        return 2
    send(sock, ["ready", template.version])
    template.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
