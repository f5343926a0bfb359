"""A kernel started the way VS Code and Positron start one: kernel.json's argv run directly,
``{connection_file}`` substituted and the spec's ``env`` added, no KernelManager and no
provisioner.  The kernel then launches its engine itself (``provisioning.selflaunch``).

Locally (rk-local, written by the CLI) and over SSH on the test bed with both SSH clients:
results, Print on stdout, an interrupt by ``interrupt_request`` within 5 s with the state
kept, ``%rkernel status`` naming who launched, a clean ``shutdown_request`` with nothing left
(here and on the remote host), and nothing left 60 s after a SIGKILL of the kernel process.
Start errors are the provisioner's named errors, in the first cell and the launch log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import start_new_kernel
from jupyter_core.paths import jupyter_runtime_dir

from rk_jupyter import kernelspec
from rk_jupyter.client.environment import KERNELSPEC_FLAG
from rk_jupyter.doctor import PASS, Checkup
from rk_jupyter.kernel import kernel as kernel_module

from kernel_helpers import children_of, collect, execute, wait_gone
from sshbed import SSHBed

SELF_USER = "rkjself"  # the SSH tests' own account: what is left on it is theirs
INTERRUPT_BOUND = 5.0  # what the issue allows
SIGKILL_BOUND = 60.0
GRACE = 15  # the SSH kernelspecs' reconnect grace: the remote agent's keep after a SIGKILL
#: How long the kernel process may take to end after its shutdown reply: the kernel's own
#: bound (``EXIT_AFTER_SHUTDOWN``, for ipykernel's shutdown hang) and some slack.
EXIT_AFTER_SHUTDOWN = kernel_module.EXIT_AFTER_SHUTDOWN + 15.0


CONNECTION_DIR = tempfile.mkdtemp(prefix="rkj-editor-")


@dataclass
class Started:
    """A kernel process started as a provisioner-less client starts one."""

    proc: subprocess.Popen
    kc: BlockingKernelClient
    connection_file: str
    output: str  # the kernel process's stdout and stderr

    def stop(self) -> None:
        self.kc.stop_channels()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_like_vscode(spec: str, argv_edit: Callable[[list[str]], list[str]] | None = None,
                      ) -> Started:
    """Run the argv of kernelspec ``spec`` with a fresh connection file, the spec's ``env``
    added, and wait for its kernel_info reply (as VS Code does); no KernelManager."""
    resource_dir = KernelSpecManager().get_kernel_spec(spec).resource_dir
    with open(os.path.join(resource_dir, "kernel.json")) as handle:
        kernel_json = json.load(handle)
    # The editor's own directory for connection files (VS Code: a temporary one), not
    # Jupyter's runtime directory, which the launch makes for its logs.
    connection_file, _ = write_connection_file(os.path.join(
        CONNECTION_DIR, f"kernel-selftest-{os.getpid()}-{time.monotonic_ns()}.json"))
    argv = [item.replace("{connection_file}", connection_file) for item in kernel_json["argv"]]
    if argv_edit is not None:
        argv = argv_edit(argv)
    output = connection_file + ".out"
    with open(output, "w") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **kernel_json.get("env", {})},
                                stdout=out, stderr=subprocess.STDOUT)
    kc = BlockingKernelClient()
    kc.load_connection_file(connection_file)
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
    except RuntimeError:
        kc.stop_channels()
        proc.kill()
        raise
    return Started(proc, kc, connection_file, output)


def status_of(kc: BlockingKernelClient) -> dict[str, str]:
    text = execute(kc, "%rkernel status").displays()[0]["data"]["text/plain"]
    rows = {}
    for line in text.splitlines():
        label, _, value = line.partition("  ")
        rows[label.strip()] = value.strip()
    return rows


def interrupt_keeps_state(kc: BlockingKernelClient) -> float:
    """Interrupt ``While[True, x++]`` by an interrupt_request on the control channel; check
    $Aborted within INTERRUPT_BOUND and x kept.  Returns the seconds it took."""
    execute(kc, "x = 0;")
    msg_id = kc.execute("While[True, x++]")
    time.sleep(1.5)
    started = time.monotonic()
    kc.control_channel.send(kc.session.msg("interrupt_request", {}))
    run = collect(kc, msg_id, timeout=30)
    elapsed = time.monotonic() - started
    assert run.reply["status"] == "error" and run.reply["ename"] == "$Aborted", run.reply
    assert elapsed < INTERRUPT_BOUND, f"interrupt took {elapsed:.2f} s"
    assert execute(kc, "x > 0").results()[0]["data"]["text/plain"] == "True"
    return elapsed


def evaluates(kc: BlockingKernelClient) -> None:
    """A result, Print on stdout, and state kept between cells."""
    assert execute(kc, "kept = 6*7").results()[0]["data"]["text/plain"] == "42"
    run = execute(kc, 'Print["from the engine"]; kept + 1')
    assert run.streams("stdout") == "from the engine\n", run.outputs
    assert run.results()[0]["data"]["text/plain"] == "43"


def works_as_a_kernel(started: Started, transport: str) -> dict[str, str]:
    """Results, Print, an interrupt, and a status that names the transport and says that the
    kernel launched itself; returns the status rows."""
    evaluates(started.kc)
    print(f"\ninterrupt answered in {interrupt_keeps_state(started.kc):.2f} s")
    status = status_of(started.kc)
    assert status["launched by"].startswith("the kernel itself"), status
    assert status["transport"] == transport and status["state"] == "connected", status
    return status


def shut_down(started: Started, check: Callable[[], None] = lambda: None) -> None:
    """A clean shutdown_request: the reply comes, and its IOPub copy, ``check`` (nothing
    left) holds once they have, and the process ends by itself (EXIT_AFTER_SHUTDOWN)."""
    msg_id = started.kc.shutdown()
    reply = started.kc.get_control_msg(timeout=60)
    while reply["parent_header"].get("msg_id") != msg_id:  # an interrupt's reply, say
        reply = started.kc.get_control_msg(timeout=60)
    assert reply["msg_type"] == "shutdown_reply" and reply["content"]["status"] == "ok"
    while True:  # its copy on IOPub, for the other clients, leaves before the process ends
        copy = started.kc.get_iopub_msg(timeout=10)
        if copy["parent_header"].get("msg_id") == msg_id and \
                copy["msg_type"] == "shutdown_reply":
            break
    check()
    took = time.monotonic()
    status = started.proc.wait(EXIT_AFTER_SHUTDOWN)
    print(f"\nthe kernel process ended {time.monotonic() - took:.1f} s after its shutdown "
          f"reply, status {status}")
    if status != 0:  # the watchdog ended a hang: its stacks are in the output, for the record
        with open(started.output) as handle:
            print(handle.read()[-4000:])
    started.kc.stop_channels()


def launch_log(started: Started) -> str:
    stem = os.path.splitext(os.path.basename(started.connection_file))[0]
    path = os.path.join(jupyter_runtime_dir(), f"rk-{stem[len('kernel-'):]}.log")
    with open(path) as handle:
        return handle.read()


# -- this machine ------------------------------------------------------------------------------


def test_rk_local_argv_alone_gives_a_whole_kernel(rk_local: str) -> None:
    """Results, Print, interrupt by message, status, then shutdown_request: nothing left."""
    started = start_like_vscode(rk_local)
    try:
        works_as_a_kernel(started, "local")
        log = launch_log(started)
        assert "launch of kernel" in log and "by the kernel" in log and "engine ready" in log
        below = children_of(started.proc.pid)
        assert len(below) >= 2, below  # the agent and its engine

        def ended() -> None:
            assert wait_gone(below, 5) == [], "the agent or its engine outlived the shutdown"
            assert "cleanup done" in launch_log(started)

        shut_down(started, ended)
    finally:
        started.stop()


def test_rk_local_sigkilled_kernel_leaves_nothing(rk_local: str) -> None:
    started = start_like_vscode(rk_local)
    try:
        assert execute(started.kc, "1+1").results()[0]["data"]["text/plain"] == "2"
        below = children_of(started.proc.pid)
        assert below
        started.proc.send_signal(signal.SIGKILL)
        started.proc.wait(10)
        assert wait_gone(below, SIGKILL_BOUND) == []
    finally:
        started.stop()


def test_the_provisioner_path_says_so(rk_local: str) -> None:
    """The same kernelspec through KernelManager: the provisioner launched it (the argv's
    kernelspec option is then ignored)."""
    km, kc = start_new_kernel(kernel_name=rk_local, startup_timeout=120)
    try:
        status = status_of(kc)
        assert status["launched by"].startswith("the provisioner"), status
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def test_a_failed_self_launch_is_the_named_error_in_the_first_cell(
        jupyter_env: str, tmp_path: Any) -> None:
    """A kernelspec whose Python cannot run: the kernel still answers, and the first cell
    says the provisioner's error (with its code), as does the launch log; no KeyError."""
    missing = str(tmp_path / "no-such-python")
    kernelspec.install("nopython", "no python", {"transport": "local", "python": missing},
                       prefix=jupyter_env)
    started = start_like_vscode("rk-nopython")
    try:
        run = execute(started.kc, "1+1")
        assert run.reply["status"] == "error", run.reply
        said = run.reply["evalue"]
        assert missing in said and "KeyError" not in said and "RK_AGENT_PORT" not in said, said
        assert "[agent.python-missing]" in said, said
        assert "launch failed [agent.python-missing]" in launch_log(started)
        status = status_of(started.kc)
        assert status["launched by"].startswith("the kernel itself"), status
        shut_down(started)
    finally:
        started.stop()


