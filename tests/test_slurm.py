"""Kernels whose engine runs in a Slurm job on a compute node, reached through the login node.

The real stack: kernelspecs written by ``rk-jupyter add --slurm=…``, started by jupyter_client's
KernelManager as JupyterLab does, the agent on the SSH test bed's host (the login node), the
Mathics3 worker a job step on c1 or c2 of the Slurm test bed (tests/slurmbed.py).  First the
units that need no cluster (the CLI's ``--slurm``, the srun command line and what it must never
hold), then srun's own behaviours that ``agent/engines/slurm.py`` relies on, then kernels.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager, start_new_kernel

from rk_jupyter.agent.engines import slurm
from rk_jupyter.cli import main as cli
from rk_jupyter.link.launcher import TOKEN_ENV
from rk_jupyter.provisioning.settings import LaunchSettings

from kernel_helpers import add_remote_spec, collect, execute, wait_for
from slurmbed import SlurmBed
from sshbed import SSHBed

OPTIONS = "--partition=debug --time=5 --cpus-per-task=1"
WORKER = r"mathics[/._]worker"
AGENT = r"agent\.pyz --host"
SECRET = "tok-3f9a1c-never-in-argv"


# -- units: no cluster ---------------------------------------------------------------------------


def test_add_takes_slurm_options_with_equals(tmp_path: Path, capsys) -> None:
    """``--slurm="OPTIONS"`` (the = form: the value starts with dashes) reaches the kernelspec
    and the engine options; a separate dashed word is refused with that fix."""
    prefix = str(tmp_path)
    assert cli(["add", "hpc", "--host", "alice@login1", f"--slurm={OPTIONS}",
                "--prefix", prefix]) == 0
    path = tmp_path / "share" / "jupyter" / "kernels" / "rk-hpc" / "kernel.json"
    config = json.loads(path.read_text())["metadata"]["kernel_provisioner"]["config"]
    assert config["slurm"] == OPTIONS
    assert LaunchSettings.from_config(config).engine_request()["slurm"] == OPTIONS
    assert "slurm" not in LaunchSettings(transport="ssh", host="h").engine_request()
    with pytest.raises(SystemExit) as refused:
        cli(["add", "hpc2", "--host", "login1", "--slurm", "--partition=x", "--prefix", prefix])
    assert 'write --slurm="--partition=x ..." with "="' in str(refused.value)
    with pytest.raises(SystemExit) as refused:
        cli(["add", "hpc3", "--host", "login1", "--slurm=--comment='a", "--prefix", prefix])
    assert "does not parse" in str(refused.value)
    assert cli(["add", "hpc5", "--host", "login1", "--engine", "wolfram",
                f"--slurm={OPTIONS}", "--prefix", prefix]) == 0  # WolframKernel in a job too
    with pytest.raises(SystemExit) as refused:
        cli(["add", "hpc4", "--local", f"--slurm={OPTIONS}", "--prefix", prefix])
    assert "--slurm only apply to a remote host" in str(refused.value)


def test_step_argv_quotes_options_and_never_holds_the_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, SECRET)
    argv = ["python3", "-c", "print('x y')", '{"a": 1}']
    name = slurm.new_job_name()
    command = slurm.step_argv(argv, "--partition=debug --comment='two words' -t 5 "
                              '--mem="1G"', name)
    assert command == ["srun", "--partition=debug", "--comment=two words", "-t", "5",
                       "--mem=1G", "--ntasks=1", "--nodes=1", "--unbuffered", "--quiet",
                       f"--job-name={name}", *argv]
    assert name.startswith("rk-") and name != slurm.new_job_name()
    assert not any(SECRET in word for word in command)
    assert TOKEN_ENV not in slurm._job_environment()
    assert SECRET not in json.dumps(slurm._job_environment())
    for bad, word in [("--pty", "--pty"), ("-ofile", "-o"), ("--output=x", "--output"),
                      ("--job-name=me", "--job-name"), ("-i none", "-i")]:
        with pytest.raises(slurm.SlurmError, match=word) as refused:
            slurm.parse_options(bad)
        assert refused.value.code == "slurm.options"
    with pytest.raises(slurm.SlurmError, match="srun would run it as the command"):
        slurm.parse_options("--exclusive=user hostname")
    with pytest.raises(slurm.SlurmError, match="do not parse"):
        slurm.parse_options("--comment='open")


def test_start_step_runs_srun_without_the_token(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """What really runs: a stand-in srun on PATH records its argv and environment."""
    record = tmp_path / "record.json"
    fake = tmp_path / "srun"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"json.dump({{'argv': sys.argv, 'env': dict(os.environ)}}, "
                    f"open({str(record)!r}, 'w'))\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(TOKEN_ENV, SECRET)
    step = slurm.start_step(["worker", "--flag"], "--time=5", stdin=subprocess.DEVNULL)
    assert step.proc.wait(timeout=30) == 0
    seen = json.loads(record.read_text())
    assert seen["argv"][1:] == ["--time=5", "--ntasks=1", "--nodes=1", "--unbuffered",
                                "--quiet", f"--job-name={step.job_name}", "worker", "--flag"]
    assert SECRET not in json.dumps(seen)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(slurm.SlurmError) as missing:
        slurm.start_step(["worker"], "--time=5")
    assert missing.value.code == "slurm.no-srun"


def test_a_jobs_end_is_named_from_scontrol_when_srun_did_not_pass_it_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """srun does not always relay slurmstepd's CANCELLED line before it exits; the end is
    then read from ``scontrol show job`` (a stand-in on PATH here; the real one in
    test_a_job_cancelled_outside_says_so_and_the_next_cell_runs_in_a_new_one)."""
    fake = tmp_path / "scontrol"
    fake.write_text("#!/bin/sh\necho 'JobId=7 JobName=rk-x JobState=TIMEOUT Reason=TimeLimit "
                    "NodeList=c2 EndTime=2026-12-04T10:00:00'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    step = slurm.SlurmStep(subprocess.Popen(["true"]), "rk-x")
    step._job_id = "7"
    assert step.ended(["srun: error: c2: task 0: Terminated"]) == (
        "the engine's Slurm job 7 reached its time limit on c2 at 2026-12-04T10:00:00")
    line = "slurmstepd-c1: error: *** STEP 7.0 ON c1 CANCELLED AT 2026-12-04T09:00:00 ***"
    assert step.ended([line]) == ("the engine's Slurm job 7 was cancelled on c1 at "
                                  "2026-12-04T09:00:00 (scancel, by a user or an administrator)")
    step.proc.wait()


# -- srun itself, on the cluster --------------------------------------------------------------

_ECHO = textwrap.dedent("""\
    import os, signal
    signal.signal(signal.SIGINT, lambda *a: os.write(1, b"<INT>"))
    while True:
        data = os.read(0, 65536)
        if not data:
            break
        os.write(1, data)
