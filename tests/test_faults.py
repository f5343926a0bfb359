"""The fault catalogue: each fault injected for real (on the SSH test bed, or on this machine
where the fault is local), and the kernel start fails through jupyter_client's KernelManager —
the call JupyterLab makes — with a TransportError that names the cause and the fix, within
``connect_timeout`` + 2 s.  The last test kills a running kernel's agent.

Every fault runs on both SSH clients (kernelspec ``ssh_client``): the system's OpenSSH (the
default) and paramiko (the fallback); each must name the same cause with the same code.

The beds here use an account of their own (FAULT_USER), so that what is done to its home
(a full or read-only ``~/.cache``) cannot disturb other tests' accounts.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

from rk_jupyter import kernelspec
from rk_jupyter.link.handshake import PROTOCOL_VERSION

import kernel_helpers
from kernel_helpers import execute
from sshbed import SSHBed

CONNECT_TIMEOUT = 4.0
BOUND = CONNECT_TIMEOUT + 2.0  # what the issue allows for every fault


def start_fails(code: str, spec: str) -> str:
    """The start error of a spec (whitespace folded), within BOUND and with ``code``."""
    return kernel_helpers.start_fails(spec, BOUND, code)


FAULT_USER = "rkjfaults"
AGENT = r"(agent\.pyz|-m rk_jupyter\.agent) --host"


SSH_CLIENT = "openssh"  # the backend of the kernelspecs ``install`` writes (see ssh_client)


@pytest.fixture(autouse=True)
def _only_chosen_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # only the keys a test names


@pytest.fixture(autouse=True, params=["openssh", "paramiko"])
def ssh_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sys.modules[__name__], "SSH_CLIENT", request.param)
    return request.param


@pytest.fixture(scope="module")
def bed(sshbed_factory: Callable[..., SSHBed]) -> SSHBed:
    """The module's plain bed, on its own account."""
    return sshbed_factory(users=[FAULT_USER])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def install(prefix: str, name: str, config: dict[str, Any]) -> str:
    kernelspec.install(name, f"fault {name}", {"engine": "mathics", "ssh_client": SSH_CLIENT,
                                               "connect_timeout": CONNECT_TIMEOUT, **config},
                       prefix=prefix)
    return f"rk-{name}" if not name.startswith("rk-") else name


def on_bed(bed: SSHBed, prefix: str, name: str, **overrides: Any) -> str:
    """rk-NAME for ``bed``'s host and account."""
    return install(prefix, name, {
        "transport": "ssh", "host": bed.host, "port": bed.port, "user": bed.user,
        "identity_file": bed.key_file, "known_hosts": bed.known_hosts,
        "remote_python": bed.remote_python, **overrides,
    })


def nothing_left(bed: SSHBed) -> None:
    deadline = time.monotonic() + 15
    while bed.remote_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bed.remote_processes() == []
    assert bed.wait_established(0) == 0