def test_a_kernelspec_without_the_option_says_how_to_fix_it(rk_local: str) -> None:
    """An argv without ``--rk-kernelspec`` (a kernelspec of an older rk_jupyter): the cell
    names the fix (install it again), not a KeyError."""
    def drop(argv: list[str]) -> list[str]:
        return [item for item in argv if not item.startswith(KERNELSPEC_FLAG)]

    started = start_like_vscode(rk_local, drop)
    try:
        run = execute(started.kc, "1+1")
        assert run.reply["status"] == "error"
        said = run.reply["evalue"]
        assert "rk-jupyter add" in said and "[kernel.not-launched]" in said, said
        assert "RK_AGENT_PORT" not in said
    finally:
        started.stop()


def test_the_doctor_says_who_launches(rk_local: str, jupyter_env: str) -> None:
    """``rk-jupyter doctor``'s kernelspec step: a kernelspec ``add`` writes starts in VS Code
    too; one without the argv option (as rk_jupyter before 0.4 wrote them) is named, with
    the fix."""
    [step] = Checkup(rk_local).run()[:1]
    assert step.status == PASS and "by the kernel itself (VS Code, Positron)" in step.detail
    old = os.path.join(jupyter_env, "share", "jupyter", "kernels", "rk-old")
    kernelspec.install("old", "old", {"transport": "local"}, prefix=jupyter_env)
    with open(os.path.join(old, "kernel.json")) as handle:
        spec = json.load(handle)
    spec["argv"] = [a for a in spec["argv"] if not a.startswith(KERNELSPEC_FLAG)]
    with open(os.path.join(old, "kernel.json"), "w") as handle:
        json.dump(spec, handle)  # what an older rk-jupyter add wrote
    [step] = Checkup("rk-old").run()[:1]
    assert "lacks --rk-kernelspec" in step.detail and "rk-jupyter add" in step.detail, step