""")


def _read(proc: subprocess.Popen[bytes], count: int, timeout: float) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while len(got) < count and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.05)[0]:
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                break
            got += chunk
    return got


def test_srun_passes_bytes_exactly_and_scancel_interrupts(slurmbed: SlurmBed,
                                                         login: SSHBed) -> None:
    """The behaviours engines/slurm.py relies on, with its own srun command line: every byte
    value crosses both ways at once (no line buffering), one ``scancel --signal=INT`` is one
    SIGINT to the task and leaves the step running, a SIGINT to srun forwards nothing, and the
    end of srun's stdin ends the job."""
    name = slurm.new_job_name()
    command = slurm.step_argv([login.remote_python, "-c", _ECHO], OPTIONS, name)
    proc = login.popen_remote("exec " + shlex.join(command), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"x")  # no newline: must not wait for one
        proc.stdin.flush()
        assert _read(proc, 1, 30) == b"x", proc.stderr.read1() if proc.poll() else "no echo"
        started = time.monotonic()
        proc.stdin.write(b"y")
        proc.stdin.flush()
        assert _read(proc, 1, 5) == b"y"
        print(f"\none byte there and back through srun: {(time.monotonic() - started)*1e3:.1f} ms")
        payload = bytes(range(256)) * 4096 + b"\r\n\x03\x04\x00"  # 1 MiB and the tricky ones
        started = time.monotonic()
        proc.stdin.write(payload)
        proc.stdin.flush()
        assert _read(proc, len(payload), 60) == payload
        print(f"1 MiB there and back: {time.monotonic() - started:.2f} s")
        [job] = slurmbed.jobs(name)
        assert job["state"] == "RUNNING" and job["node"] in slurmbed.nodes
        os.kill(proc.pid, signal.SIGINT)  # the pid is srun's (setpriv and env exec)
        assert _read(proc, 5, 1.5) == b""
        result = slurmbed.run(["scancel", "--signal=INT", f"{job['id']}.0"])
        assert result.returncode == 0, result.stderr
        assert _read(proc, 5, 10) == b"<INT>"
        proc.stdin.write(b"z")
        proc.stdin.flush()
        assert _read(proc, 1, 5) == b"z", "the step survived the interrupt"
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        assert slurmbed.wait_no_jobs(15, name) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        slurmbed.run(["scancel", f"--name={name}"])


