"""The ssh transport against a real OpenSSH server (tests/sshbed.py), through jupyter_client's
KernelManager with ``rk-NAME`` kernelspecs written by the CLI, as JupyterLab would use them.

One kernel is shared by most tests of this module (Mathics3 starts in seconds, not
milliseconds); the connection-level tests drive the pool directly and start no engine.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager, start_new_kernel

from rk_jupyter.agent.engines.mathics.template import WORKER_TITLE
from rk_jupyter.cli import main as cli
from rk_jupyter.provisioning.ssh.connect import connect
from rk_jupyter.provisioning.ssh.pool import POOL, ConnectOptions
from rk_jupyter.provisioning.ssh.remote_agent import AgentSettings
from rk_jupyter.provisioning.ssh.target import load_ssh_config, resolve_target
from rk_jupyter.provisioning.transports import TransportError

from kernel_helpers import execute, interrupt_endless_loop, start_fails, wait_for
from sshbed import SSHBed

CONNECT_TIMEOUT = 10.0  # the provisioner's default
SFTP = r"subsystem 'sftp' for rkjtest"
LOGIN = r"Accepted publickey for rkjtest "
AGENT = r"(agent\.pyz|-m rk_jupyter\.agent) --host"  # not the worker (its argv names the pyz)
WORKER = r"mathics[/._]worker"  # the Mathics3 worker, by its module or file
OWN_AGENT = r"agent\.pyz --host"  # the zipapp agent of spec own-agent (the others import)


@pytest.fixture(autouse=True)
def _say_bed_mode(sshbed: SSHBed, monkeypatch: pytest.MonkeyPatch) -> None:
    print(f"\nsshbed mode: {sshbed.mode} ({sshbed!r})")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # only keys the test chooses


def add_spec(bed: SSHBed, prefix: str, name: str, *extra: str, identity: str | None = None,
             known_hosts: str | None = None, python: str | None = None) -> str:
    """Install rk-NAME for the bed's host with the CLI, as a user would."""
    argv = ["add", name, "--host", f"{bed.user}@{bed.host}:{bed.port}",
            "--identity", identity or bed.key_file,
            "--known-hosts", known_hosts or bed.known_hosts,
            "--remote-python", python or bed.remote_python, "--prefix", prefix, *extra]
    assert cli(argv) == 0
    return f"rk-{name}"



def remote_pids(bed: SSHBed, pattern: str) -> list[int]:
    return [pid for pid, _ in bed.remote_processes(pattern)]


def lease_of(km: KernelManager):
    return km.provisioner.transport.lease


# -- one kernel shared by the module ------------------------------------------------------------


@dataclass
class Remote:
    km: KernelManager
    kc: object
    spec: str
    started_in: float
    sftp_before: int


@pytest.fixture(scope="module")
def remote(sshbed: SSHBed, jupyter_env: str) -> Iterator[Remote]:
    """A kernel on the bed, with the agent forced through the zipapp path and the remote
    cache emptied first, so that its start deploys the agent."""
    sshbed.run_remote("rm -rf ~/.cache/rk_jupyter")
    spec = add_spec(sshbed, jupyter_env, "sshbed", "--agent-deploy", "zipapp")
    sftp_before = sshbed.count_log(SFTP)
    started = time.monotonic()
    km, kc = start_new_kernel(kernel_name=spec, startup_timeout=120)
    remote = Remote(km, kc, spec, time.monotonic() - started, sftp_before)
    yield remote
    kc.stop_channels()
    if km.has_kernel:
        km.shutdown_kernel(now=True)