# -- over SSH (the test bed), with either SSH client --------------------------------------------


@pytest.fixture(scope="module")
def bed(sshbed_factory: Callable[..., SSHBed]) -> SSHBed:
    return sshbed_factory(users=[SELF_USER])


@pytest.fixture(autouse=True)
def _only_chosen_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # only the keys a test names


def add_on_bed(bed: SSHBed, prefix: str, name: str, **config: Any) -> str:
    """rk-NAME for the bed's host and account (a short reconnect grace)."""
    kernelspec.install(name, name, {
        "transport": "ssh", "host": bed.host, "port": bed.port, "user": bed.user,
        "identity_file": bed.key_file, "known_hosts": bed.known_hosts,
        "remote_python": bed.remote_python, "engine": "mathics", "reconnect_grace": GRACE,
        **config}, prefix=prefix)
    return f"rk-{name}"


def nothing_left_on(bed: SSHBed, timeout: float) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    while bed.remote_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    return bed.remote_processes()


@pytest.fixture(params=["openssh", "paramiko"])
def ssh_spec(request: pytest.FixtureRequest, bed: SSHBed, jupyter_env: str) -> Iterator[str]:
    yield add_on_bed(bed, jupyter_env, f"self-{request.param}", ssh_client=request.param)
    nothing_left_on(bed, 30)