# -- kernels --------------------------------------------------------------------------------


def add_spec(bed: SSHBed, prefix: str, name: str, **config: object) -> str:
    """rk-NAME on the bed's host with ``--slurm`` (``kernel_helpers.add_remote_spec``)."""
    return add_remote_spec(bed, prefix, name, f"--slurm={OPTIONS}", **config)


@pytest.fixture(scope="module")
def login(slurmbed: SlurmBed) -> SSHBed:
    """The login node: the Slurm bed's own SSH bed (account ``rkjslurm``)."""
    return slurmbed.ssh


@pytest.fixture(autouse=True)
def _only_chosen_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@dataclass
class Kernel:
    km: KernelManager
    kc: object
    spec: str


@pytest.fixture(scope="module")
def kernel(slurmbed: SlurmBed, login: SSHBed, jupyter_env: str) -> Iterator[Kernel]:
    spec = add_spec(login, jupyter_env, "slurm")
    started = time.monotonic()
    km, kc = start_new_kernel(kernel_name=spec, startup_timeout=120)
    print(f"\nkernel with its engine in a Slurm job ready in {time.monotonic() - started:.2f} s")
    yield Kernel(km, kc, spec)
    kc.stop_channels()
    if km.has_kernel:
        km.shutdown_kernel(now=True)


def text(run) -> str:
    assert run.reply["status"] == "ok", run.reply
    return run.results()[0]["data"]["text/plain"]


def job_of(kc) -> tuple[str, str]:
    """(job id, node) the engine says it runs in."""
    out = text(execute(kc, 'StringJoin[Environment["SLURM_JOB_ID"], " ", '
                           'Environment["SLURMD_NODENAME"], " ", Environment["SLURM_JOB_NAME"]]'))
    job, node, name = out.split()
    assert name.startswith(slurm.JOB_PREFIX), out
    return job, node


def test_engine_runs_in_a_job_on_a_compute_node(kernel: Kernel, slurmbed: SlurmBed,
                                                login: SSHBed) -> None:
    job, node = job_of(kernel.kc)
    assert node in slurmbed.nodes
    assert text(execute(kernel.kc, "$MachineName")) == os.uname().nodename.split(".")[0]
    [listed] = [j for j in slurmbed.jobs() if j["id"] == job]
    assert listed["state"] == "RUNNING" and listed["node"] == node
    assert listed["user"] == login.user
    assert text(execute(kernel.kc, "1 + 1")) == "2"
    assert "<svg" in execute(kernel.kc, "Graphics[{Red, Disk[]}]").results()[0]["data"][
        "image/svg+xml"]


def test_rkernel_status_shows_the_job(kernel: Kernel, slurmbed: SlurmBed) -> None:
    """%rkernel status names the engine's job, its state, node and time left (from squeue on
    the login node), and claims no memory figure: the process there is srun, not the
    engine."""
    job, node = job_of(kernel.kc)
    status = execute(kernel.kc, "%rkernel status").displays()[0]["data"]["text/plain"]
    print(status)
    [row] = [line for line in status.splitlines() if "slurm job" in line]
    assert re.search(rf"slurm job\s+{job} RUNNING on {node}, \d+:\d\d left$", row), row
    assert "engine memory" not in status, status


def test_a_pending_job_shows_why_it_waits() -> None:
    from rk_jupyter.client.status import _job

    assert _job({"id": "7", "state": "PENDING", "node": "", "time_left": "5:00",
                 "reason": "Resources"}) == "7 PENDING (Resources)"
    assert _job({"id": "?"}) == "? (not listed by squeue)"


def test_the_token_is_nowhere_in_the_job(kernel: Kernel, slurmbed: SlurmBed,
                                         login: SSHBed) -> None:
    """Neither srun's nor the worker's command line or environment, nor what Slurm stores
    about the job, holds the token the kernel uses (its lease's: the host's agent's)."""
    token = kernel.km.provisioner.transport.lease.token
    assert len(token) >= 32
    job, _ = job_of(kernel.kc)
    places = {}
    found = login.remote_processes(r"srun|" + WORKER)
    programs = {os.path.basename(args.split()[0]) for _, args in found}
    assert "srun" in programs and len(programs) == 2, found  # srun (two: it forks) + worker
    for pid, args in found:
        places[f"the command line of {pid} {args.split()[0]}"] = args.encode()
        places[f"the environment of {pid} {args.split()[0]}"] = Path(
            f"/proc/{pid}/environ").read_bytes()
    shown = slurmbed.run(["scontrol", "show", "job", "-dd", job])
    assert job in shown.stdout, shown.stderr
    places["scontrol show job"] = shown.stdout.encode()
    for where, content in places.items():
        assert token not in content, f"the token is in {where}"
        assert TOKEN_ENV.encode() not in content, f"{TOKEN_ENV} is in {where}"


