"""A kernel process started before it is needed (``python -m rk_jupyter.kernel.prestarted
[FD]``).

Why: a kernel process spends about half a second importing ipykernel (and IPython under it)
before it can answer; a second kernel or a restart, whose engine is a fork of a warm template,
would otherwise wait for that alone.  The provisioner keeps such processes ready
(``provisioning.prestart``): one imports what the kernel needs, writes a line on FD (the
provisioner's cue to start the next) and waits for its launch on stdin, one JSON line
``{"args": [...], "env": {...}, "cwd": "..."}`` — the rest of the kernel's argv, its whole
environment (which holds the launch's token: a pipe, never argv), its working directory.
Then it becomes exactly the kernel ``python -m rk_jupyter.kernel ARGS`` would have been.  An
end of stdin without a line (the Jupyter server ended, or no longer wants it) ends it.
"""

from __future__ import annotations

import json
import os
import runpy
import sys

# Imported now, the point of this process: the kernel and ipykernel's kernel base (IPython
# under it), nearly all of the import time.  Not ipykernel.kernelapp: its class reads
# JPY_PARENT_PID (the parent poller that ends a kernel whose server died) when it is
# imported, and the launch's environment is not here yet; but the kernel class it imports,
# which reads none (7 ms).
import ipykernel.ipkernel  # noqa: F401

from . import kernel  # noqa: F401

try:  # the link's decoder imports it with the first frame it reads (160 ms)
    import numpy  # noqa: F401
except ImportError:
    pass


def main() -> int:
    if len(sys.argv) > 1:  # the provisioner starts the next spare once this one has imported
        try:
            os.write(int(sys.argv[1]), b"\n")
            os.close(int(sys.argv[1]))
        except (OSError, ValueError):
            pass
    line = sys.stdin.buffer.readline()
    if not line.strip():
        return 0
    order = json.loads(line)
    if order.get("cwd"):
        os.chdir(order["cwd"])
    os.environ.clear()
    os.environ.update(order["env"])
    sys.argv = [sys.argv[0], *order["args"]]
    runpy.run_module("rk_jupyter.kernel", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