def account_script(bed: SSHBed, name: str, text: str) -> str:
    """An executable script the bed's account can run (in the bed's 0711 tmpdir)."""
    path = Path(bed.tmpdir) / name
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def in_sshd_mounts(bed: SSHBed, *argv: str) -> None:
    """Run argv (as root) in sshd's mount namespace: a mount there is seen by the bed's
    sessions only, and goes with the bed."""
    done = subprocess.run(["nsenter", "-t", str(bed.sshd_pid), "-m", "--", *argv],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


# -- reaching the host ---------------------------------------------------------------------------


def test_host_name_does_not_resolve(jupyter_env: str) -> None:
    message = start_fails("ssh.dns-unresolved", install(jupyter_env, "f-dns", {
        "transport": "ssh", "host": "rkj-faults-nowhere.invalid"}))
    assert "cannot resolve the host name 'rkj-faults-nowhere.invalid'" in message
    assert "HostName" in message and "kernelspec" in message


def test_connection_refused(jupyter_env: str) -> None:
    port = free_port()
    message = start_fails("ssh.refused", install(jupyter_env, "f-refused", {
        "transport": "ssh", "host": "127.0.0.1", "port": port}))
    assert f"127.0.0.1:{port} refused the connection" in message
    assert "sshd" in message and "port" in message


def test_no_answer_from_a_firewalled_port(bed: SSHBed, jupyter_env: str) -> None:
    if bed.mode != "netns":
        pytest.skip(f"no firewall in {bed.mode} mode")
    started = time.monotonic()
    message = start_fails("ssh.no-answer", on_bed(bed, jupyter_env, "f-drop", port=2222))
    assert time.monotonic() - started >= CONNECT_TIMEOUT - 0.1
    assert f"no answer from {bed.host}:2222 within {CONNECT_TIMEOUT:g} s" in message
    assert "firewall" in message and "connect_timeout" in message


def test_proxy_jump_host_unreachable(bed: SSHBed, jupyter_env: str) -> None:
    port = free_port()
    message = start_fails("ssh.jump-unreachable",
                          on_bed(bed, jupyter_env, "f-jump",
                                 proxy_jump=f"{bed.user}@127.0.0.1:{port}"))
    assert f"the jump host {bed.user}@127.0.0.1:{port}" in message
    assert "refused the connection" in message and "proxy_jump" in message


# -- trust and login -----------------------------------------------------------------------------


def test_unknown_host_key(bed: SSHBed, jupyter_env: str, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    message = start_fails("ssh.host-key-unknown",
                          on_bed(bed, jupyter_env, "f-unknown", known_hosts=str(empty)))
    assert "is unknown" in message
    assert f"ssh-keyscan -p {bed.port} -t ed25519 {bed.host} >> {empty}" in message
    nothing_left(bed)


def test_changed_host_key(bed: SSHBed, jupyter_env: str) -> None:
    message = start_fails("ssh.host-key-changed",
                          on_bed(bed, jupyter_env, "f-changed",
                                 known_hosts=bed.wrong_known_hosts))
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in message
    assert f"ssh-keygen -f {bed.wrong_known_hosts} -R" in message


def test_key_refused(bed: SSHBed, jupyter_env: str) -> None:
    message = start_fails("ssh.auth-refused",
                          on_bed(bed, jupyter_env, "f-refused-key",
                                 identity_file=bed.unauthorized_key_file))
    assert f"refused the login of {bed.user}" in message
    assert bed.unauthorized_key_file in message and "authorized_keys" in message


def test_no_usable_key(bed: SSHBed, jupyter_env: str, tmp_path: Path) -> None:
    missing = tmp_path / "id_missing"
    message = start_fails("ssh.auth-no-key",
                          on_bed(bed, jupyter_env, "f-no-key", identity_file=str(missing)))
    assert f"no usable key to log in to {bed.host}:{bed.port} as {bed.user}" in message
    assert f"{missing} does not exist" in message and "set identity_file" in message


@pytest.fixture
def empty_ssh_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private ssh-agent holding no key, on $SSH_AUTH_SOCK."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    yield str(sock)
    agent.terminate()
    agent.wait(timeout=10)


def test_empty_ssh_agent_and_a_locked_key(bed: SSHBed, jupyter_env: str, tmp_path: Path,
                                          empty_ssh_agent: str) -> None:
    locked = tmp_path / "locked_key"
    shutil.copy(bed.key_file, locked)
    os.chmod(locked, 0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", "a passphrase", "-f",
                    str(locked)], check=True, timeout=30, capture_output=True)
    message = start_fails("ssh.auth-no-key",
                          on_bed(bed, jupyter_env, "f-agent-empty", identity_file=str(locked)))
    assert f"ssh-agent ({empty_ssh_agent}) holds no keys" in message
    assert f"{locked} is passphrase-protected" in message and f"ssh-add {locked}" in message


# -- the remote account --------------------------------------------------------------------------


@pytest.mark.parametrize("login", ["no-shell", "prints"])
def test_account_without_shell_or_with_a_noisy_login(
    login: str, sshbed_factory: Callable[..., SSHBed], jupyter_env: str
) -> None:
    """sshd's ForceCommand stands in for the account's login: a shell that refuses commands,
    or a startup file that prints (which corrupts the SFTP channel the agent is copied by)."""
    command = {"no-shell": "/usr/sbin/nologin",
               "prints": 'echo "Welcome to the cluster"; eval "$SSH_ORIGINAL_COMMAND"'}[login]
    bed = sshbed_factory(users=[FAULT_USER], sshd_options={"ForceCommand": command})
    bed.run_remote("rm -rf ~/.cache/rk_jupyter")
    code = {"no-shell": "login.no-shell", "prints": "login.noisy"}[login]
    message = start_fails(code,
                          on_bed(bed, jupyter_env, f"f-{login}", agent_deploy="zipapp"))
    if login == "no-shell":
        assert f"the account {bed.user} on {bed.host} cannot run commands" in message
        assert "This account is currently not available" in message
        assert "chsh -s /bin/bash" in message
    else:
        assert "prints 'Welcome to the cluster' on stdout" in message
        assert "[[ $- == *i* ]] || return" in message
    nothing_left(bed)


def test_port_forwarding_disabled(sshbed_factory: Callable[..., SSHBed],
                                  jupyter_env: str) -> None:
    bed = sshbed_factory(users=[FAULT_USER], sshd_options={"AllowTcpForwarding": "no"})
    message = start_fails("ssh.forwarding-refused", on_bed(bed, jupyter_env, "f-no-forwarding"))
    assert "refuses port forwarding" in message and "AllowTcpForwarding" in message
    nothing_left(bed)


def test_remote_python_missing(bed: SSHBed, jupyter_env: str) -> None:
    message = start_fails("agent.python-missing",
                          on_bed(bed, jupyter_env, "f-no-python",
                                 remote_python="/nonexistent/python3"))
    assert "the remote Python '/nonexistent/python3' was not found" in message
    assert "set remote_python in the kernelspec" in message


def test_remote_python_too_old(bed: SSHBed, jupyter_env: str) -> None:
    """No Python older than 3.10 exists here: this one reports itself as 3.8.18
    (sitecustomize sets sys.version_info before the agent's own check reads it)."""
    site = Path(bed.tmpdir) / "old-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import sys\nsys.version_info = (3, 8, 18, 'final', 0)\n"
        "sys.version = '3.8.18 (default)'\n")
    os.chmod(site, 0o755)
    old = account_script(bed, "python3.8", f"#!/bin/sh\nPYTHONPATH={site} "
                                           f"exec {bed.remote_python} \"$@\"\n")
    message = start_fails("agent.python-old",
                          on_bed(bed, jupyter_env, "f-old-python", remote_python=old,
                                 agent_deploy="zipapp"))
    assert f"{old} on {bed.user}@{bed.host}:{bed.port} is Python 3.8.18" in message
    assert "3.10 or newer" in message and "set remote_python in the kernelspec" in message