def test_interrupt_aborts_and_keeps_definitions_and_the_job(kernel: Kernel) -> None:
    kc = kernel.kc
    job = job_of(kc)
    execute(kc, "x = 5;")
    for attempt in range(2):  # twice: two interrupts within seconds must not cancel the step
        msg_id = kc.execute("Do[Pause[0.1], {1000}]")
        time.sleep(2.0)
        started = time.monotonic()
        kc.control_channel.send(kc.session.msg("interrupt_request", {}))
        run = collect(kc, msg_id, timeout=60)
        elapsed = time.monotonic() - started
        print(f"\ninterrupt {attempt + 1} through scancel: {elapsed:.2f} s")
        assert run.reply["status"] == "error" and run.reply["ename"] == "$Aborted", run.reply
        assert elapsed < 5.0
    assert text(execute(kc, "x")) == "5"
    assert job_of(kc) == job


def test_quit_ends_the_job_and_the_next_cell_runs_in_a_new_one(kernel: Kernel,
                                                                slurmbed: SlurmBed) -> None:
    job, _ = job_of(kernel.kc)
    run = execute(kernel.kc, "Quit[]")
    assert run.reply["status"] == "ok", run.reply
    assert wait_for(lambda: not [j for j in slurmbed.jobs() if j["id"] == job], timeout=20), \
        slurmbed.jobs()
    again, _ = job_of(kernel.kc)  # a fresh engine, in a job of its own
    assert again != job
    assert len([j for j in slurmbed.jobs() if j["name"].startswith(slurm.JOB_PREFIX)]) == 1


def test_a_job_cancelled_outside_says_so_and_the_next_cell_runs_in_a_new_one(
        kernel: Kernel, slurmbed: SlurmBed) -> None:
    """The job ends by itself (here scancel by an administrator; a time limit or a node
    failure alike): the next cell's error names the job and Slurm's words of why, and says
    that the next cell queues a new job, which it then does."""
    job, node = job_of(kernel.kc)
    slurmbed.run(["scancel", job], check=True)
    assert wait_for(lambda: not [j for j in slurmbed.jobs() if j["id"] == job], timeout=20), \
        slurmbed.jobs()
    run = execute(kernel.kc, "1 + 1")
    said = run.streams("stderr")
    print(run.reply, said)
    assert f"the engine's Slurm job {job} was cancelled on {node} at " in said, said
    assert "(scancel, by a user or an administrator)" in said
    assert "a fresh engine runs in a new job, queued again" in said
    assert "RuntimeWarning" not in said  # runpy on a cold worker, once
    again, _ = job_of(kernel.kc)
    assert again != job


@pytest.mark.parametrize("when", ["in the running cell", "before the next cell"])
def test_the_notebook_is_warned_before_the_time_limit(
        slurmbed: SlurmBed, login: SSHBed, jupyter_env: str, when: str) -> None:
    """A job of one minute, warned 56 s before its limit: the warning reaches the cell that
    runs then, or else the next cell, on stderr, names the job and what to do; %rkernel
    status shows the time left."""
    spec = add_spec(login, jupyter_env, "slurm-limit", slurm="--partition=debug --time=1",
                    engine_options={"time_warning": 56})
    km, kc = start_new_kernel(kernel_name=spec, startup_timeout=120)
    try:
        job, _ = job_of(kc)
        status = execute(kc, "%rkernel status").displays()[0]["data"]["text/plain"]
        assert re.search(rf"slurm job\s+{job} RUNNING on c\d, 0:[0-5]\d left", status), status
        if when == "before the next cell":
            time.sleep(8)  # the warning comes while no cell runs
        run = execute(kc, "Pause[8]; 1" if when == "in the running cell" else "1", timeout=30)
        said = run.streams("stderr")
        print(said)
        assert text(run) == "1"
        assert f"Slurm::timelimit: The engine's Slurm job {job} reaches its time limit in " \
            in said, said
        assert "Save what you need now" in said and "queues a new job" in said
        assert "Slurm::timelimit" not in execute(kc, "2").streams("stderr")  # once
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert wait_for(lambda: not [j for j in slurmbed.jobs() if j["id"] == job], timeout=20), \
        slurmbed.jobs()


