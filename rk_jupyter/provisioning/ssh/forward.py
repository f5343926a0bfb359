"""A local loopback port forwarded to the agent over the shared paramiko connection.

Why not sshtunnel's SSHTunnelForwarder: it always opens an SSH connection of its own (it
builds its own paramiko Transport, so it cannot use the one shared connection), and it fixes
its tunnels when it starts, while the agent's port is known only after the agent has been
started on that connection.  What it would do per tunnelled connection is exactly this: open a
``direct-tcpip`` channel and copy bytes both ways.  Here that runs on the shared Transport, so
every kernel's TCP connection is one more channel on the one connection.  The listener, the
accept loop and the bookkeeping are ``listener.LocalForward``'s (shared with OpenSSH's).
"""

from __future__ import annotations

import logging
import socket
import threading

import paramiko

from .listener import LocalForward, Pair

log = logging.getLogger("rk_jupyter.ssh")

_CHUNK = 65536


class Forwarder(LocalForward):
    """Connects each client to ``destination`` on the remote through a ``direct-tcpip``
    channel of ``connection.transport``."""

    def _serve(self, client: socket.socket, peer: tuple[str, int]) -> None:
        transport = self.connection.transport
        try:
            channel = transport.open_channel("direct-tcpip", self.destination, peer,
                                             timeout=self.open_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            # A dead transport is being replaced (the pool reconnects): the kernel retries.
            report = log.error if transport.is_active() else log.info
            report("forward 127.0.0.1:%d -> remote %s:%d: cannot open a channel: %s",
                   self.port, *self.destination, exc)
            client.close()
            return
        pair = (client, channel)
        if not self._track(pair):
            return
        threading.Thread(target=self._pump_up, args=(pair,), daemon=True,
                         name=f"ssh-forward-up-{self.port}").start()
        self._pump_down(pair)

    def _pump_up(self, pair: Pair) -> None:
        """Kernel → agent."""
        client, channel = pair
        try:
            while data := client.recv(_CHUNK):
                channel.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        self._finish(pair)

    def _pump_down(self, pair: Pair) -> None:
        """Agent → kernel."""
        client, channel = pair
        try:
            while data := channel.recv(_CHUNK):
                client.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        self._finish(pair)

    def _end(self, pair: Pair) -> None:
        client, channel = pair
        try:
            client.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        client.close()
        try:  # on a transport that has just died, closing the channel cannot be sent
            channel.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass
