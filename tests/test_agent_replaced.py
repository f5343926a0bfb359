"""Faults around the agent and the connection (issue 22), on the real sshd test bed with real
kernels through jupyter_client: an agent that ends while its SSH connection lives is
replaced and its kernels go on (each says once why its engine and definitions are gone, its
next cell runs on a new agent and a fresh engine; a cell running when the agent ended ends
with that error); kernel starts that overlap a reconnect or an agent's replacement wait for
it and succeed, on the one agent of the host."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from jupyter_client.manager import start_new_kernel

from kernel_helpers import collect, execute, pid_alive, wait_for
from sshbed import ShapingProxy, SSHBed
from test_ssh_reconnect import WORKER, add_spec, remote_pids


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
        # Requests answer within 2 s meanwhile (the idle kernel's Tab).
        asked = time.monotonic()
        reply = kc2.complete("Integ", reply=True, timeout=10)
        assert reply["content"]["status"] == "ok" and time.monotonic() - asked < 2.0
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
        status = execute(kc1, "%rkernel status").displays()[0]["data"]["text/plain"]
        assert "an agent was replaced after it ended" in status
        assert "killed by a signal" in status
        # The other kernel, idle then, goes on too: told once.
        other = execute(kc2, "1+1", timeout=60)
        assert text_of(other) == "2" and "the agent ended" in other.streams("stderr")
        assert agent_pid(km2) == agent_pid(km1)
        # One agent on the host: the replacement, no second one.
        assert len(agents(sshbed)) == 1
        # The kernels' processes never died.
        assert km1.is_alive() and km2.is_alive()
    finally:
        for km, kc in (first, second):
            kc.stop_channels()
            km.shutdown_kernel(now=False)
    assert wait_for(lambda: not agents(sshbed), 20)


def agents(bed: SSHBed) -> list[int]:
    return remote_pids(bed, "--token-stdin")


def test_a_start_during_a_reconnect_waits_for_it_and_shares_the_agent(
        sshbed: SSHBed, sshbed_proxy, jupyter_env: str) -> None:
    proxy: ShapingProxy = sshbed_proxy(delay_ms=1, rate_bps=None)
    spec = add_spec(sshbed, jupyter_env, "startcut", proxy.port, reconnect_grace=60)
    first = start_new_kernel(kernel_name=spec, startup_timeout=120)
    started: list[Any] = []
    failures: list[BaseException] = []

    def start() -> None:
        try:
            started.append(start_new_kernel(kernel_name=spec, startup_timeout=120))
        except BaseException as exc:  # handed to the test's thread
            failures.append(exc)

    try:
        km1, kc1 = first
        lease = km1.provisioner.transport.lease
        proxy.cut()
        assert wait_for(lambda: lease.shared.reconnecting_since is not None, 10)
        thread = threading.Thread(target=start)
        thread.start()
        time.sleep(3.0)
        assert not started and not failures, "the start waited for the reconnect"
        proxy.reset_connections()
        proxy.restore()
        thread.join(150)
        assert not failures, failures
        (km2, kc2), = started
        assert text_of(execute(kc2, "6*7", timeout=60)) == "42"
        assert text_of(execute(kc1, "1+1", timeout=60)) == "2"
        assert km2.provisioner.transport.lease.shared is lease.shared
        assert len(agents(sshbed)) == 1  # one connection, one agent
    finally:
        for km, kc in [first, *started]:
            kc.stop_channels()
            km.shutdown_kernel(now=False)
    assert wait_for(lambda: not agents(sshbed), 20)


def test_a_start_right_after_the_agent_ended_gets_the_new_agent(sshbed: SSHBed,
                                                                jupyter_env: str) -> None:
    spec = add_spec(sshbed, jupyter_env, "startkill", sshbed.port)
    first = start_new_kernel(kernel_name=spec, startup_timeout=90)
    second = None
    try:
        km1, kc1 = first
        old = agent_pid(km1)
        os.kill(old, signal.SIGKILL)
        second = start_new_kernel(kernel_name=spec, startup_timeout=90)
        km2, kc2 = second
        assert text_of(execute(kc2, "6*7", timeout=60)) == "42"
        assert agent_pid(km2) != old and agent_pid(km2) == agent_pid(km1)
        assert text_of(execute(kc1, "2+2", timeout=60)) == "4"
        assert agents(sshbed) == [agent_pid(km2)]
    finally:
        for pair in (first, second):
            if pair is not None:
                pair[1].stop_channels()
                pair[0].shutdown_kernel(now=False)
    assert wait_for(lambda: not agents(sshbed), 20)
    assert wait_for(lambda: not remote_pids(sshbed, WORKER), 20)