def test_shutdown_leaves_no_job_and_no_worker(kernel: Kernel, slurmbed: SlurmBed,
                                              login: SSHBed) -> None:
    job, _ = job_of(kernel.kc)
    assert login.remote_processes(WORKER)
    kernel.kc.stop_channels()
    started = time.monotonic()
    kernel.km.shutdown_kernel(now=False)
    assert wait_for(lambda: not [j for j in slurmbed.jobs() if j["id"] == job], timeout=20), \
        slurmbed.jobs()
    print(f"\njob gone from squeue {time.monotonic() - started:.2f} s after shutdown began")
    assert wait_for(lambda: login.remote_processes() == [], timeout=15), \
        login.remote_processes()


def test_killed_kernel_process_ends_the_job_after_the_grace(
        slurmbed: SlurmBed, login: SSHBed, jupyter_env: str) -> None:
    """kill -9 of the kernel process looks like a network drop to the agent: the engine and
    its job wait the reconnect grace for the kernel, then the session's close cancels the job."""
    grace = 4.0
    spec = add_spec(login, jupyter_env, "slurm-grace", reconnect_grace=grace)
    km, kc = start_new_kernel(kernel_name=spec, startup_timeout=120)
    try:
        job, _ = job_of(kc)
        os.kill(km.provisioner.pid, signal.SIGKILL)
        killed = time.monotonic()
        time.sleep(grace / 2)
        assert [j for j in slurmbed.jobs() if j["id"] == job], "kept during the grace"
        assert wait_for(lambda: not [j for j in slurmbed.jobs() if j["id"] == job],
                        timeout=grace + 20), slurmbed.jobs()
        print(f"\njob gone {time.monotonic() - killed:.2f} s after kill -9 (grace {grace:g} s)")
        assert wait_for(lambda: not login.remote_processes(WORKER), timeout=10)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert slurmbed.wait_no_jobs(15) == []


def test_killed_agent_takes_its_job_along(slurmbed: SlurmBed, login: SSHBed,
                                          jupyter_env: str) -> None:
    """SIGKILL of the agent on the login node (a process reaper, the OOM killer): srun's
    stdin ends, the worker exits on EOF, the step and the job end; nobody has to scancel."""
    spec = add_spec(login, jupyter_env, "slurm-agent")
    km, kc = start_new_kernel(kernel_name=spec, startup_timeout=120)
    try:
        job, _ = job_of(kc)
        [(agent, _)] = login.remote_processes(AGENT)
        os.kill(agent, signal.SIGKILL)  # not kill_remote_processes: SIGTERM lets it clean up
        killed = time.monotonic()
        assert wait_for(lambda: not [j for j in slurmbed.jobs() if j["id"] == job],
                        timeout=20), slurmbed.jobs()
        print(f"\njob gone {time.monotonic() - killed:.2f} s after the agent's SIGKILL")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert slurmbed.wait_no_jobs(15) == []
    assert wait_for(lambda: login.remote_processes() == [], timeout=15), \
        login.remote_processes()


@pytest.fixture
def full_cluster(slurmbed: SlurmBed, login: SSHBed) -> Iterator[list[str]]:
    """Both nodes taken by a filler job each (RUNNING): a kernel's job now waits in the
    queue (PENDING, reason Resources) until a test ends a filler.  Every job ends after."""
    fillers = []
    for _ in slurmbed.nodes:
        out = login.run_remote("sbatch --parsable --job-name=rkj-filler --time=5 "
                                "--output=/dev/null --wrap='sleep 300'")
        assert out.returncode == 0, out.stderr
        fillers.append(out.stdout.strip())
    try:
        assert wait_for(lambda: [j["state"] for j in slurmbed.jobs("rkj-filler")]
                        == ["RUNNING", "RUNNING"], timeout=30), slurmbed.jobs()
        yield fillers
    finally:
        slurmbed.run(["scancel", *fillers])
    assert slurmbed.wait_no_jobs(20) == []
    assert wait_for(lambda: login.remote_processes() == [], timeout=15), \
        login.remote_processes()


def _ours(slurmbed: SlurmBed) -> list[dict[str, str]]:
    return [j for j in slurmbed.jobs() if j["name"].startswith(slurm.JOB_PREFIX)]


def _messages(kc, msg_id: str, until, timeout: float) -> list[dict]:
    """Every iopub message of request ``msg_id`` until ``until(messages)`` holds (or
    ``timeout`` s pass, then AssertionError with what came)."""
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while not until(got):
        assert time.monotonic() < deadline, [(m["msg_type"], m["content"]) for m in got]
        try:
            msg = kc.get_iopub_msg(timeout=0.2)
        except Exception:
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            got.append(msg)
    return got


