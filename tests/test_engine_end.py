"""An engine that ends never leaves a silent kernel (issue 15): Quit[], a crash (SIGKILL, as
the OOM killer does), a stopped engine (SIGSTOP), a memory limit and an engine that cannot
start again — on rk-local and over the SSH test bed, driven through jupyter_client as
JupyterLab drives a kernel.  After each kind of end every request is answered within
``ANSWER`` seconds, and nothing is left behind."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager, start_new_kernel

from rk_jupyter import kernelspec

from kernel_helpers import children_of, engines_of, execute, shell_reply, wait_gone
from sshbed import SSHBed

#: What the issue allows any request with the engine gone, going or stopped.
ANSWER = 2.0
RESET = "definitions were reset"
WORKER = r"rk_jupyter\.agent\.engines\.mathics\.worker"


def install(prefix: str, name: str, config: dict[str, Any]) -> str:
    kernelspec.install(name, f"engine end {name}", {"engine": "mathics", **config},
                       prefix=prefix)
    return f"rk-{name}"


@pytest.fixture
def local_kernel(jupyter_env: str) -> Iterator[Callable[..., tuple[KernelManager, Any]]]:
    started: list[tuple[KernelManager, Any]] = []

    def start(**config: Any) -> tuple[KernelManager, Any]:
        spec = install(jupyter_env, f"end{len(started)}-{os.getpid()}",
                       {"transport": "local", **config})
        km, kc = start_new_kernel(kernel_name=spec, startup_timeout=90)
        started.append((km, kc))
        return km, kc

    yield start
    for km, kc in started:
        pids = _agent_and_engine(km)
        kc.stop_channels()
        km.shutdown_kernel(now=False)
        assert wait_gone(pids) == [], "the agent and its engines end with the kernel"


def _agent_and_engine(km: KernelManager) -> list[int]:
    agent = km.provisioner.transport.process.pid
    return [agent, *children_of(agent)]


def engine_pid(km: KernelManager) -> int:
    [pid] = engines_of(km.provisioner.transport.process.pid)
    return pid


def text(run: Any) -> str | None:
    results = run.results()
    return results[0]["data"]["text/plain"] if results else None


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    value = call()
    return value, time.monotonic() - start


def every_request_answers(kc: Any) -> None:
    """complete, inspect, is_complete, kernel_info, history, %rkernel status and interrupt
    are each answered within ANSWER s."""
    for name, send in [
        ("complete", lambda: kc.complete("Plo", 3)),
        ("inspect", lambda: kc.inspect("Plot", 4)),
        ("is_complete", lambda: kc.is_complete("f[x]")),
        ("kernel_info", kc.kernel_info),
        ("history", lambda: kc.history(hist_access_type="tail", n=5)),
    ]:
        reply, took = timed(lambda send=send: shell_reply(kc, send(), timeout=10))
        assert reply["content"]["status"] != "error", (name, reply["content"])
        assert took < ANSWER, f"{name} took {took:.2f} s"
    status, took = timed(lambda: execute(kc, "%rkernel status", timeout=10))
    assert status.reply["status"] == "ok" and took < ANSWER, took
    msg = kc.session.msg("interrupt_request", {})
    kc.control_channel.send(msg)
    reply, took = timed(lambda: kc.get_control_msg(timeout=10))
    assert reply["msg_type"] == "interrupt_reply" and took < ANSWER


def test_quit_gives_a_fresh_engine_in_the_next_cell(local_kernel) -> None:
    km, kc = local_kernel()
    assert text(execute(kc, "x = 5")) == "5"
    old = engine_pid(km)
    quit_cell = execute(kc, "Quit[]")
    assert quit_cell.reply["status"] == "ok", "Quit[] is asked for: Run All goes on"
    assert wait_gone([old]) == []
    every_request_answers(kc)
    run = execute(kc, "x")
    assert run.reply["status"] == "ok" and text(run) == "x", "definitions were reset"
    assert run.streams("stderr").count(RESET) == 1 and "Quit[]" in run.streams("stderr")
    assert run.results()[0]["execution_count"] == 1, "In[n] starts again at 1"
    again = execute(kc, "1 + 1")
    assert text(again) == "2" and RESET not in again.streams("stderr"), "said once"
    assert again.reply["execution_count"] == 2
    status = text_of_display(execute(kc, "%rkernel status"))
    assert "engine restarts 1; the last engine ended:" in status and "Quit[]" in status
    assert engine_pid(km) != old


def text_of_display(run: Any) -> str:
    """The display's text, its whitespace folded (status aligns its columns)."""
    return " ".join(run.displays()[0]["data"]["text/plain"].split())


def test_a_killed_engine_is_named_and_replaced(local_kernel) -> None:
    km, kc = local_kernel()
    execute(kc, "y = 1")
    os.kill(engine_pid(km), signal.SIGKILL)  # idle, as the OOM killer would
    every_request_answers(kc)
    run = execute(kc, "{y, 2 + 2}")
    assert text(run) == "{y, 4}" and "SIGKILL" in run.streams("stderr")
    # killed while it evaluates: that cell ends at once with the cause, the next one runs
    msg_id = kc.execute("Pause[30]")
    time.sleep(1.0)
    os.kill(engine_pid(km), signal.SIGKILL)
    reply, took = timed(lambda: shell_reply(kc, msg_id, timeout=10))
    assert reply["content"]["status"] == "error" and took < ANSWER
    assert reply["content"]["ename"] == "EngineEnded"
    assert "killed by signal SIGKILL" in reply["content"]["evalue"]
    assert "fresh engine" in reply["content"]["evalue"]
    assert text(execute(kc, "3 + 3")) == "6"
    status = text_of_display(execute(kc, "%rkernel status"))
    assert "engine restarts 2" in status and "SIGKILL" in status


