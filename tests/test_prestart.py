"""The kernel process started ahead (provisioning/prestart.py, kernel/prestarted.py), through
jupyter_client as JupyterLab starts kernels.  A module of its own: the spare belongs to the
kernel command, which every kernelspec of this interpreter shares, so no other module's kernel
may be running for its end to be seen."""

from __future__ import annotations

import os

from jupyter_client.manager import start_new_kernel

from rk_jupyter import kernelspec
from rk_jupyter.provisioning.prestart import SPARE_MODULE, SPARES_PER_COMMAND

from kernel_helpers import (
    children_of,
    cmdline,
    execute,
    interrupt_endless_loop,
    wait_for,
    wait_gone,
)


def started(pid: int) -> tuple[int, int]:
    """When ``pid`` started (clock ticks since boot; the pid breaks a tie)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19]), pid


def test_the_next_kernel_runs_on_the_process_started_ahead(jupyter_env: str, tmp_path) -> None:
    """While a kernel runs, SPARES_PER_COMMAND processes of its command import the kernel and
    wait: the next launch runs on the oldest (its own working directory, its token only on
    the pipe), a new one replaces it, and they end with the last kernel of their command."""
    kernelspec.install("spare", "Wolfram Language (spare)",
                       {"transport": "local", "engine": "mathics"}, prefix=jupyter_env)
    spec = "rk-spare"

    def spares() -> list[int]:
        return [p for p in children_of(os.getpid()) if SPARE_MODULE in cmdline(p)]

    km_a, kc_a = start_new_kernel(kernel_name=spec, startup_timeout=90)
    # The first kernel ran on a spare started as its own launch began (it imported while the
    # agent and engine started), so its process is titled as one too.
    running = {km_a.provisioner.pid}  # kernels, titled as the spares they were
    assert running <= set(spares())

    def waiting() -> list[int]:
        return [p for p in spares() if p not in running]

    assert wait_for(lambda: len(waiting()) == SPARES_PER_COMMAND, 30)
    spare = min(waiting(), key=started)  # the oldest
    km_b, kc_b = start_new_kernel(kernel_name=spec, startup_timeout=90, cwd=str(tmp_path))
    try:
        assert km_b.provisioner.pid == spare
        running.add(spare)
        assert os.readlink(f"/proc/{spare}/cwd") == str(tmp_path)
        token = km_b.provisioner.transport.agent.token.decode()
        assert token not in cmdline(spare)
        assert execute(kc_b, "1+1").results()[0]["data"]["text/plain"] == "2"
        interrupt_endless_loop(km_b, kc_b, "message")
        assert wait_for(lambda: len(waiting()) == SPARES_PER_COMMAND, 30), "its replacement"
        left = waiting()
    finally:
        for km, kc in ((km_b, kc_b), (km_a, kc_a)):
            kc.stop_channels()
            km.shutdown_kernel(now=False)
    assert wait_gone([spare, *left]) == []
    assert wait_for(lambda: not spares(), 15), "no spare outlives the last kernel"
