"""The local ports rk_jupyter listens on in a Jupyter process, taken from jupyter_client's own
port cache.

Why: jupyter_client picks each kernel's five ZeroMQ ports before the kernel process binds
them (``LocalPortCache``: bound once to find a free one, then released and remembered).  A
listener of ours that asked the OS for any free port (``bind(("127.0.0.1", 0))``) could be
given one of those, and the kernel then fails with "Address already in use" (seen once in 20
parallel starts).  Taking our ports from the same cache, and giving them back when done,
keeps both apart, as jupyter_client keeps its kernels apart.
"""

from __future__ import annotations

from jupyter_client.connect import LocalPortCache

HOST = "127.0.0.1"


def reserve() -> int:
    """A free port on the loopback that no kernel of this process is given meanwhile."""
    return int(LocalPortCache.instance().find_available_port(HOST))


def release(port: int) -> None:
    """Give a port back once nothing of ours listens on it (idempotent)."""
    LocalPortCache.instance().return_port(port)
