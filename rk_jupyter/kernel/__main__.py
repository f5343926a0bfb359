"""The kernel process's entry point: ``python -m rk_jupyter.kernel -f CONNECTION_FILE
--rk-kernelspec=DIR``.

With a provisioner (JupyterLab, Notebook, JupyterHub) the engine is already running and the
``RK_*`` environment says where.  A client that ignores provisioners (VS Code, Positron) runs
this argv with no such environment: the kernel then launches its engine itself from the
kernelspec's settings (``provisioning.selflaunch``, imported only then) and ends it after the
kernel application.
"""

import os
import sys

from ..client.environment import KERNELSPEC_FLAG, LOG_LEVEL_ENV, VARIABLES


def take_option(argv: list[str], option: str) -> str:
    """Remove ``option=VALUE`` from ``argv`` (ipykernel's parser rejects options it does not
    know) and return VALUE ('' when absent)."""
    value = ""
    for item in list(argv):
        if item.startswith(option + "="):
            argv.remove(item)
            value = item.split("=", 1)[1]
    return value


def connection_file(argv: list[str]) -> str:
    """The ``-f``/``--f=`` argument (it names the kernel's id in the launch's logs)."""
    for i, item in enumerate(argv):
        if item == "-f" and i + 1 < len(argv):
            return argv[i + 1]
        if item.startswith("--f="):
            return item[len("--f="):]
    return ""


def main() -> None:
    level = os.environ.get(LOG_LEVEL_ENV, "").upper()
    if level:
        import logging

        # A copy of the process's stderr made now: ipykernel soon sends what is written to
        # fd 2 to the notebook instead.
        handler = logging.StreamHandler(os.fdopen(os.dup(2), "w", buffering=1))
        handler.setFormatter(logging.Formatter("%(asctime)s kernel[%(process)d] %(message)s"))
        logging.getLogger("rk_jupyter").addHandler(handler)
        logging.getLogger("rk_jupyter").setLevel(level)
    spec_dir = take_option(sys.argv, KERNELSPEC_FLAG)
    launched = None
    if spec_dir and VARIABLES["port"] not in os.environ:
        from ..provisioning.selflaunch import SelfLaunch  # no provisioner launched us

        launched = SelfLaunch.begin(spec_dir, connection_file(sys.argv))
        launched.loaded()
    # Imported only now (half a second: ipykernel, IPython), while a self-launch's thread
    # connects and starts the agent side.
    from .app import RKernelApp
    from .kernel import RKernel, exit_when_due

    RKernel.engine_launch = launched
    try:
        RKernelApp.launch_instance(kernel_class=RKernel)
    finally:
        if launched is not None:
            launched.stop()
    exit_when_due()


main()