def test_first_start_deploys_the_agent_over_sftp(remote: Remote, sshbed: SSHBed) -> None:
    lease = lease_of(remote.km)
    print(f"cold start to ready: {remote.started_in:.2f} s; {lease.timings}")
    assert lease.agent.deployed
    assert sshbed.count_log(SFTP) == remote.sftp_before + 1
    listing = sshbed.run_remote("ls -l ~/.cache/rk_jupyter/*/agent.pyz").stdout
    assert "agent.pyz" in listing and "-rw-------" in listing
    [(_, cmdline)] = sshbed.remote_processes(AGENT)
    assert "agent.pyz" in cmdline and "--token-stdin" in cmdline
    # The worker is forked from a template that runs from the archive too (no rk_jupyter
    # files on disk for it).
    [(_, template)] = sshbed.remote_processes(r"mathics[/._]template")
    assert "agent.pyz" in template
    [(_, worker)] = sshbed.remote_processes(WORKER)
    assert worker == WORKER_TITLE
    assert sshbed.established_ssh_connections() == 1


def test_results_print_messages_and_svg(remote: Remote) -> None:
    kc = remote.kc
    run = execute(kc, "1 + 1")
    assert run.reply["status"] == "ok"
    assert run.results()[0]["data"]["text/plain"] == "2"
    run = execute(kc, 'Print["early"]; Pause[1]; 42')
    assert run.first("stream")["content"] == {"name": "stdout", "text": "early\n"}
    assert run.first("execute_result")["received"] - run.first("stream")["received"] > 0.7
    run = execute(kc, "1/0")
    assert "Power::infy" in run.streams("stderr")
    assert run.results()[0]["data"]["text/plain"] == "ComplexInfinity"
    svg = execute(kc, "Graphics[{Red, Disk[]}]").results()[0]["data"]
    assert "<svg" in svg["image/svg+xml"]


@pytest.mark.parametrize("how", ["message", "signal"])
def test_interrupt_aborts_and_keeps_definitions(remote: Remote, how: str) -> None:
    print(f"interrupt by {how}: {interrupt_endless_loop(remote.km, remote.kc, how):.2f} s")


def test_second_kernel_shares_the_connection_and_the_agent(remote: Remote,
                                                           sshbed: SSHBed) -> None:
    logins, sftp = sshbed.count_log(LOGIN), sshbed.count_log(SFTP)
    mtime = sshbed.run_remote("stat -c %Y ~/.cache/rk_jupyter/*/agent.pyz").stdout
    [agent] = remote_pids(sshbed, AGENT)
    started = time.monotonic()
    km2, kc2 = start_new_kernel(kernel_name=remote.spec, startup_timeout=120)
    try:
        warm = time.monotonic() - started
        lease = lease_of(km2)
        print(f"warm start to ready: {warm:.2f} s (cold was {remote.started_in:.2f} s); "
              f"{lease.timings}")
        assert lease.timings == {"connect": 0.0, "agent": 0.0}
        assert lease.shared is lease_of(remote.km).shared
        assert sshbed.established_ssh_connections() == 1
        assert sshbed.count_log(LOGIN) == logins
        assert sshbed.count_log(SFTP) == sftp  # not copied again
        assert sshbed.run_remote("stat -c %Y ~/.cache/rk_jupyter/*/agent.pyz").stdout == mtime
        assert remote_pids(sshbed, AGENT) == [agent]
        assert len(remote_pids(sshbed, WORKER)) == 2  # each kernel its own engine
        execute(remote.kc, "shared = 1;")
        assert execute(kc2, "shared").results()[0]["data"]["text/plain"] == "shared"
    finally:
        kc2.stop_channels()
        km2.shutdown_kernel(now=False)
    assert wait_for(lambda: len(remote_pids(sshbed, WORKER)) == 1)
    assert remote_pids(sshbed, AGENT) == [agent]
    assert sshbed.established_ssh_connections() == 1
    assert execute(remote.kc, "shared + 1").results()[0]["data"]["text/plain"] == "2"


def test_agent_port_refuses_links_without_the_token(remote: Remote, sshbed: SSHBed) -> None:
    lease = lease_of(remote.km)
    probe = (
        "from rk_jupyter.link.connection import Link\n"
        "try:\n"
        f"    Link.connect('127.0.0.1', {lease.agent.port}, b'not-the-token-0123456789', "
        "'none', timeout=10)\n"
        "    print('ACCEPTED')\n"
        "except Exception as exc:\n"
        "    print('REFUSED', type(exc).__name__, exc)\n"
    )
    res = sshbed.run_remote(shlex.join([sshbed.remote_python, "-c", probe]))
    print(res.stdout, res.stderr)
    assert res.stdout.startswith("REFUSED"), res.stdout + res.stderr
    assert "token" in res.stdout.lower()
    with open(lease.agent.log_path) as handle:
        assert "refused link" in handle.read()
    assert execute(remote.kc, "6 * 7").results()[0]["data"]["text/plain"] == "42"


