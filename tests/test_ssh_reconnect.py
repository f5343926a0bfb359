"""A dropped SSH connection loses nothing, and a killed Jupyter side leaves nothing behind.

Real faults on the real bed (tests/sshbed.py): the network in front of sshd goes silent in the
middle of a cell that prints (ShapingProxy.cut: no FIN, no RST), the kernel process or the
whole Jupyter-side process is killed with SIGKILL.  Kernels are driven through jupyter_client
as JupyterLab drives them; their kernelspecs (written by the CLI) get short keepalive,
connect_timeout and reconnect_grace so that each fault plays out in seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import start_new_kernel

from rk_jupyter.cli import main as cli
from rk_jupyter.client import AgentClient, Endpoint
from rk_jupyter.client.status import transport_state
from rk_jupyter.provisioning.ssh.pool import POOL, ConnectOptions
from rk_jupyter.provisioning.ssh.remote_agent import AgentSettings
from rk_jupyter.provisioning.ssh.target import resolve_target

from kernel_helpers import collect, execute, pid_alive, wait_for, wait_gone
from sshbed import ShapingProxy, SSHBed

AGENT = r"(agent\.pyz|-m rk_jupyter\.agent) --host"
WORKER = r"mathics[/._]worker"  # the Mathics3 worker, by its module or file
KEEPALIVE = 1.0  # a silent network is noticed after 3 keepalives
CONNECT_TIMEOUT = 3.0
PRINTS = 30  # one every 0.5 s: a 15 s cell
CELL = f'Do[Print[i]; Pause[0.5], {{i, 1, {PRINTS}}}]; "done"'
CUT_AT, CUT_FOR = 3.0, 8.0


@pytest.fixture(autouse=True)
def _clean_remote(sshbed: SSHBed, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts and must end with no agent or engine of the account on the remote."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # only keys the test chooses
    assert wait_for(lambda: not sshbed.remote_processes(), 20), sshbed.remote_processes()
    yield
    sshbed.kill_remote_processes()  # after a failure, do not spoil the next test



def add_spec(bed: SSHBed, prefix: str, name: str, port: int, **config: Any) -> str:
    """rk-NAME for the bed (through ``port``: sshd's, or a proxy's), installed with the CLI as
    a user would, then given short timeouts in its provisioner config."""
    host = "127.0.0.1" if port != bed.port else bed.host
    assert cli(["add", name, "--host", f"{bed.user}@{host}:{port}",
                "--identity", bed.key_file, "--known-hosts", bed.known_hosts,
                "--remote-python", bed.remote_python, "--prefix", prefix]) == 0
    spec = f"rk-{name}"
    path = os.path.join(KernelSpecManager().get_kernel_spec(spec).resource_dir, "kernel.json")
    with open(path) as handle:
        kernel_json = json.load(handle)
    kernel_json["metadata"]["kernel_provisioner"]["config"].update(
        {"keepalive": KEEPALIVE, "connect_timeout": CONNECT_TIMEOUT, **config})
    with open(path, "w") as handle:
        json.dump(kernel_json, handle)
    return spec


def remote_pids(bed: SSHBed, pattern: str) -> list[int]:
    return [pid for pid, _ in bed.remote_processes(pattern)]


def status_rows(kc: Any) -> dict[str, str]:
    """``%rkernel status`` as {label: value}, from its text/plain."""
    text = execute(kc, "%rkernel status", timeout=30).displays()[0]["data"]["text/plain"]
    return dict(re.split(r"\s{2,}", line, maxsplit=1) for line in text.splitlines())


def test_status_shows_the_ssh_connection_reconnecting(
    sshbed: SSHBed, sshbed_proxy, jupyter_env: str
) -> None:
    """An idle kernel whose network went silent: ``%rkernel status`` answers (within its
    ping timeout) that the link and the SSH connection are being re-established, then that
    they are back."""
    proxy: ShapingProxy = sshbed_proxy(delay_ms=1, rate_bps=None)
    spec = add_spec(sshbed, jupyter_env, "idlecut", proxy.port, reconnect_grace=60)
    km, kc = start_new_kernel(kernel_name=spec, startup_timeout=120)
    try:
        lease = km.provisioner.transport.lease
        rows = status_rows(kc)
        assert rows["ssh connection"].startswith("connected since")
        assert rows["ssh client"] == "OpenSSH (its own master)"  # the default where ssh is
        proxy.cut()
        assert wait_for(lambda: lease.shared.reconnecting_since is not None, 10)
        started = time.monotonic()
        rows = status_rows(kc)
        assert time.monotonic() - started < 12
        assert rows["ssh connection"].startswith("reconnecting since"), rows
        assert "last error" in rows["ssh connection"], rows
        assert rows["state"].startswith(("reconnecting since", "down")), rows
        proxy.restore()
        assert wait_for(lambda: lease.shared.reconnects == 1, 30)
        assert wait_for(lambda: status_rows(kc)["state"] == "connected", 30)
        rows = status_rows(kc)
        assert rows["ssh connection"].startswith("connected since"), rows
        assert "re-established 1 time," not in rows["ssh connection"]
        assert rows["ssh connection"].endswith("re-established 1 time"), rows
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert not os.path.exists(lease.state_path)  # the pool closed the connection: no state


def test_network_cut_mid_cell_loses_and_repeats_nothing(
    sshbed: SSHBed, sshbed_proxy, jupyter_env: str
) -> None:
    proxy: ShapingProxy = sshbed_proxy(delay_ms=1, rate_bps=None)
    spec = add_spec(sshbed, jupyter_env, "cut", proxy.port, reconnect_grace=60)
    km, kc = start_new_kernel(kernel_name=spec, startup_timeout=120)
    try:
        lease = km.provisioner.transport.lease
        execute(kc, "kept = 7;")
        agents = remote_pids(sshbed, AGENT)
        seen_alive: list[bool] = []
        published: list[str] = []  # what the kernel's %rkernel status reads meanwhile

        def outage() -> None:
            time.sleep(CUT_AT)
            proxy.cut()
            deadline = time.monotonic() + CUT_FOR
            while time.monotonic() < deadline:  # what poll() sees: the kernel must live on
                seen_alive.append(lease.alive())
                published.append(transport_state(lease.state_path)[0])
                time.sleep(0.5)
            proxy.restore()

        cutter = threading.Thread(target=outage, daemon=True)
        started = time.monotonic()
        msg_id = kc.execute(CELL)
        cutter.start()
        run = collect(kc, msg_id, timeout=90)
        cutter.join(timeout=CUT_AT + CUT_FOR + 5)
        print(f"cell of {PRINTS * 0.5:g} s with a {CUT_FOR:g} s cut took "
              f"{time.monotonic() - started:.1f} s; reconnects: {lease.shared.reconnects}")
        assert run.reply["status"] == "ok", run.reply
        assert run.streams("stdout") == "".join(f"{i}\n" for i in range(1, PRINTS + 1))
        assert run.results()[0]["data"]["text/plain"] == "done"
        assert seen_alive and all(seen_alive)
        assert published[0].startswith("connected since") and any(
            state.startswith("reconnecting since") and "last error" in state
            for state in published), published
        assert lease.shared.reconnects == 1 and lease.alive()
        rows = status_rows(kc)
        assert rows["ssh connection"].startswith("connected since"), rows
        assert "re-established 1 time" in rows["ssh connection"], rows
        assert km.is_alive()
        assert execute(kc, "kept * 6").results()[0]["data"]["text/plain"] == "42"
        assert remote_pids(sshbed, AGENT) == agents  # the same agent, adopted
        assert sshbed.wait_established(1) == 1  # the lost connection is gone on the server too
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert wait_for(lambda: not sshbed.remote_processes(), 15), sshbed.remote_processes()
    assert sshbed.wait_established(0) == 0


def test_kill_9_of_the_kernel_ends_its_engine_after_the_grace(
    sshbed: SSHBed, jupyter_env: str
) -> None:
    grace = 4.0
    spec = add_spec(sshbed, jupyter_env, "killkernel", sshbed.port, reconnect_grace=grace)
    km, kc = start_new_kernel(kernel_name=spec, startup_timeout=120)
    try:
        assert execute(kc, "1 + 1").results()[0]["data"]["text/plain"] == "2"
        workers = remote_pids(sshbed, WORKER)
        assert len(workers) == 1
        os.kill(km.provisioner.pid, signal.SIGKILL)
        killed = time.monotonic()
        time.sleep(1.0)
        assert remote_pids(sshbed, WORKER) == workers, "kept for the grace"
        assert wait_for(lambda: not remote_pids(sshbed, WORKER), grace + 10)
        print(f"engine gone {time.monotonic() - killed:.1f} s after kill -9 of the kernel "
              f"(grace {grace:g} s)")
        assert time.monotonic() - killed >= grace
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert wait_for(lambda: not sshbed.remote_processes(), 15), sshbed.remote_processes()


SERVER = textwrap.dedent("""
    import json, sys, time
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name=sys.argv[1], startup_timeout=120)
    reply = kc.execute_interactive("x = 6 * 7;", timeout=60)
    print("STARTED", json.dumps({"kernel": km.provisioner.pid,
                                 "status": reply["content"]["status"]}), flush=True)
    time.sleep(300)