@pytest.mark.parametrize("fault", ["no-space", "read-only"])
def test_agent_copy_fails(fault: str, sshbed_factory: Callable[..., SSHBed],
                          jupyter_env: str) -> None:
    """A 16 KiB tmpfs on ~/.cache, or the whole home read-only — mounted in sshd's mount
    namespace only."""
    bed = sshbed_factory(users=[FAULT_USER])
    home = bed.account.home
    bed.run_remote("rm -rf ~/.cache/rk_jupyter; mkdir -p ~/.cache")
    if fault == "no-space":
        in_sshd_mounts(bed, "mount", "-t", "tmpfs", "-o",
                       f"size=16k,uid={bed.account.uid},mode=0700", "rkj-full",
                       f"{home}/.cache")
    else:
        in_sshd_mounts(bed, "mount", "--bind", home, home)
        in_sshd_mounts(bed, "mount", "-o", "remount,bind,ro", home)
    message = start_fails("agent.copy-failed",
                          on_bed(bed, jupyter_env, f"f-{fault}", agent_deploy="zipapp"))
    assert "cannot copy the agent" in message
    cause = {"no-space": "No space left on device", "read-only": "Read-only file system"}
    assert cause[fault] in message
    assert "agent_deploy" in message
    nothing_left(bed)


# -- the engine ----------------------------------------------------------------------------------


def test_mathics_not_installed(bed: SSHBed, jupyter_env: str) -> None:
    """The engine's Python (engine option python) is one without Mathics3."""
    bare = "/usr/bin/python3"
    probe = subprocess.run([bare, "-c", "import mathics"], capture_output=True, timeout=60)
    if probe.returncode == 0:
        pytest.skip(f"{bare} has Mathics3")
    message = start_fails("engine.start-failed",
                          on_bed(bed, jupyter_env, "f-no-mathics",
                                 engine_options={"python": bare}))
    assert f"Mathics3 is not installed for the Python interpreter {bare}" in message
    marker = subprocess.run([bare, "-c", "import os, sysconfig; print(os.path.isfile(os.path.join("
                             "sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))"],
                            capture_output=True, text=True, timeout=60).stdout.strip()
    if marker == "True":  # PEP 668 (Debian 12, Ubuntu 24.04): pip would refuse; a venv works
        assert "externally-managed-environment" in message
        assert "python3 -m venv ~/rk-venv && ~/rk-venv/bin/pip install Mathics3" in message
        assert f"{bare} -m pip install Mathics3" not in message
    else:
        assert f"{bare} -m pip install Mathics3" in message
    nothing_left(bed)


