"""``rk-jupyter doctor`` and ``%rkernel doctor``: the whole chain checked against the real SSH
test bed (tests/sshbed.py) and rk-local, and each fault injected for real fails at its step,
with its fix, quickly, and leaves nothing behind on the remote."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

from rk_jupyter import kernelspec
from rk_jupyter.cli import main as cli
from rk_jupyter.doctor import Step, render_text
from rk_jupyter.provisioning.ssh.pool import POOL, ConnectOptions
from rk_jupyter.provisioning.ssh.remote_agent import AgentSettings
from rk_jupyter.provisioning.ssh.target import resolve_target

from kernel_helpers import children_of, execute, wait_for, wait_gone
from sshbed import SSHBed

CONNECT_TIMEOUT = 3.0
STEPS = ["kernelspec", "resolve", "reach", "host key", "auth", "remote shell", "python",
         "agent", "link", "engine", "round trip", "throughput"]
NETWORK = STEPS[1:6]
AGENT = r"(agent\.pyz|-m rk_jupyter\.agent) --host"


@pytest.fixture(autouse=True)
def _only_chosen_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # only the keys a test names



def install_spec(prefix: str, name: str, config: dict[str, Any]) -> str:
    kernelspec.install(name, f"doctor test {name}", {"engine": "mathics", **config},
                       prefix=prefix)
    return name


def bed_spec(bed: SSHBed, prefix: str, name: str, **overrides: Any) -> str:
    """rk-NAME for the bed's host, with a short connect_timeout (the firewall test waits it)."""
    return install_spec(prefix, name, {
        "transport": "ssh", "host": bed.host, "port": bed.port, "user": bed.user,
        "identity_file": bed.key_file, "known_hosts": bed.known_hosts,
        "remote_python": bed.remote_python, "connect_timeout": CONNECT_TIMEOUT, **overrides,
    })


def doctor(name: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, dict], float]:
    """Run ``rk-jupyter doctor NAME --json``: exit status, steps by name, seconds taken."""
    capsys.readouterr()
    started = time.monotonic()
    status = cli(["doctor", name, "--json"])
    elapsed = time.monotonic() - started
    rows = json.loads(capsys.readouterr().out)
    steps = [Step(**{key: row[key] for key in ("step", "status", "seconds", "detail", "fix",
                                                "code")})
             for row in rows]
    with capsys.disabled():
        print("\n" + render_text(f"doctor {name} (exit {status}, {elapsed:.1f} s)", steps))
    assert [row["step"] for row in rows] == STEPS
    for row, step in zip(rows, steps, strict=True):
        assert set(row) == {"step", "ok", "status", "seconds", "detail", "fix", "code"}
        assert row["ok"] is step.ok
        assert bool(row["code"]) is (row["status"] == "fail")  # every failure has its code
    return status, {row["step"]: row for row in rows}, elapsed


def assert_fails_at(steps: dict[str, dict], where: str) -> dict:
    """The step ``where`` failed, every step before it passed, every one after was skipped."""
    at = STEPS.index(where)
    assert [steps[s]["status"] for s in STEPS[:at]] == ["pass"] * at, steps
    assert steps[where]["ok"] is False and steps[where]["seconds"] is not None
    assert all(steps[s]["status"] == "skipped" and steps[s]["ok"] is None
               for s in STEPS[at + 1:])
    return steps[where]


# -- all pass ---------------------------------------------------------------------------------