""")


def _started_line(server: subprocess.Popen[str], timeout: float) -> str:
    """The server's STARTED line (other lines are its log), within ``timeout`` seconds."""
    assert server.stdout is not None
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([server.stdout], [], [], remaining)
        line = server.stdout.readline() if ready else ""
        if line.startswith("STARTED "):
            return line
        if ready and not line:
            break  # it ended
    raise AssertionError(f"the Jupyter-side process did not start a kernel (status "
                         f"{server.poll()})")


@contextmanager
def jupyter_side(spec: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A Jupyter-side process (SERVER) that has started a kernel of ``spec`` on the bed:
    yields it and the kernel's pid, both killed afterwards if still there."""
    server = subprocess.Popen([sys.executable, "-c", SERVER, spec], stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True)
    kernel = 0
    try:
        started = json.loads(_started_line(server, 180).split(" ", 1)[1])
        kernel = started["kernel"]
        assert started["status"] == "ok"
        yield server, kernel
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        if kernel and pid_alive(kernel):
            os.kill(kernel, signal.SIGKILL)


def test_kill_9_of_the_jupyter_side_leaves_nothing_after_the_grace(
    sshbed: SSHBed, jupyter_env: str
) -> None:
    grace = 4.0
    spec = add_spec(sshbed, jupyter_env, "killserver", sshbed.port, reconnect_grace=grace)
    with jupyter_side(spec) as (server, kernel):
        assert remote_pids(sshbed, AGENT) and remote_pids(sshbed, WORKER)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        killed = time.monotonic()
        assert wait_for(lambda: not sshbed.remote_processes(), grace + 15), \
            sshbed.remote_processes()
        print(f"agent and engine gone {time.monotonic() - killed:.1f} s after kill -9 of the "
              f"Jupyter side (grace {grace:g} s)")
        assert wait_gone([kernel], 10) == []  # the orphaned kernel follows its parent


def test_an_exiting_jupyter_side_ends_its_remote_engines_at_once(
    sshbed: SSHBed, jupyter_env: str
) -> None:
    """A server that exits without shutting its kernels down (SIGINT, as JupyterHub stops
    servers) stops its agents on the way out instead of leaving them the whole grace."""
    spec = add_spec(sshbed, jupyter_env, "exitserver", sshbed.port, reconnect_grace=600)
    with jupyter_side(spec) as (server, _):
        assert remote_pids(sshbed, AGENT) and remote_pids(sshbed, WORKER)
        server.send_signal(signal.SIGINT)
        server.wait(30)
        assert wait_for(lambda: not sshbed.remote_processes(), 15), sshbed.remote_processes()


@pytest.mark.parametrize("grace", [30.0, 0.0])
def test_kill_9_of_the_agent_ends_its_engine(sshbed: SSHBed, tmp_path, grace: float) -> None:
    """Nobody is left to end the engine: it must notice that its parent is gone.  With a
    reconnect grace the pool then starts a new agent behind the same forward, with the same
    token (the kernels open their sessions again there); without one the lease dies."""
    target = resolve_target(sshbed.host, port=sshbed.port, user=sshbed.user,
                            identity_file=sshbed.key_file, known_hosts=sshbed.known_hosts)
    options = ConnectOptions(agent=AgentSettings(python=sshbed.remote_python, start_timeout=30),
                             log_dir=str(tmp_path), reconnect_grace=grace)
    lease = POOL.acquire(target, options)
    client = AgentClient(Endpoint("127.0.0.1", lease.port, lease.token, session="k9"))
    try:
        client.open(timeout=120, keep=30)
        workers = remote_pids(sshbed, WORKER)
        assert len(workers) == 1
        old, port = lease.agent.pid, lease.port
        os.kill(old, signal.SIGKILL)  # the bed's "remote" processes are ours
        assert wait_gone(workers, 10) == [], "the engine outlived its agent"
        if grace:
            assert lease.alive()
            assert wait_for(lambda: lease.agent.pid != old and lease.agent.alive(), 15)
            assert lease.port == port and lease.alive()
            assert "killed by a signal" in lease.slot.last_end
            assert [pid for pid, _ in sshbed.remote_processes("--token-stdin")] == \
                [lease.agent.pid]
            again = AgentClient(Endpoint("127.0.0.1", lease.port, lease.token, session="k9b"))
            again.open(timeout=120)  # the same token opens a session on the new agent
            again.close()
        else:
            assert wait_for(lambda: not lease.alive(), 10)
            assert "killed by a signal" in lease.death_reason()
    finally:
        client.close()
        POOL.release(lease)
    assert sshbed.wait_established(0) == 0


# -- the pool alone (no engine) ----------------------------------------------------------------


def _lease_through(bed: SSHBed, proxy: ShapingProxy, tmp_path, grace: float):
    target = resolve_target(proxy.host, port=proxy.port, user=bed.user,
                            identity_file=bed.key_file, known_hosts=bed.known_hosts)
    options = ConnectOptions(agent=AgentSettings(python=bed.remote_python, start_timeout=30),
                             log_dir=str(tmp_path), keepalive=0.5, connect_timeout=1.0,
                             reconnect_grace=grace)
    return POOL.acquire(target, options)


def test_a_connection_that_stays_down_fails_after_the_grace(sshbed: SSHBed, sshbed_proxy,
                                                             tmp_path) -> None:
    proxy = sshbed_proxy(delay_ms=1, rate_bps=None)
    lease = _lease_through(sshbed, proxy, tmp_path, grace=3.0)
    try:
        proxy.cut()
        cut = time.monotonic()
        assert wait_for(lambda: lease.shared.reconnecting_since is not None, 5)
        assert lease.alive(), "alive while re-establishing"
        assert wait_for(lambda: not lease.alive(), 10)
        print(f"given up {time.monotonic() - cut:.1f} s after the cut: {lease.death_reason()}")
        assert "could not be re-established for 3 s" in lease.death_reason()
    finally:
        proxy.restore()
        POOL.release(lease)
    # No session is kept on that agent: its lifeline's end ends it.
    assert wait_for(lambda: not sshbed.remote_processes(), 20), sshbed.remote_processes()


def test_an_agent_gone_meanwhile_is_replaced(sshbed: SSHBed, sshbed_proxy, tmp_path) -> None:
    """An agent found gone when the connection is re-established (the remote host restarted,
    or a new agent with no session yet ended with its lifeline) is replaced behind the same
    forward, and says how it was found."""
    proxy = sshbed_proxy(delay_ms=1, rate_bps=None)
    lease = _lease_through(sshbed, proxy, tmp_path, grace=30.0)
    try:
        old, port = lease.agent.pid, lease.port
        proxy.cut()
        assert wait_for(lambda: lease.shared.reconnecting_since is not None, 5)
        assert sshbed.kill_remote_processes(AGENT) == 1  # as if the remote host restarted
        proxy.restore()
        assert wait_for(lambda: lease.shared.reconnects == 1 and lease.agent.pid != old
                        and lease.agent.alive(), 20)
        assert lease.alive() and lease.port == port
        assert f"the agent (pid {old}) was gone" in lease.slot.last_end
        assert [pid for pid, _ in sshbed.remote_processes(AGENT)] == [lease.agent.pid]
    finally:
        POOL.release(lease)
    assert sshbed.wait_established(0) == 0


def test_a_reconnect_ends_an_agent_that_runs_but_does_not_answer(sshbed: SSHBed,
                                                                  tmp_path) -> None:
    """After a reconnect the pool checks each agent through its forward; one that still
    runs but does not answer (here: SIGSTOPped) is ended before a new one takes its place,
    so that the host never holds two agents (and twice the engines) for one connection."""
    target = resolve_target(sshbed.host, port=sshbed.port, user=sshbed.user,
                            identity_file=sshbed.key_file, known_hosts=sshbed.known_hosts)
    options = ConnectOptions(agent=AgentSettings(python=sshbed.remote_python, start_timeout=30),
                             log_dir=str(tmp_path), reconnect_grace=30.0, connect_timeout=1.0)
    lease = POOL.acquire(target, options)
    try:
        old = lease.agent.pid
        os.kill(old, signal.SIGSTOP)  # the bed's "remote" processes are ours
        # What the watcher does once a new connection is up (here: the same one).
        assert POOL._take_over(lease.shared, lease.shared.connection)
        assert wait_gone([old], 15) == [], "the agent that did not answer is still there"
        # Replaced (by the pool's watcher, once the old one's channel has ended).
        assert wait_for(lambda: lease.agent.pid != old and lease.agent.alive(), 15)
        assert "did not answer" in lease.slot.last_end, lease.slot.last_end
        assert [pid for pid, _ in sshbed.remote_processes(AGENT)] == [lease.agent.pid]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(old, signal.SIGCONT)
        POOL.release(lease)