def test_wolfram_kernel_path_wrong(bed: SSHBed, jupyter_env: str) -> None:
    message = start_fails("engine.start-failed",
                          on_bed(bed, jupyter_env, "f-wolfram", engine="wolfram",
                                 engine_options={"kernel_path": "/nonexistent/WolframKernel"}))
    assert "/nonexistent/WolframKernel does not exist" in message and "--kernel-path" in message
    nothing_left(bed)


def test_engine_starts_then_dies_with_its_last_lines(bed: SSHBed, jupyter_env: str) -> None:
    """The engine's interpreter is a wrapper that fails like a licence check does."""
    dying = account_script(bed, "dying-engine", "#!/bin/sh\n"
                           "echo 'Licence server lic.example.org is unreachable' >&2\n"
                           "echo 'No licence available: exiting' >&2\nexit 7\n")
    message = start_fails("engine.start-failed",
                          on_bed(bed, jupyter_env, "f-dies",
                                 engine_options={"python": dying}))
    assert "the mathics engine did not start" in message
    assert "exited with code 7" in message
    assert "Licence server lic.example.org is unreachable" in message
    assert "No licence available: exiting" in message
    nothing_left(bed)


@pytest.fixture(scope="module")
def other_protocol(bed: SSHBed) -> Iterator[str]:
    """A Python that imports an rk_jupyter of this version whose link speaks protocol 99."""
    root = Path(tempfile.mkdtemp(prefix="rkj-proto99-"))
    source = Path(__file__).resolve().parents[1] / "rk_jupyter"
    package = root / "rk_jupyter"
    package.mkdir()
    shutil.copy(source / "__init__.py", package)
    for sub in ("link", "agent"):
        shutil.copytree(source / sub, package / sub,
                        ignore=shutil.ignore_patterns("__pycache__"))
    handshake = package / "link" / "handshake.py"
    text = handshake.read_text()
    current = f"PROTOCOL_VERSION = {PROTOCOL_VERSION}\n"
    assert current in text
    handshake.write_text(text.replace(current, "PROTOCOL_VERSION = 99\n"))
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True, timeout=30)
    python = root / "python3"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={root} exec {shlex.quote(sys.executable)} "
                      "\"$@\"\n")
    python.chmod(0o755)
    yield str(python)
    shutil.rmtree(root, ignore_errors=True)


def test_agent_protocol_mismatch(bed: SSHBed, jupyter_env: str, other_protocol: str) -> None:
    message = start_fails("link.protocol-mismatch",
                          on_bed(bed, jupyter_env, "f-protocol", remote_python=other_protocol,
                                 agent_deploy="installed"))
    assert "protocol version mismatch" in message and "speaks 99" in message
    assert "same rk_jupyter version on both sides" in message
    assert "agent_deploy" in message
    nothing_left(bed)


# -- a running kernel ----------------------------------------------------------------------------


def test_running_kernel_whose_agent_dies(bed: SSHBed, jupyter_env: str) -> None:
    """Without a reconnect grace nothing replaces the agent: the kernel ends, and says how the
    agent ended and what to do (with a grace the kernel goes on: test_agent_replaced.py)."""
    spec = on_bed(bed, jupyter_env, "f-agent-dies", agent_deploy="zipapp", reconnect_grace=0)
    km, kc = start_new_kernel(kernel_name=spec, startup_timeout=120)
    try:
        assert execute(kc, "1 + 1").results()[0]["data"]["text/plain"] == "2"
        [(pid, _)] = bed.remote_processes(AGENT)
        os.kill(pid, 9)
        started = time.monotonic()
        while km.is_alive() and time.monotonic() - started < BOUND:
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        reason = km.provisioner.transport.death_reason() if km.provisioner.transport else ""
        print(f"agent death seen after {elapsed:.2f} s: {reason}")
        assert not km.is_alive() and elapsed < BOUND
        reason = " ".join(reason.split())
        assert f"the agent (pid {pid})" in reason and "killed" in reason
        assert f".cache/rk_jupyter/logs/agent-{pid}.log" in reason
        assert "restart the kernel" in reason.lower()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    nothing_left(bed)
