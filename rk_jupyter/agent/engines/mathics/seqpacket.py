"""Messages between the agent and the template (``template``'s protocol): one WXF message per
``SOCK_SEQPACKET`` packet, with file descriptors attached where the message passes them.

A module of its own so that the agent side (``forkserver``) does not import the template,
which imports the worker: ``python -m`` of a module that its package already imported runs
a second copy of it (runpy's RuntimeWarning on every cold worker's stderr).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from ....link import wxf

_PACKET = 1 << 16  # the largest message either side sends is far below this


def send(sock: socket.socket, message: list[Any], fds: list[int] | None = None) -> None:
    """One message as one packet, with descriptors when given."""
    data = wxf.dumps(message)
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.sendall(data)


def receive(sock: socket.socket, maxfds: int = 0) -> tuple[list[Any] | None, list[int]]:
    """One message and its descriptors; (None, []) when the peer has closed the socket."""
    data, fds, _flags, _addr = socket.recv_fds(sock, _PACKET, maxfds)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    message = wxf.loads(data, use_numpy=False)
    if not (isinstance(message, list) and message and isinstance(message[0], str)):
        raise ValueError(f"not a template message: {message!r:.200}")
    return message, fds
