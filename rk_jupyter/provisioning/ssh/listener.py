"""The local end of a forward to the agent, whichever SSH client carries it.

Both clients' forwards are the same on this side: a listener on this machine's loopback whose
port outlives reconnects (kernel processes reconnect to the port they know), an accept loop
that survives running out of descriptors, and the set of forwarded connections that
``retarget`` and ``close`` end.  What differs is how one accepted connection reaches the
remote (``_serve``: a paramiko channel and two pumps, or an ``ssh -W`` client) and how it is
ended (``_end``).  Only this machine's loopback listens; the agent still checks the token on
every link.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
from typing import Any

from .. import ports

log = logging.getLogger("rk_jupyter.ssh")

_ACCEPT_POLL = 0.5  # how often the accept loop notices close()
#: accept() errors that pass (out of descriptors or memory, a client gone before its accept):
#: the loop waits (doubling up to the last figure) and goes on.  Ending it would cut every
#: kernel of the host off its agent.
_BACKOFF = (0.01, 1.0)
_TRANSIENT = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED,
              errno.EPROTO, errno.EPERM, errno.EAGAIN, errno.EINTR}

#: One forwarded connection: the kernel's socket and what carries it to the remote.
Pair = tuple[socket.socket, Any]


class LocalForward:
    """Accepts on 127.0.0.1:<port>; each client is served by ``_serve`` on a thread of its
    own, through ``connection`` (replaced by ``retarget`` after a reconnect)."""

    def __init__(self, connection: Any, destination: tuple[str, int],
                 open_timeout: float) -> None:
        self.connection = connection
        self.destination = destination
        self.open_timeout = open_timeout
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.port: int = ports.reserve()  # not a port a kernel of this process is given
        try:
            self._listener.bind((ports.HOST, self.port))
            self._listener.listen(16)
        except OSError:
            self._listener.close()
            ports.release(self.port)
            raise
        self._closed = threading.Event()
        self._pairs: set[Pair] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"ssh-forward-{self.port}")
        self._thread.start()

    def alive(self) -> bool:
        return not self._closed.is_set() and self._thread.is_alive()

    def retarget(self, connection: Any) -> None:
        """Forward through ``connection`` (a new connection to the same host) from now on.

        The listener stays, so kernel processes reconnect to the port they know; the
        connections forwarded through the old one are ended (it is dead: their kernels
        notice at once instead of waiting for a heartbeat).
        """
        with self._lock:
            self.connection = connection
            pairs, self._pairs = self._pairs, set()
        for pair in pairs:
            self._end(pair)

    def redirect(self, destination: tuple[str, int]) -> None:
        """Forward to ``destination`` from now on (a new agent on the same host, listening
        on another port); the listener stays, so kernels reconnect to the port they know."""
        with self._lock:
            self.destination = destination
            pairs, self._pairs = self._pairs, set()
        for pair in pairs:
            self._end(pair)

    def close(self) -> None:
        """Stop listening and end every forwarded connection; idempotent."""
        self._closed.set()
        self._listener.close()
        ports.release(self.port)
        with self._lock:
            pairs, self._pairs = self._pairs, set()
        for pair in pairs:
            self._end(pair)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * _ACCEPT_POLL)

    # -- for the clients' subclasses ------------------------------------------------------

    def _serve(self, client: socket.socket, peer: tuple[str, int]) -> None:
        """Carry ``client`` to the destination until either side ends (its own thread)."""
        raise NotImplementedError

    def _end(self, pair: Pair) -> None:
        """End one forwarded connection, both sides."""
        raise NotImplementedError

    def _track(self, pair: Pair) -> bool:
        """Count ``pair`` among the live connections; False (and ended) once closed."""
        with self._lock:
            if not self._closed.is_set():
                self._pairs.add(pair)
                return True
        self._end(pair)
        return False

    def _finish(self, pair: Pair) -> None:
        """Either side ended: end both (the link has no use for half-closed connections)."""
        with self._lock:
            self._pairs.discard(pair)
        self._end(pair)

    # -- the accept loop ------------------------------------------------------------------

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
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    threading.Thread(target=self._serve, args=(client, peer), daemon=True,
                                     name=f"ssh-forward-open-{self.port}").start()
                except RuntimeError as exc:  # no thread to be had: it passes, as EMFILE
                    log.warning("forward 127.0.0.1:%d: cannot start a thread (%s)",
                                self.port, exc)
                    client.close()
