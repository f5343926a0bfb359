"""An agent that ends while its SSH connection lives is replaced, and its kernels go on
(issue 22): each says once why its engine and definitions are gone, and its next cell runs on
a new agent and a fresh engine; a cell running when the agent ended ends with that error; a
cell sent while the agent is replaced runs on the new one.  Real sshd test bed, real kernels
through jupyter_client."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from jupyter_client.manager import start_new_kernel

from kernel_helpers import collect, execute, pid_alive, wait_for
from sshbed import SSHBed
from test_ssh_reconnect import add_spec, remote_pids


def agent_pid(km: Any) -> int:
    return km.provisioner.transport.lease.agent.pid


def text_of(execution: Any) -> str:
    return execution.results()[0]["data"]["text/plain"]


def test_a_killed_agent_is_replaced_and_the_kernels_go_on(sshbed: SSHBed,
                                                         jupyter_env: str) -> None:
    spec = add_spec(sshbed, jupyter_env, "replaced", sshbed.port)
    first = start_new_kernel(kernel_name=spec, startup_timeout=90)
    second = start_new_kernel(kernel_name=spec, startup_timeout=90)
    try:
        (km1, kc1), (km2, kc2) = first, second
        assert agent_pid(km1) == agent_pid(km2)  # one agent serves both
        assert text_of(execute(kc1, "x = 6; x*7")) == "42"
        assert text_of(execute(kc2, "y = 1; y")) == "1"
        busy = kc1.execute('Print["before"]; Pause[30]; "never"')
        time.sleep(2.0)
        old = agent_pid(km1)
        os.kill(old, signal.SIGKILL)
        assert wait_for(lambda: not pid_alive(old), 10)
        # The cell that ran ends with the cause, in bounded time.
        ran = collect(kc1, busy, timeout=60)
        assert ran.reply["status"] == "error" and ran.reply["ename"] == "EngineEnded"
        assert "the agent ended" in ran.reply["evalue"]
        assert "killed by a signal" in ran.reply["evalue"]
        # Its next cell runs on a new agent and a fresh engine, and says so once.
        after = execute(kc1, "x", timeout=60)
        assert text_of(after) == "x"  # definitions are gone
        assert "the agent ended" in after.streams("stderr")
        assert agent_pid(km1) != old and pid_alive(agent_pid(km1))
        again = execute(kc1, "6*7")
        assert text_of(again) == "42" and not again.streams("stderr")
        # The other kernel, idle then, goes on too: told once.
        other = execute(kc2, "1+1", timeout=60)
        assert text_of(other) == "2" and "the agent ended" in other.streams("stderr")
        assert agent_pid(km2) == agent_pid(km1)
        # One agent on the host: the replacement, no second one.
        assert len(remote_pids(sshbed, "--token-stdin")) == 1
        # The kernels' processes never died.
        assert km1.is_alive() and km2.is_alive()
    finally:
        for km, kc in (first, second):
            kc.stop_channels()
            km.shutdown_kernel(now=False)
    assert wait_for(lambda: not remote_pids(sshbed, "--token-stdin"), 20)
