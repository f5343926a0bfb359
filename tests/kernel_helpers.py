"""Driving a kernel through jupyter_client exactly as JupyterLab does, and reading iopub."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from rk_jupyter.provisioning.transports import TransportError


@dataclass
class Execution:
    reply: dict[str, Any]
    outputs: list[dict[str, Any]] = field(default_factory=list)

    def streams(self, name: str) -> str:
        return "".join(m["content"]["text"] for m in self.outputs
                       if m["msg_type"] == "stream" and m["content"]["name"] == name)

    def results(self) -> list[dict[str, Any]]:
        return [m["content"] for m in self.outputs if m["msg_type"] == "execute_result"]

    def displays(self) -> list[dict[str, Any]]:
        return [m["content"] for m in self.outputs if m["msg_type"] == "display_data"]

    def first(self, msg_type: str) -> dict[str, Any]:
        return next(m for m in self.outputs if m["msg_type"] == msg_type)


def execute(kc: BlockingKernelClient, code: str, timeout: float = 60.0,
            **kwargs: Any) -> Execution:
    """Run ``code`` and collect iopub messages of this request until the kernel is idle."""
    msg_id = kc.execute(code, **kwargs)
    return collect(kc, msg_id, timeout)


def collect(kc: BlockingKernelClient, msg_id: str, timeout: float = 60.0) -> Execution:
    outputs = []
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.01))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        msg["received"] = time.monotonic()
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
        if msg["msg_type"] in ("stream", "execute_result", "display_data", "error"):
            outputs.append(msg)
    return Execution(shell_reply(kc, msg_id, deadline - time.monotonic())["content"], outputs)


def shell_reply(kc: BlockingKernelClient, msg_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The shell reply to ``msg_id``, skipping replies to earlier requests
    (wait_for_ready's kernel_info probes)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = kc.get_shell_msg(timeout=max(deadline - time.monotonic(), 0.01))
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Wait for the processes to end; return those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if pid_alive(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return [p for p in pids if pid_alive(p)]


def children_of(pid: int) -> list[int]:
    """Every descendant of ``pid`` from the process table."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        frontier += kids
    return found

#: A Mathics3 worker's command line, cold (its module or, deployed, its file) or forked from
#: a template (which shows the same words: ``template.WORKER_TITLE``).
WORKER = r"mathics[/._]worker"


def engines_of(pid: int) -> list[int]:
    """The Mathics3 workers among the descendants of ``pid`` (not the template they are
    forked from, which belongs to the agent)."""
    return [child for child in children_of(pid) if re.search(WORKER, cmdline(child))]


def cmdline(pid: int) -> str:
    """A process's command line as ``ps`` shows it ("" once it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, step: float = 0.1) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


@contextmanager
def local_agent(token: bytes, *args: str) -> Iterator[tuple[int, int]]:
    """A real agent process on loopback (more agent ``args``, e.g. ``--warm mathics``):
    yields (port, pid); ends it through its lifeline."""
    env = dict(os.environ, RK_AGENT_TOKEN=token.decode())
    proc = subprocess.Popen([sys.executable, "-m", "rk_jupyter.agent", "--exit-on-stdin-eof",
                             *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        info = json.loads(proc.stdout.readline().decode().split(" ", 1)[1])
        yield info["port"], proc.pid
    finally:
        proc.stdin.close()
        proc.wait(20)


def interrupt_endless_loop(km: Any, kc: BlockingKernelClient, how: str) -> float:
    """Interrupt ``While[True, x++]`` by interrupt message or by SIGINT (what interrupt_mode
    "signal" does); check it ends in $Aborted within 1.5 s and keeps x.  Returns the time."""
    execute(kc, "x = 0;")
    msg_id = kc.execute("While[True, x++]")
    time.sleep(2.0)
    start = time.monotonic()
    if how == "message":
        kc.control_channel.send(kc.session.msg("interrupt_request", {}))
    else:
        km.signal_kernel(signal.SIGINT)
    run = collect(kc, msg_id, timeout=30)
    elapsed = time.monotonic() - start
    assert run.reply["status"] == "error" and run.reply["ename"] == "$Aborted"
    assert elapsed < 1.5, f"interrupt took {elapsed:.2f} s"
    after = execute(kc, "x > 0")
    assert after.results() and after.results()[0]["data"]["text/plain"] == "True", after
    return elapsed


def start_fails(spec: str, bound: float, code: str | None = None) -> str:
    """Start the kernel as JupyterLab does; return the error's text (whitespace folded, as
    the dialog's reader sees it), after checking it came within ``bound`` seconds and, when
    ``code`` is given, that it carries that error code (what callers branch on: part of the
    contract as much as the message)."""
    km = KernelManager(kernel_name=spec)
    started = time.monotonic()
    with pytest.raises(TransportError) as failure:
        km.start_kernel()
    elapsed = time.monotonic() - started
    message = str(failure.value)
    print(f"\n{spec}: failed after {elapsed:.2f} s [{failure.value.code}]:\n{message}")
    assert elapsed < bound, f"{elapsed:.2f} s"
    assert not km.has_kernel
    if code is not None:
        assert failure.value.code == code
    return " ".join(message.split())


def add_remote_spec(bed: Any, prefix: str, name: str, *extra: str, **config: Any) -> str:
    """rk-NAME for the SSH bed ``bed``'s host, written by ``rk-jupyter add`` as a user would
    (``extra``: more add options), into the Jupyter tree ``prefix``; ``config``: provisioner
    keys patched into kernel.json afterwards (those no add option writes, engine_options).
    The agent is this rk_jupyter's zipapp: an installed rk_jupyter of the same version (an
    editable install of another checkout) would otherwise run on the host."""
    from jupyter_client.kernelspec import KernelSpecManager

    from rk_jupyter.cli import main as cli

    assert cli(["add", name, "--host", f"{bed.user}@{bed.host}:{bed.port}",
                "--identity", bed.key_file, "--known-hosts", bed.known_hosts,
                "--remote-python", bed.remote_python, "--agent-deploy", "zipapp",
                "--prefix", prefix, *extra]) == 0
    spec = f"rk-{name}"
    if config:
        path = os.path.join(KernelSpecManager().get_kernel_spec(spec).resource_dir,
                            "kernel.json")
        with open(path) as handle:
            kernel_json = json.load(handle)
        kernel_json["metadata"]["kernel_provisioner"]["config"].update(config)
        with open(path, "w") as handle:
            json.dump(kernel_json, handle)
    return spec