def _shown(msgs: list[dict]) -> str:
    """The text/plain of every display (new or updated) among ``msgs``."""
    return "\n".join(m["content"]["data"].get("text/plain", "") for m in msgs
                     if m["msg_type"] in ("display_data", "update_display_data"))


def _idle(msgs: list[dict]) -> bool:
    return any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
               for m in msgs)


def test_a_queued_job_gives_a_kernel_whose_cell_shows_the_queue_and_runs_when_it_starts(
        full_cluster: list[str], slurmbed: SlurmBed, login: SSHBed, jupyter_env: str) -> None:
    """With the cluster full the kernel starts anyway; a cell shows the job's state, reason
    and place in the queue; an interrupt ends that cell and keeps the job queued; when a node
    frees up, the waiting cell runs in the job and says how long it waited."""
    spec = add_spec(login, jupyter_env, "slurm-queued")
    started = time.monotonic()
    km, kc = start_new_kernel(kernel_name=spec, startup_timeout=60)
    try:
        print(f"\nkernel up in {time.monotonic() - started:.2f} s with its job queued")
        [job] = _ours(slurmbed)
        assert job["state"] == "PENDING", job
        status = execute(kc, "%rkernel status").displays()[0]["data"]["text/plain"]
        assert re.search(rf"slurm job\s+{job['id']} PENDING \((Resources|Priority)\)", status), \
            status
        # a cell waits, and shows why
        msg_id = kc.execute("1 + 1")
        msgs = _messages(kc, msg_id, lambda got: "Waiting for the engine" in _shown(got), 15)
        shown = _shown(msgs)
        print(shown)
        assert f"Slurm job {job['id']} is PENDING (Resources) in partition debug, 1 of 1 in " \
               "its queue" in shown and "interrupt to stop waiting" in shown
        # interrupt: the cell ends at once, the job stays queued
        interrupted = time.monotonic()
        kc.control_channel.send(kc.session.msg("interrupt_request", {}))
        msgs = _messages(kc, msg_id, _idle, 10)
        took = time.monotonic() - interrupted
        said = "".join(m["content"]["text"] for m in msgs if m["msg_type"] == "stream")
        reply = kc.get_shell_msg(timeout=5)["content"]
        assert reply["status"] == "error" and "Stopped waiting for the engine" in said, said
        assert took < 2.0, took
        assert [j["state"] for j in _ours(slurmbed)] == ["PENDING"], slurmbed.jobs()
        # the next cell waits again; a node frees up and it runs, in the kernel's job
        msg_id = kc.execute('Environment["SLURM_JOB_ID"]')
        _messages(kc, msg_id, lambda got: "Waiting for the engine" in _shown(got), 15)
        slurmbed.run(["scancel", full_cluster[0]])
        freed = time.monotonic()
        run = collect(kc, msg_id, timeout=60)
        print(f"the waiting cell ran {time.monotonic() - freed:.2f} s after a node freed up")
        assert run.reply["status"] == "ok", run.reply
        assert run.results()[0]["data"]["text/plain"] == job["id"]
        notice = run.streams("stderr")
        assert re.search(rf"Slurm job {job['id']} started on c[12] after \d+ s in the queue",
                         notice), notice
        assert "definitions were reset" not in notice
        assert text(execute(kc, "x = 5; x + 1")) == "6"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    assert wait_for(lambda: not _ours(slurmbed), timeout=20), slurmbed.jobs()


def test_queue_timeout_ends_the_wait_and_shutdown_cancels_a_queued_job(
        full_cluster: list[str], slurmbed: SlurmBed, login: SSHBed, jupyter_env: str) -> None:
    """queue_timeout bounds the wait: the waiting cell gets a coded error naming the job
    and the timeout, the job is cancelled, and the next cell queues a new one; shutdown
    while a job is queued cancels it."""
    spec = add_spec(login, jupyter_env, "slurm-qtimeout", engine_options={"queue_timeout": 6})
    km, kc = start_new_kernel(kernel_name=spec, startup_timeout=60)
    try:
        [first] = _ours(slurmbed)
        run = execute(kc, "1 + 1", timeout=30)
        assert run.reply["status"] == "error", run.reply
        said = " ".join(run.reply["evalue"].split())
        print(f"\n{said}")
        assert re.search(rf"Slurm job {first['id']} waited \d+ s in the queue \(PENDING, "
                         r"reason \w+\), longer than the kernelspec's queue_timeout of 6 s, "
                         "and is cancelled", said), said
        assert "run the cell again" in said
        assert wait_for(lambda: not [j for j in _ours(slurmbed) if j["id"] == first["id"]],
                        timeout=15), slurmbed.jobs()
        # the next cell queues a new job; shutdown meanwhile cancels it
        msg_id = kc.execute("2 + 2")
        _messages(kc, msg_id, lambda got: "Waiting for the engine" in _shown(got), 20)
        [second] = _ours(slurmbed)
        assert second["id"] != first["id"] and second["state"] == "PENDING"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    assert wait_for(lambda: not _ours(slurmbed), timeout=20), slurmbed.jobs()


