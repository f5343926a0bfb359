"""The local ports of rk kernels in a Jupyter process: the kernels' own (ZeroMQ) and the ones
rk_jupyter listens on (an SSH forward, a local agent), reserved in jupyter_client's port
cache and chosen outside the range the OS takes connections' source ports from.

Why: a port is chosen before the kernel process binds it.  jupyter_client's own choice
(``LocalPortCache``: bind port 0, release, remember) keeps two kernels of one process apart,
but a port 0 comes from the ephemeral range, from which every outgoing connection on the
machine (a kernel's link, ``ssh -W``, a ZeroMQ client) also takes its source port: with many
kernels starting at once, one was given a port that such a connection held by the time it
bound it ("Address already in use", once in 20 parallel starts).  Ports below the ephemeral
range are taken only by whoever binds them; the cache keeps ours from each other.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable

from jupyter_client.connect import LocalPortCache

HOST = "127.0.0.1"
#: The lowest port chosen (below: well-known and commonly configured services).
LOWEST = 10_000
_EPHEMERAL = "/proc/sys/net/ipv4/ip_local_port_range"
_TRIES = 200


def ephemeral_range() -> tuple[int, int]:
    """The OS's range of source ports (Linux; elsewhere IANA's 49152-65535)."""
    try:
        with open(_EPHEMERAL) as file:
            low, high = (int(part) for part in file.read().split())
        return low, high
    except (OSError, ValueError):
        return 49152, 65535


def reserve() -> int:
    """A free loopback port below the ephemeral range that no kernel of this process is
    given meanwhile (jupyter_client's own choice when there is no room below it)."""
    cache = LocalPortCache.instance()
    low = ephemeral_range()[0]
    if low - LOWEST >= 1000:
        for _ in range(_TRIES):
            port = random.randrange(LOWEST, low)
            if port in cache.currently_used_ports or not _free(port):
                continue
            cache.currently_used_ports.add(port)
            return port
    return int(cache.find_available_port(HOST))


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def claim(port: int) -> None:
    """Count a port something of ours already listens on (an agent an earlier Jupyter
    server started) as in use: no kernel is given it."""
    LocalPortCache.instance().currently_used_ports.add(port)


def release(port: int) -> None:
    """Give a port back once nothing of ours listens on it (idempotent)."""
    LocalPortCache.instance().return_port(port)


#: The kernel's ZeroMQ ports, as KernelManager and the connection file name them.
KERNEL_PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
#: Longest a launch waits for its kernel process to listen (``wait_listening``): past it the
#: launch returns anyway and the client's own reconnects take over, as without the wait.
LISTEN_WAIT = 2.0
_LISTEN_POLL = 0.005


async def wait_listening(ip: str, kernel_ports: list[int], running: Callable[[], bool],
                         timeout: float = LISTEN_WAIT) -> bool:
    """Wait until something listens on every one of ``kernel_ports`` (a TCP connect succeeds,
    closed at once), ``running()`` turns False, or ``timeout`` passes; True when all listen.

    Why: a client (JupyterLab's server, ``wait_for_ready``) connects its ZeroMQ sockets as
    soon as the launch returns; a connect refused because the kernel has not bound yet is
    retried by ZeroMQ only after its reconnect interval (100 ms, growing), which then costs a
    second kernel or a restart a fifth of its start.  Connects that find the port bound
    succeed at once.
    """
    host = HOST if ip in ("", "0.0.0.0", "*") else ip
    waiting = [port for port in kernel_ports if port]
    deadline = time.monotonic() + timeout
    while waiting:
        if not running() or time.monotonic() > deadline:
            return False
        # On loopback a connect is accepted or refused at once: no need to leave the loop.
        waiting = [port for port in waiting if not listens(port, host, _LISTEN_POLL * 20)]
        if waiting:
            await asyncio.sleep(_LISTEN_POLL)
    return True


def listens(port: int, host: str = HOST, timeout: float = 2.0) -> bool:
    """True when a TCP connect to ``host:port`` succeeds (closed at once)."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True