def test_restart_reuses_the_connection_and_the_agent(remote: Remote, sshbed: SSHBed) -> None:
    km, kc = remote.km, remote.kc
    execute(kc, "z = 7;")
    logins = sshbed.count_log(LOGIN)
    agents, workers = remote_pids(sshbed, AGENT), remote_pids(sshbed, WORKER)
    started = time.monotonic()
    km.restart_kernel(now=False)
    kc.wait_for_ready(timeout=120)
    print(f"restart to ready: {time.monotonic() - started:.2f} s")
    assert execute(kc, "z").results()[0]["data"]["text/plain"] == "z"
    assert sshbed.count_log(LOGIN) == logins
    assert sshbed.established_ssh_connections() == 1
    assert remote_pids(sshbed, AGENT) == agents
    assert wait_for(lambda: not set(workers) & set(remote_pids(sshbed, WORKER)))


def test_shutdown_leaves_nothing_on_the_remote(remote: Remote, sshbed: SSHBed) -> None:
    assert remote_pids(sshbed, AGENT) and remote_pids(sshbed, WORKER)
    remote.kc.stop_channels()
    remote.km.shutdown_kernel(now=False)
    assert wait_for(lambda: sshbed.remote_processes() == []), sshbed.remote_processes()
    assert sshbed.wait_established(0) == 0
    assert POOL.connections() == []


def test_kill_leaves_nothing_and_the_agent_copy_is_reused(remote: Remote,
                                                          sshbed: SSHBed) -> None:
    sftp = sshbed.count_log(SFTP)
    km, kc = start_new_kernel(kernel_name=remote.spec, startup_timeout=120)
    try:
        assert not lease_of(km).agent.deployed  # a new connection, the cached copy
        assert sshbed.count_log(SFTP) == sftp
        assert remote_pids(sshbed, AGENT) and remote_pids(sshbed, WORKER)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert wait_for(lambda: sshbed.remote_processes() == []), sshbed.remote_processes()
    assert sshbed.wait_established(0) == 0


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["unknown-host-key", "changed-host-key", "refused-key"])
def test_untrusted_host_or_refused_key_fails_fast_and_clearly(
    case: str, sshbed: SSHBed, jupyter_env: str, tmp_path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    options = {
        "unknown-host-key": {"known_hosts": str(empty)},
        "changed-host-key": {"known_hosts": sshbed.wrong_known_hosts},
        "refused-key": {"identity": sshbed.unauthorized_key_file},
    }[case]
    spec = add_spec(sshbed, jupyter_env, case, **options)
    logins = sshbed.count_log(LOGIN)
    message = start_fails(spec, CONNECT_TIMEOUT + 2)
    if case == "unknown-host-key":
        assert "is unknown" in message
        assert f"ssh-keyscan -p {sshbed.port} -t ed25519 {sshbed.host} >> {empty}" in message
    elif case == "changed-host-key":
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in message
        assert f"{sshbed.wrong_known_hosts}:1" in message
    else:
        assert "refused the login of rkjtest" in message
        assert sshbed.unauthorized_key_file in message and "authorized_keys" in message
    assert sshbed.count_log(LOGIN) == logins
    assert sshbed.remote_processes(AGENT) == []
    assert sshbed.wait_established(0) == 0


# -- a remote Python without Mathics3 (nor rk_jupyter, nor brotli) ---------------------------------


@pytest.fixture(scope="module")
def bare_python() -> Iterator[str]:
    """A venv with nothing installed, readable by the bed's accounts."""
    root = tempfile.mkdtemp(prefix="rkj-bare-venv-")
    os.chmod(root, 0o755)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root], check=True,
                   timeout=120)
    yield os.path.join(root, "bin", "python")
    shutil.rmtree(root, ignore_errors=True)


