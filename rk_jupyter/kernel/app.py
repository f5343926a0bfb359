"""The kernel process's application: ipykernel's, with the per-cell machinery this kernel
cannot use taken out.

Each cell of an ipykernel kernel crosses threads more often than its work needs, and a notebook
waits for every crossing (measured with an ipykernel echo kernel through jupyter_client, median
of 250 cells: 2.35 ms; without what is taken out here 1.00 ms):

- **no shell-channel thread** (0.4 ms a cell): ipykernel 7 receives shell messages in a thread
  of their own and passes each request and reply through inproc sockets, so that a client may
  run requests in *subshells* beside a running cell.  This kernel has one link to its engine
  and serves one request at a time (``RKernel.turn``), so a subshell's request would wait for
  the cell anyway; it does not claim "kernel subshells" and handles shell messages on the main
  thread, as ipykernel 6 did.
- **streams that flush only when text waits** (``streams.KernelStream``), and no
  ``_execute_sleep`` (``RKernel``).
"""

from __future__ import annotations

from ipykernel.kernelapp import IPKernelApp
from traitlets import DottedObjectName

from .streams import KernelStream


class RKernelApp(IPKernelApp):
    """``IPKernelApp`` without its shell-channel thread, with ``KernelStream`` for sys.stdout
    and sys.stderr."""

    outstream_class = DottedObjectName(f"{KernelStream.__module__}.{KernelStream.__qualname__}")

    def init_sockets(self) -> None:
        """Called once by ``initialize``: ipykernel's sockets, and the shell socket served by
        the main thread's loop (``init_kernel`` does so when there is no shell-channel
        thread).  The thread, made but not started, holds only an event loop: closed here.
        (ipykernel 6 makes none.)"""
        super().init_sockets()
        unused = getattr(self, "shell_channel_thread", None)
        self.shell_channel_thread = None
        if unused is not None:
            unused.io_loop.close()