def test_a_kept_job_step_is_ended_when_nobody_takes_it() -> None:
    """slurm.Held (pure logic): a step kept across a restart is taken once, and ended when
    nobody takes it in time or a newer one replaces it."""
    held = slurm.Held()
    ended: list[str] = []
    held.hold(("k1",), "a", lambda: ended.append("a"), 0.3)
    assert held.take(("k1",)) == "a" and held.take(("k1",)) is None
    held.hold(("k2",), "b", lambda: ended.append("b"), 0.3)
    held.hold(("k3",), "c", lambda: ended.append("c"), 30)
    held.hold(("k3",), "d", lambda: ended.append("d"), 30)  # a second restart: c ends
    assert wait_for(lambda: sorted(ended) == ["b", "c"], timeout=5), ended
    assert held.take(("k3",)) == "d"
    time.sleep(0.5)
    assert sorted(ended) == ["b", "c"], "a taken step is never ended by the hold"


def test_restart_keeps_the_job_and_gives_a_fresh_engine(
        slurmbed: SlurmBed, login: SSHBed, jupyter_env: str) -> None:
    """A restart (as JupyterLab's, and a forced one that kills the kernel process) gives a
    fresh engine in the same job: with the other node taken, a new job would wait in the
    queue, so the same job id proves the allocation was kept.  Shutdown then ends it."""
    spec = add_spec(login, jupyter_env, "slurm-restart")
    km, kc = start_new_kernel(kernel_name=spec, startup_timeout=120)
    filler = None
    try:
        job, node = job_of(kc)
        out = login.run_remote("sbatch --parsable --job-name=rkj-filler --time=5 "
                               "--output=/dev/null --wrap='sleep 300'")
        filler = out.stdout.strip()
        assert wait_for(lambda: [j["state"] for j in slurmbed.jobs("rkj-filler")]
                        == ["RUNNING"], timeout=30), slurmbed.jobs()
        for now in (False, True):
            assert text(execute(kc, "x = 41; x + 1")) == "42"
            started = time.monotonic()
            km.restart_kernel(now=now)
            kc.wait_for_ready(timeout=60)
            assert job_of(kc) == (job, node), "the same job, on the same node"
            took = time.monotonic() - started
            print(f"\nrestart (now={now}) → a fresh engine in job {job} in {took:.2f} s")
            assert text(execute(kc, "x")) == "x", "a fresh engine: no definitions"
        assert [j["id"] for j in _ours(slurmbed)] == [job]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
        if filler:
            slurmbed.run(["scancel", filler])
    assert wait_for(lambda: not _ours(slurmbed), timeout=20), slurmbed.jobs()
    assert slurmbed.wait_no_jobs(20) == []
    assert wait_for(lambda: login.remote_processes() == [], timeout=15), \
        login.remote_processes()


_FAKE_WOLFRAM = """\
import json, os, sys
json.dump({"argv": sys.argv[1:], "nonce": os.environ.get("RK_WSTP_NONCE"),
           "cmdline": open("/proc/self/cmdline", "rb").read().decode(errors="replace"),
           "job": os.environ.get("SLURM_JOB_ID"), "node": os.environ.get("SLURMD_NODENAME"),
           "stdin": sys.stdin.read()}, open(RECORD, "w"))
print("Mathematica 14.3.0 Kernel for Linux x86 (64-bit)")
print("Mathematica 14.3.0 Kernel cannot find a valid password.", flush=True)
sys.exit(1)
"""

_DRIVE_WOLFRAM = """\
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from rk_jupyter.agent.engines.base import EngineError
from rk_jupyter.agent.engines.wolfram import WolframEngine

class Host:
    def emit(self, pkt): pass
    def read_input(self, prompt): return ""

engine = WolframEngine(Host(), {"kernel_path": KERNEL, "slurm": OPTIONS})
try:
    engine.start(60.0)
    print(json.dumps({"error": None}))
except EngineError as exc:
    print(json.dumps({"error": str(exc), "code": exc.code}))
"""


