"""A local loopback port forwarded to the agent over the shared SSH connection.

Why not sshtunnel's SSHTunnelForwarder: it always opens an SSH connection of its own (it
builds its own paramiko Transport, so it cannot use the one shared connection), and it fixes
its tunnels when it starts, while the agent's port is known only after the agent has been
started on that connection.  What it would do per tunnelled connection is exactly this: open a
``direct-tcpip`` channel and copy bytes both ways.  Here that runs on the shared Transport, so
every kernel's TCP connection is one more channel on the one connection.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
from typing import TYPE_CHECKING

import paramiko

if TYPE_CHECKING:
    from .connect import SSHConnection

log = logging.getLogger("rk_jupyter.ssh")

_CHUNK = 65536
_ACCEPT_POLL = 0.5  # how often the accept loop notices close()
#: accept() errors that pass (out of descriptors or memory, a client gone before its accept):
#: the loop waits (doubling up to the last figure) and goes on.  Ending it would cut every
#: kernel of the host off its agent.
_BACKOFF = (0.01, 1.0)
_TRANSIENT = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED,
              errno.EPROTO, errno.EPERM, errno.EAGAIN, errno.EINTR}


class Forwarder:
    """Accepts on 127.0.0.1:<port> and connects each client to ``destination`` on the remote.

    Only this machine's loopback listens; the agent still checks the token on every link.
    """

    def __init__(self, connection: SSHConnection, destination: tuple[str, int],
                 open_timeout: float) -> None:
        self.transport = connection.transport
        self.destination = destination
        self.open_timeout = open_timeout
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._pairs: set[tuple[socket.socket, paramiko.Channel]] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"ssh-forward-{self.port}")
        self._thread.start()

    def alive(self) -> bool:
        return not self._closed.is_set() and self._thread.is_alive()

    def retarget(self, connection: SSHConnection) -> None:
        """Forward through ``connection`` (a new connection to the same host) from now on.

        The listener stays, so kernel processes reconnect to the port they know; the
        connections forwarded through the old transport are closed (it is dead: their kernels
        notice at once instead of waiting for a heartbeat).
        """
        with self._lock:
            self.transport = connection.transport
            pairs, self._pairs = self._pairs, set()
        for client, channel in pairs:
            _close(client, channel)

    def close(self) -> None:
        """Stop listening and close every forwarded connection; idempotent."""
        self._closed.set()
        self._listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, set()
        for client, channel in pairs:
            _close(client, channel)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * _ACCEPT_POLL)

    def _accept_loop(self) -> None:
        """Until ``close``: a transient accept error (EMFILE…) is logged once per run and
        waited out with back-off; only a closed listener ends the loop."""
        delay = 0.0
        with selectors.PollSelector() as selector:
            try:
                selector.register(self._listener, selectors.EVENT_READ)
            except (OSError, ValueError):
                return  # closed before the thread ran
            while not self._closed.is_set():
                try:
                    if not selector.select(_ACCEPT_POLL):
                        continue
                    client, peer = self._listener.accept()
                except (OSError, ValueError) as exc:
                    if self._closed.is_set() or self._listener.fileno() < 0 \
                            or getattr(exc, "errno", None) not in _TRANSIENT:
                        if not self._closed.is_set():
                            log.error("forward 127.0.0.1:%d stops accepting: %s", self.port, exc)
                        break
                    if not delay:
                        log.warning("forward 127.0.0.1:%d cannot accept for now (%s); "
                                    "retrying", self.port, exc)
                    delay = min(max(delay * 2, _BACKOFF[0]), _BACKOFF[1])
                    self._closed.wait(delay)
                    continue
                if delay:
                    log.info("forward 127.0.0.1:%d accepts again", self.port)
                    delay = 0.0
                try:
                    threading.Thread(target=self._open, args=(client, peer), daemon=True,
                                     name=f"ssh-forward-open-{self.port}").start()
                except RuntimeError as exc:  # no thread to be had: it passes, as EMFILE
                    log.warning("forward 127.0.0.1:%d: cannot start a thread (%s)",
                                self.port, exc)
                    client.close()

    def _open(self, client: socket.socket, peer: tuple[str, int]) -> None:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            channel = self.transport.open_channel("direct-tcpip", self.destination, peer,
                                                  timeout=self.open_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            # A dead transport is being replaced (the pool reconnects): the kernel retries.
            report = log.error if self.transport.is_active() else log.info
            report("forward 127.0.0.1:%d -> remote %s:%d: cannot open a channel: %s",
                   self.port, *self.destination, exc)
            client.close()
            return
        pair = (client, channel)
        with self._lock:
            if self._closed.is_set():
                _close(client, channel)
                return
            self._pairs.add(pair)
        threading.Thread(target=self._pump_up, args=(pair,), daemon=True,
                         name=f"ssh-forward-up-{self.port}").start()
        self._pump_down(pair)

    def _pump_up(self, pair: tuple[socket.socket, paramiko.Channel]) -> None:
        """Kernel → agent."""
        client, channel = pair
        try:
            while data := client.recv(_CHUNK):
                channel.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        self._finish(pair)

    def _pump_down(self, pair: tuple[socket.socket, paramiko.Channel]) -> None:
        """Agent → kernel."""
        client, channel = pair
        try:
            while data := channel.recv(_CHUNK):
                client.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        self._finish(pair)

    def _finish(self, pair: tuple[socket.socket, paramiko.Channel]) -> None:
        """Either side ended: end both (the link has no use for half-closed connections)."""
        with self._lock:
            self._pairs.discard(pair)
        _close(*pair)


def _close(client: socket.socket, channel: paramiko.Channel) -> None:
    try:
        client.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    client.close()
    channel.close()