def stop(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until it is stopped: the signal takes effect when the
    process is next scheduled, which on a loaded machine can be after the next request."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as file:
            if file.read().rpartition(")")[2].split()[0] in "Tt":
                return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} did not stop")


def stderr_of(kc: Any, msg_id: str, until: str, within: float) -> str:
    """The stderr text of request ``msg_id`` that arrives within ``within`` s, up to the
    first time it holds ``until``."""
    deadline = time.monotonic() + within
    said = ""
    while time.monotonic() < deadline and until not in said:
        try:
            msg = kc.get_iopub_msg(timeout=0.2)
        except Exception:
            continue
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            said += msg["content"]["text"]
    return said


def test_a_stopped_engine_is_said_and_every_request_answers(local_kernel) -> None:
    km, kc = local_kernel()
    execute(kc, "z = 3")
    pid = engine_pid(km)
    stop(pid)
    try:
        run, took = timed(lambda: execute(kc, "z + 1", timeout=10))
        assert run.reply["status"] == "error" and took < ANSWER
        assert run.reply["ename"] == "EngineStopped" and f"kill -CONT {pid}" in run.reply["evalue"]
        every_request_answers(kc)
        status = text_of_display(execute(kc, "%rkernel status"))
        assert "engine state stopped" in status and "interrupt, then restart" in status
    finally:
        os.kill(pid, signal.SIGCONT)
    assert text(execute(kc, "z + 1")) == "4", "continued, it goes on with its definitions"
    # stopped while it evaluates: the cell is told within a second or two, unasked, and an
    # interrupt says again why nothing happens; continued, the cell ends as it would have
    msg_id = kc.execute("Pause[3]; 7")
    time.sleep(0.5)
    stop(pid)
    try:
        said = stderr_of(kc, msg_id, "stopped", ANSWER + 1.0)
        assert "is stopped by a signal" in said and f"kill -CONT {pid}" in said
        kc.control_channel.send(kc.session.msg("interrupt_request", {}))
        said = stderr_of(kc, msg_id, "stopped", ANSWER)
        assert "is stopped by a signal" in said and "restart the kernel" in said
    finally:
        os.kill(pid, signal.SIGCONT)
    shell_reply(kc, msg_id, timeout=30)


def test_memory_limit_names_the_limit_and_keeps_definitions(local_kernel) -> None:
    km, kc = local_kernel(memory_limit="1G")
    execute(kc, "kept = 11")
    run = execute(kc, 's = StringRepeat["a", 2*10^9]; StringLength[s]')
    assert run.reply["status"] == "error"
    said = " ".join(run.streams("stderr").split())
    assert "memory_limit of 1G" in said and "--memory-limit" in said
    assert text(execute(kc, "kept")) == "11"
    status = text_of_display(execute(kc, "%rkernel status"))
    assert "limit 1.0 GiB" in status and "MiB in use" in status


def test_an_engine_that_cannot_start_again_says_so_at_once(local_kernel, tmp_path: Path) -> None:
    """The fresh engine's start error is the cell's error, at once; when the cause is gone,
    the next cell starts one."""
    broken = tmp_path / "broken"
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nif [ -e {broken} ]; then echo 'disk on fire' >&2; exit 3; fi\n"
                      f"exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    # Cold workers: a fork of the template would not run the interpreter again.
    km, kc = local_kernel(engine_options={"python": str(python), "warm": False})
    execute(kc, "1")
    broken.touch()
    execute(kc, "Quit[]")
    run, took = timed(lambda: execute(kc, "2", timeout=30))
    assert run.reply["status"] == "error" and took < 5
    assert run.reply["ename"] == "EngineStartFailed"
    assert "a fresh one did not start" in run.reply["evalue"]
    assert "disk on fire" in run.reply["evalue"]
    every_request_answers(kc)
    broken.unlink()
    assert text(execute(kc, "2 + 2")) == "4"


# -- over SSH ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bed(sshbed_factory: Callable[..., SSHBed]) -> SSHBed:
    return sshbed_factory(users=["rkjengend"])


def test_over_ssh_quit_and_a_kill_give_fresh_engines_and_leave_nothing(
        bed: SSHBed, jupyter_env: str) -> None:
    spec = install(jupyter_env, "end-ssh", {
        "transport": "ssh", "host": bed.host, "port": bed.port, "user": bed.user,
        "identity_file": bed.key_file, "known_hosts": bed.known_hosts,
        "remote_python": bed.remote_python, "agent_deploy": "zipapp",
    })
    km, kc = start_new_kernel(kernel_name=spec, startup_timeout=120)
    try:
        execute(kc, "a = 1")
        [(old, _)] = bed.remote_processes(WORKER)
        assert execute(kc, "Quit[]").reply["status"] == "ok"
        every_request_answers(kc)
        run = execute(kc, "{a, 1 + 1}")
        assert text(run) == "{a, 2}" and run.streams("stderr").count(RESET) == 1
        assert old not in [pid for pid, _ in bed.remote_processes(WORKER)]
        [(worker, _)] = bed.remote_processes(WORKER)
        os.kill(worker, signal.SIGKILL)
        run = execute(kc, "3 + 3")
        assert text(run) == "6" and "SIGKILL" in run.streams("stderr")
        assert len(bed.remote_processes(WORKER)) == 1
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    deadline = time.monotonic() + 15
    while bed.remote_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bed.remote_processes() == []