def test_all_steps_pass_against_the_bed_and_a_running_kernel_is_left_alone(
    sshbed: SSHBed, jupyter_env: str, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    # A "running kernel": the shared pool's connection and agent, as a kernel start makes them.
    target = resolve_target(sshbed.host, port=sshbed.port, user=sshbed.user,
                            identity_file=sshbed.key_file, known_hosts=sshbed.known_hosts)
    lease = POOL.acquire(target, ConnectOptions(
        agent=AgentSettings(python=sshbed.remote_python), log_dir=str(tmp_path)))
    try:
        [kernel_agent] = sshbed.remote_processes(AGENT)
        spec = bed_spec(sshbed, jupyter_env, "doctor-bed", agent_deploy="zipapp")
        status, steps, elapsed = doctor(spec, capsys)
        assert status == 0
        assert all(row["ok"] is True and row["status"] == "pass"
                   and isinstance(row["seconds"], float) for row in steps.values())
        assert "copied the agent" in steps["agent"]["detail"] \
            or "runs the copy cached" in steps["agent"]["detail"]
        assert "1+1 = 2" in steps["engine"]["detail"]
        assert "codec brotli" in steps["link"]["detail"]
        assert "MB/s" in steps["throughput"]["detail"]
        assert elapsed < 60
        # Its own connection and agent are gone; the kernel's are untouched.
        assert wait_for(lambda: sshbed.remote_processes(AGENT) == [kernel_agent])
        assert sshbed.wait_established(1) == 1
        assert lease.alive() and POOL.connections() == [lease.shared.connection]
    finally:
        POOL.release(lease)
    assert wait_for(lambda: sshbed.remote_processes() == []), sshbed.remote_processes()
    assert sshbed.wait_established(0) == 0


def test_local_passes_with_the_network_steps_not_applicable(
    rk_local: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = set(children_of(os.getpid()))
    status, steps, _ = doctor("local", capsys)
    assert status == 0
    for name in STEPS:
        row = steps[name]
        if name in NETWORK:
            assert (row["status"], row["ok"], row["seconds"]) == ("n/a", None, None)
            assert "transport local" in row["detail"]
        else:
            assert row["status"] == "pass" and row["ok"] is True and row["seconds"] >= 0
    assert wait_gone(sorted(set(children_of(os.getpid())) - before)) == []


# -- faults, each at its step -------------------------------------------------------------------


def test_unknown_host_key_fails_at_the_host_key_with_the_keyscan_fix(
    sshbed: SSHBed, jupyter_env: str, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    spec = bed_spec(sshbed, jupyter_env, "doctor-hostkey", known_hosts=str(empty))
    status, steps, elapsed = doctor(spec, capsys)
    assert status == 1 and elapsed < CONNECT_TIMEOUT + 2
    step = assert_fails_at(steps, "host key")
    assert step["code"] == "ssh.host-key-unknown"
    assert "is unknown" in step["detail"]
    assert f"ssh-keyscan -p {sshbed.port} -t ed25519 {sshbed.host} >> {empty}" in step["fix"]
    # The text report says the same, with the fix under the failed step.
    capsys.readouterr()
    assert cli(["doctor", spec]) == 1
    text = capsys.readouterr().out
    assert "✗ host key" in text and "fix: " in text and "ssh-keyscan" in text
    assert "- auth" in text and "skipped" in text
    assert "failed at host key after " in text and "; 8 later steps skipped" in text
    assert sshbed.wait_established(0) == 0


def test_refused_key_fails_at_auth(sshbed: SSHBed, jupyter_env: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    spec = bed_spec(sshbed, jupyter_env, "doctor-key", identity_file=sshbed.unauthorized_key_file)
    status, steps, elapsed = doctor(spec, capsys)
    assert status == 1 and elapsed < CONNECT_TIMEOUT + 2
    step = assert_fails_at(steps, "auth")
    assert step["code"] == "ssh.auth-refused"
    assert f"refused the login of {sshbed.user}" in step["detail"]
    assert sshbed.unauthorized_key_file in step["detail"]  # "Tried: ..." names the key
    assert "authorized_keys" in step["fix"]
    assert sshbed.wait_established(0) == 0


def test_unresolvable_host_fails_at_resolve(jupyter_env: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    spec = install_spec(jupyter_env, "doctor-dns", {
        "transport": "ssh", "host": "rkj-doctor-nowhere.invalid",
        "connect_timeout": CONNECT_TIMEOUT})
    status, steps, elapsed = doctor(spec, capsys)
    assert status == 1 and elapsed < CONNECT_TIMEOUT + 2
    step = assert_fails_at(steps, "resolve")
    assert step["code"] == "ssh.dns-unresolved"
    assert "rkj-doctor-nowhere.invalid" in step["detail"]
    assert "HostName" in step["fix"]


def test_closed_port_fails_at_reach(sshbed: SSHBed, jupyter_env: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """netns: the bed's firewall drops the port (no answer); loopback: nothing listens."""
    if sshbed.mode == "netns":
        port = 2222
    else:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    spec = bed_spec(sshbed, jupyter_env, "doctor-port", port=port)
    status, steps, elapsed = doctor(spec, capsys)
    assert status == 1 and elapsed < CONNECT_TIMEOUT + 2
    step = assert_fails_at(steps, "reach")
    assert step["code"] == ("ssh.no-answer" if sshbed.mode == "netns" else "ssh.refused")
    if sshbed.mode == "netns":
        assert step["detail"].startswith(f"no answer from {sshbed.host}:{port} within")
        assert "firewall" in step["fix"]
        assert step["seconds"] >= CONNECT_TIMEOUT - 0.1
    else:
        assert "refused the connection" in step["detail"] and "sshd" in step["fix"]


@pytest.mark.parametrize("login", ["prints", "no-shell"])
def test_a_noisy_login_or_no_shell_fails_at_the_remote_shell(
    login: str, sshbed_factory: Callable[..., SSHBed], jupyter_env: str,
    capsys: pytest.CaptureFixture[str]
) -> None:
    """sshd's ForceCommand stands in for the account's login: a startup file that prints, or a
    shell that refuses commands."""
    command = {"prints": 'echo "Welcome to the cluster"; eval "$SSH_ORIGINAL_COMMAND"',
               "no-shell": "/usr/sbin/nologin"}[login]
    bed = sshbed_factory(sshd_options={"ForceCommand": command})
    status, steps, _ = doctor(bed_spec(bed, jupyter_env, f"doctor-{login}"), capsys)
    assert status == 1
    step = assert_fails_at(steps, "remote shell")
    if login == "prints":
        assert step["code"] == "login.noisy"
        assert "prints 'Welcome to the cluster' on stdout" in step["detail"]
        assert "corrupts SFTP" in step["fix"] and "[[ $- == *i* ]] || return" in step["fix"]
    else:
        assert step["code"] == "login.no-shell"
        assert "cannot run commands (exit status 1" in step["detail"]
        assert "nologin" in step["fix"]
    assert bed.wait_established(0) == 0


def test_through_a_jump_host_to_a_missing_python(
    sshbed: SSHBed, jupyter_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The jump host is the bed itself; the target's remote_python does not exist."""
    # paramiko: OpenSSH refuses a jump through the host itself ("jumphost loop"); its jump
    # chains are checked on a real two-hop set-up (test_openssh_backend.py).
    spec = bed_spec(sshbed, jupyter_env, "doctor-jump", remote_python="/nonexistent/python3",
                    ssh_client="paramiko",
                    proxy_jump=f"{sshbed.user}@{sshbed.host}:{sshbed.port}")
    status, steps, _ = doctor(spec, capsys)
    assert status == 1
    assert f"answers through {sshbed.user}@{sshbed.host}:{sshbed.port}" \
        in steps["reach"]["detail"]
    assert "the jump host resolves" in steps["resolve"]["detail"]
    step = assert_fails_at(steps, "python")
    assert step["code"] == "agent.python-missing"
    assert "the remote Python '/nonexistent/python3' was not found" in step["detail"]
    assert "set remote_python in the kernelspec" in step["fix"]
    assert sshbed.wait_established(0) == 0


@pytest.fixture(scope="module")
def bare_python() -> Iterator[str]:
    """A venv with nothing installed (no Mathics3, rk_jupyter nor brotli), readable by the
    bed's accounts."""
    root = tempfile.mkdtemp(prefix="rkj-doctor-venv-")
    os.chmod(root, 0o755)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root], check=True,
                   timeout=120)
    yield os.path.join(root, "bin", "python")
    shutil.rmtree(root, ignore_errors=True)


def test_python_without_mathics_fails_at_the_engine(
    sshbed: SSHBed, jupyter_env: str, bare_python: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = bed_spec(sshbed, jupyter_env, "doctor-bare", remote_python=bare_python)
    status, steps, _ = doctor(spec, capsys)
    assert status == 1
    step = assert_fails_at(steps, "engine")
    assert step["code"] == "engine.start-failed"
    assert f"Mathics3 is not installed for the Python interpreter {bare_python}" \
        in step["detail"]
    # The agent's error packet is plain text: its fix stays in the detail (the step's fix
    # is the engine hint) until the agent sends errors with cause and fix apart.
    assert f"{bare_python} -m pip install Mathics3" in step["detail"]
    assert "pip install Mathics3" in step["fix"]
    assert bare_python in steps["python"]["detail"]
    assert "codec zlib" in steps["link"]["detail"]  # the bare Python has no brotli
    assert wait_for(lambda: sshbed.remote_processes() == []), sshbed.remote_processes()
    assert sshbed.wait_established(0) == 0


# -- %rkernel doctor in a notebook ---------------------------------------------------------------


def test_rkernel_doctor_shows_the_table_in_a_kernel(rk_local: str) -> None:
    km, kc = start_new_kernel(kernel_name=rk_local, startup_timeout=120)
    try:
        run = execute(kc, "%rkernel doctor", timeout=120)
        assert run.reply["status"] == "ok", run.reply
        [display] = run.displays()
        text, table = display["data"]["text/plain"], display["data"]["text/html"]
        print(text)
        assert text.startswith(f"rk_jupyter doctor: {rk_local}")
        assert "✓ engine" in text and "n/a" in text
        assert "all 7 steps passed in " in text and "(5 not applicable)" in text
        assert table.startswith("<table class='rk-doctor'>")
        assert table.count("<tr>") == len(STEPS) + 2 and "1+1 = 2" in table
        # The kernel's own engine is untouched.
        assert execute(kc, "1 + 1").results()[0]["data"]["text/plain"] == "2"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