def test_a_wolfram_kernel_runs_in_a_job_and_gets_its_peer_check_through_stdin(
        slurmbed: SlurmBed, tmp_path: Path) -> None:
    """No licensed Wolfram kernel runs here: a fake kernel (which fails the way an
    unlicensed one does) on a fake installation with the stand-in WSTP library shows what
    the Wolfram engine runs on the real Slurm bed.  The kernel runs on a compute node with
    the TCPIP link's arguments; the link's peer-check value reaches its environment through
    srun's stdin, so it is in no command line, no log and nothing srun exports; the licence
    failure comes back in the kernel's words, saying it ran in a job; no job is left."""
    from test_engine_wolfram import FAKE_WSTP_C, compile_library

    from rk_jupyter.agent.engines.wolfram import discovery

    record = tmp_path / "record.json"
    kernel = tmp_path / "Wolfram/14.3/Executables/WolframKernel"
    kernel.parent.mkdir(parents=True)
    kernel.write_text(f"#!{sys.executable}\nRECORD = {str(record)!r}\n{_FAKE_WOLFRAM}")
    kernel.chmod(0o755)
    kit = (tmp_path / "Wolfram/14.3/SystemFiles/Links/WSTP/DeveloperKit"
           / discovery.system_id() / "CompilerAdditions")
    kit.mkdir(parents=True)
    compile_library(kit, FAKE_WSTP_C, "libWSTP64i4.so")
    driver = tmp_path / "drive.py"
    driver.write_text(f"KERNEL = {str(kernel)!r}\nOPTIONS = {OPTIONS!r}\n{_DRIVE_WOLFRAM}")
    out = slurmbed.run([sys.executable, str(driver)], timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\n{result}")
    said = " ".join(str(result["error"]).split())
    assert "cannot find a valid password" in said and "-licenseinfo" in said, said
    assert "as a Slurm job step: srun --partition=debug" in said, said
    seen = json.loads(record.read_text())
    assert seen["argv"] == ["-wstp", "-linkprotocol", "TCPIP", "-linkconnect", "-linkname",
                            "fake-link-name"]
    assert seen["job"] and seen["node"] in slurmbed.nodes, seen
    nonce = seen["nonce"]
    assert nonce and len(nonce) == 32, seen
    assert seen["stdin"] == "", "the value is the one line the kernel's shell read"
    assert nonce not in seen["cmdline"] and nonce not in out.stderr + out.stdout
    assert "srun" in out.stderr, "the log shows the srun command (which holds no secret)"
    assert wait_for(lambda: not [j for j in slurmbed.jobs() if j["id"] == seen["job"]],
                    timeout=15), slurmbed.jobs()


def _doctor(spec: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, dict]]:
    """``rk-jupyter doctor SPEC --quick --json`` as a user runs it: exit status, steps."""
    capsys.readouterr()
    status = cli(["doctor", spec, "--quick", "--json"])
    rows = json.loads(capsys.readouterr().out)
    with capsys.disabled():
        for row in rows:
            print(f"  {row['step']}: {row['status']} {row['detail']} {row['code'] or ''}")
    return status, {row["step"]: row for row in rows}


def test_doctor_asks_slurm_whether_it_takes_the_options(
    slurmbed: SlurmBed, login: SSHBed, jupyter_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The doctor's slurm step: srun --test-only on the login node takes the kernelspec's
    options and says where the job would run; then the engine starts in a real job."""
    spec = add_spec(login, jupyter_env, "slurm-doctor")
    status, steps = _doctor(spec, capsys)
    assert status == 0, steps
    detail = steps["slurm"]["detail"]
    assert steps["slurm"]["status"] == "pass", steps["slurm"]
    assert "to start at" in detail and f"in partition {slurmbed.partition}" in detail, detail
    assert steps["engine"]["status"] == "pass", steps["engine"]
    assert slurmbed.wait_no_jobs(20) == []  # the doctor's job ended with it
    assert wait_for(lambda: login.remote_processes() == [], timeout=15), \
        login.remote_processes()


def test_doctor_catches_a_partition_that_does_not_exist(
    slurmbed: SlurmBed, login: SSHBed, jupyter_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad partition fails the slurm step with Slurm's own words and the fix, before any
    agent starts (the steps after it are skipped)."""
    spec = add_spec(login, jupyter_env, "slurm-nope", slurm="--partition=nope --time=5")
    status, steps = _doctor(spec, capsys)
    assert status != 0
    step = steps["slurm"]
    assert (step["status"], step["code"]) == ("fail", "slurm.rejected"), step
    assert "invalid partition" in step["detail"].lower() and "nope" in step["detail"], step
    assert "sinfo" in step["fix"] and "--slurm=" in step["fix"], step
    assert steps["agent"]["status"] == "skipped"
    assert slurmbed.jobs() == []
    assert login.remote_processes() == []