def test_missing_engine_is_a_start_error(
    sshbed: SSHBed, jupyter_env: str, bare_python: str
) -> None:
    """The provisioner starts the engine before the kernel process, so JupyterLab's start
    dialog names the cause; the zipapp ran since the bare Python cannot import rk_jupyter."""
    spec = add_spec(sshbed, jupyter_env, "bare", python=bare_python)
    km = KernelManager(kernel_name=spec)
    started = time.monotonic()
    with pytest.raises(TransportError) as failure:
        km.start_kernel()
    print(f"refused after {time.monotonic() - started:.2f} s: {failure.value}")
    message = " ".join(str(failure.value).split())
    assert "Mathics3 is not installed for the Python interpreter" in message
    assert f"{bare_python} -m pip install Mathics3" in message
    assert not km.has_kernel
    assert wait_for(lambda: sshbed.remote_processes() == []), sshbed.remote_processes()
    assert sshbed.wait_established(0) == 0


def test_agent_death_is_seen_by_the_manager_without_a_grace(sshbed: SSHBed,
                                                            jupyter_env: str) -> None:
    """With reconnect_grace 0 nothing replaces an agent that ends: the kernel ends with it,
    and the manager sees why (with a grace, tests/test_agent_replaced.py)."""
    spec = add_spec(sshbed, jupyter_env, "own-agent", "--agent-deploy", "zipapp")
    path = os.path.join(KernelSpecManager().get_kernel_spec(spec).resource_dir, "kernel.json")
    with open(path) as handle:
        kernel_json = json.load(handle)
    kernel_json["metadata"]["kernel_provisioner"]["config"]["reconnect_grace"] = 0
    with open(path, "w") as handle:
        json.dump(kernel_json, handle)
    km, kc = start_new_kernel(kernel_name=spec, startup_timeout=120)
    try:
        assert len(sshbed.remote_processes(OWN_AGENT)) == 1
        assert execute(kc, "1 + 1").results()[0]["data"]["text/plain"] == "2"
        assert sshbed.kill_remote_processes(OWN_AGENT) == 1
        started = time.monotonic()
        assert wait_for(lambda: not km.is_alive(), timeout=10)
        print(f"agent death seen by the manager after {time.monotonic() - started:.2f} s")
        assert "exited" in km.provisioner.transport.death_reason()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert wait_for(lambda: not sshbed.remote_processes(OWN_AGENT))


# -- the connection itself (no engine) ----------------------------------------------------------


def _options(bed: SSHBed, tmp_path, **kw) -> ConnectOptions:
    agent = AgentSettings(python=bed.remote_python, start_timeout=30)
    return ConnectOptions(agent=agent, log_dir=str(tmp_path), **kw)


def test_ssh_config_alias_and_proxy_jump(sshbed: SSHBed, tmp_path) -> None:
    config = load_ssh_config(sshbed.ssh_config)
    target = resolve_target(sshbed.host_alias, ssh_config=config)
    assert (target.user, target.hostname, target.port) == (sshbed.user, sshbed.host, sshbed.port)
    lease = POOL.acquire(target, _options(sshbed, tmp_path))
    try:
        assert lease.alive()
        assert "rk_jupyter.agent" in sshbed.remote_processes(AGENT)[0][1]  # installed: used
    finally:
        POOL.release(lease)
    logins = sshbed.count_log(LOGIN)
    jumped = resolve_target(sshbed.host, port=sshbed.port, user=sshbed.user,
                            identity_file=sshbed.key_file, known_hosts=sshbed.known_hosts,
                            proxy_jump=f"{sshbed.user}@{sshbed.host}:{sshbed.port}")
    lease = POOL.acquire(jumped, _options(sshbed, tmp_path))
    try:
        assert sshbed.count_log(LOGIN) == logins + 2  # the jump host, then the target
        assert sshbed.established_ssh_connections() == 2
        assert lease.shared.connection.run("id -un", 10) == (0, f"{sshbed.user}\n")
    finally:
        POOL.release(lease)
    assert sshbed.wait_established(0) == 0