def test_ssh_argv_alone_gives_a_whole_kernel(bed: SSHBed, ssh_spec: str) -> None:
    started = start_like_vscode(ssh_spec)
    try:
        status = works_as_a_kernel(started, "ssh")
        assert status["ssh client"].lower().startswith(ssh_spec.rsplit("-", 1)[1]), status
        assert bed.remote_processes(), "no agent on the remote host"
        below = children_of(started.proc.pid)

        def ended() -> None:
            assert nothing_left_on(bed, 10) == [], "left on the remote host after shutdown"
            assert wait_gone(below, 10) == [], "left on this machine after shutdown"

        shut_down(started, ended)
    finally:
        started.stop()


def test_ssh_sigkilled_kernel_leaves_nothing(bed: SSHBed, ssh_spec: str) -> None:
    """The kernel process holds the SSH connection: killed, it takes the connection along,
    and the agent ends its session after the reconnect grace (GRACE), then exits."""
    started = start_like_vscode(ssh_spec)
    try:
        assert execute(started.kc, "1+1").results()[0]["data"]["text/plain"] == "2"
        below = children_of(started.proc.pid)
        assert bed.remote_processes()
        killed = time.monotonic()
        started.proc.send_signal(signal.SIGKILL)
        started.proc.wait(10)
        assert wait_gone(below, SIGKILL_BOUND) == [], "left on this machine"
        left = nothing_left_on(bed, SIGKILL_BOUND - (time.monotonic() - killed))
        assert left == [], f"left on the remote host {SIGKILL_BOUND:.0f} s after SIGKILL"
        print(f"\n{ssh_spec}: remote side gone {time.monotonic() - killed:.1f} s after SIGKILL")
    finally:
        started.stop()


def test_ssh_network_cut_mid_cell_loses_nothing(bed: SSHBed, jupyter_env: str) -> None:
    """The kernel process holds the SSH connection (and its pool reconnects it): a cell that
    prints for 15 s, with the network silent for 8 s in the middle, still prints every line
    once, and the status counts the re-established connection."""
    proxy = bed.proxy(delay_ms=1, rate_bps=None)
    prints = 30
    try:
        spec = add_on_bed(bed, jupyter_env, "self-cut", host="127.0.0.1", port=proxy.port,
                          keepalive=1.0, connect_timeout=3.0, reconnect_grace=60)
        started = start_like_vscode(spec)
        try:
            execute(started.kc, "kept = 7;")

            def outage() -> None:
                time.sleep(3.0)
                proxy.cut()
                time.sleep(8.0)
                proxy.restore()

            cutter = threading.Thread(target=outage, daemon=True)
            msg_id = started.kc.execute(f'Do[Print[i]; Pause[0.5], {{i, 1, {prints}}}]; "done"')
            cutter.start()
            run = collect(started.kc, msg_id, timeout=90)
            cutter.join(20)
            assert run.reply["status"] == "ok", run.reply
            assert run.streams("stdout") == "".join(f"{i}\n" for i in range(1, prints + 1))
            assert run.results()[0]["data"]["text/plain"] == "done"
            status = status_of(started.kc)
            assert "re-established 1 time" in status["ssh connection"], status
            assert execute(started.kc, "kept * 6").results()[0]["data"]["text/plain"] == "42"
            shut_down(started, lambda: None)
            assert nothing_left_on(bed, 15) == []
        finally:
            started.stop()
    finally:
        proxy.stop()


def test_ssh_unknown_host_key_is_named_in_the_first_cell(
        bed: SSHBed, jupyter_env: str, tmp_path: Any) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    started = start_like_vscode(add_on_bed(bed, jupyter_env, "self-unknown",
                                           known_hosts=str(empty)))
    try:
        run = execute(started.kc, "1+1")
        assert run.reply["status"] == "error"
        said = run.reply["evalue"]
        assert "[ssh.host-key-unknown]" in said and "ssh-keyscan" in said, said
        assert "launch failed [ssh.host-key-unknown]" in launch_log(started)
        shut_down(started)
    finally:
        started.stop()