def test_accept_new_records_the_host_key(sshbed: SSHBed, tmp_path) -> None:
    known = tmp_path / "known_hosts"
    target = resolve_target(sshbed.host, port=sshbed.port, user=sshbed.user,
                            identity_file=sshbed.key_file, known_hosts=str(known))
    lease = POOL.acquire(target, _options(sshbed, tmp_path, host_key_policy="accept-new"))
    POOL.release(lease)
    assert known.read_text().split()[1:] == sshbed.host_key.split()[:2]
    POOL.release(POOL.acquire(target, _options(sshbed, tmp_path)))  # strict passes now


def test_concurrent_starts_make_one_connection(sshbed: SSHBed, tmp_path) -> None:
    target = resolve_target(sshbed.host, port=sshbed.port, user=sshbed.user,
                            identity_file=sshbed.key_file, known_hosts=sshbed.known_hosts)
    leases: list = []
    threads = [threading.Thread(target=lambda: leases.append(
        POOL.acquire(target, _options(sshbed, tmp_path)))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert len(leases) == 3
        assert len({id(lease.shared) for lease in leases}) == 1
        assert len({lease.port for lease in leases}) == 1
        assert sshbed.established_ssh_connections() == 1
        assert len(remote_pids(sshbed, AGENT)) == 1
    finally:
        for lease in leases:
            POOL.release(lease)
    assert sshbed.wait_established(0) == 0
    assert wait_for(lambda: sshbed.remote_processes() == [])


def test_lost_connection_is_noticed(sshbed: SSHBed, sshbed_proxy, tmp_path) -> None:
    proxy = sshbed_proxy(delay_ms=1, rate_bps=None)
    target = resolve_target(proxy.host, port=proxy.port, user=sshbed.user,
                            identity_file=sshbed.key_file, known_hosts=sshbed.known_hosts)
    lease = POOL.acquire(target, _options(sshbed, tmp_path, keepalive=0.5))
    try:
        assert lease.alive()
        proxy.cut()  # a dead network: no FIN, no RST, just silence
        started = time.monotonic()
        assert wait_for(lambda: not lease.alive(), timeout=5)
        print(f"silent network noticed after {time.monotonic() - started:.2f} s: "
              f"{lease.death_reason()}")
        assert "no answer to keepalive" in lease.death_reason()
    finally:
        proxy.restore()
        POOL.release(lease)
    # The agent's lifeline was the lost connection: it ends on its own.
    assert wait_for(lambda: sshbed.remote_processes() == [], timeout=20)


@pytest.fixture
def ssh_agent(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private ssh-agent, empty, on $SSH_AUTH_SOCK."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(sock.exists, timeout=10)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    yield str(sock)
    agent.terminate()
    agent.wait(timeout=10)


def test_passphrase_protected_key_works_through_ssh_agent(sshbed: SSHBed, ssh_agent: str,
                                                          tmp_path) -> None:
    locked = tmp_path / "locked_key"
    shutil.copy(sshbed.key_file, locked)
    shutil.copy(sshbed.key_file + ".pub", str(locked) + ".pub")
    os.chmod(locked, 0o600)
    passphrase = "correct horse battery staple"
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", passphrase, "-f", str(locked)],
                   check=True, timeout=30, capture_output=True)
    target = resolve_target(sshbed.host, port=sshbed.port, user=sshbed.user,
                            identity_file=str(locked), known_hosts=sshbed.known_hosts)
    with pytest.raises(TransportError) as error:
        connect(target, "strict", CONNECT_TIMEOUT, 0)
    message = str(error.value)
    print(message)
    assert "passphrase-protected" in message and f"ssh-add {locked}" in message
    assert passphrase not in message
    subprocess.run(["ssh-add", sshbed.key_file], check=True, timeout=30, capture_output=True)
    connection = connect(target, "strict", CONNECT_TIMEOUT, 0)  # the agent holds the key
    try:
        assert connection.run("id -un", 10) == (0, f"{sshbed.user}\n")
    finally:
        connection.close()
