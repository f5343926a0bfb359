"""``rk-jupyter doctor`` and ``%rkernel doctor``: the whole chain checked against the real SSH
test bed (tests/sshbed.py) and rk-local, and each fault injected for real fails at its step,
with its fix, quickly, and leaves nothing behind on the remote."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

from rk_jupyter import doctor as doctor_module
from rk_jupyter import kernelspec
from rk_jupyter.cli import main as cli
from rk_jupyter.doctor import Checkup, Step, render_text, summary
from rk_jupyter.link.expr import Symbol
from rk_jupyter.link.packets import packet, packet_name
from rk_jupyter.provisioning.ssh.pool import POOL, ConnectOptions
from rk_jupyter.provisioning.ssh.remote_agent import AgentSettings
from rk_jupyter.provisioning.ssh.target import resolve_target

from kernel_helpers import children_of, execute, wait_for, wait_gone
from sshbed import SSHBed

CONNECT_TIMEOUT = 3.0
CHAIN = ["kernelspec", "resolve", "reach", "host key", "auth", "remote shell", "python",
         "slurm", "agent", "link", "engine", "round trip", "throughput"]
ENGINE_CHECKS = ["input", "package", "throw", "messages", "interrupt", "graphics", "print"]
STEPS = CHAIN + ENGINE_CHECKS
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


def doctor(name: str, capsys: pytest.CaptureFixture[str], *options: str,
           expected: list[str] = STEPS) -> tuple[int, dict[str, dict], float]:
    """Run ``rk-jupyter doctor NAME --json [options]``: exit status, steps by name, seconds
    taken; the steps are ``expected``, in that order."""
    capsys.readouterr()
    started = time.monotonic()
    status = cli(["doctor", name, "--json", *options])
    elapsed = time.monotonic() - started
    rows = json.loads(capsys.readouterr().out)
    steps = [Step(**{key: row[key] for key in ("step", "status", "seconds", "detail", "fix",
                                                "code")})
             for row in rows]
    with capsys.disabled():
        print("\n" + render_text(f"doctor {name} (exit {status}, {elapsed:.1f} s)", steps))
    assert [row["step"] for row in rows] == expected
    for row, step in zip(rows, steps, strict=True):
        assert set(row) == {"step", "ok", "status", "seconds", "detail", "fix", "code"}
        assert row["ok"] is step.ok
        assert bool(row["code"]) is (row["status"] == "fail")  # every failure has its code
    return status, {row["step"]: row for row in rows}, elapsed


def assert_fails_at(steps: dict[str, dict], where: str) -> dict:
    """The step ``where`` failed, every step before it passed (or, for ``slurm``, had no
    meaning), every one after was skipped."""
    at = STEPS.index(where)
    assert [steps[s]["status"] for s in STEPS[:at]] == [
        "n/a" if s == "slurm" and steps[s]["status"] == "n/a" else "pass"
        for s in STEPS[:at]], steps
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
        assert steps.pop("slurm")["status"] == "n/a"  # no Slurm job asked for
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


def test_local_passes_with_the_network_steps_not_applicable_and_the_engine_checks_in_time(
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
        elif name == "slurm":
            assert (row["status"], row["detail"]) == ("n/a", "the kernelspec asks for no "
                                                      "Slurm job (slurm)")
        else:
            assert row["status"] == "pass" and row["ok"] is True and row["seconds"] >= 0
    # The engine checks, each what it found; together well within 15 s on Mathics3.
    assert sum(steps[name]["seconds"] for name in ENGINE_CHECKS) < 15
    assert "result 1681" in steps["input"]["detail"]
    assert "10, no ::shdw; deleted it" in steps["package"]["detail"]
    assert "1+1 = 2 on the same engine" in steps["throw"]["detail"]
    assert "Power::infy in each" in steps["messages"]["detail"]
    assert "still 7" in steps["interrupt"]["detail"]
    assert 1.0 <= steps["interrupt"]["seconds"] < 1.0 + 2.0  # interrupted after 1 s
    assert steps["graphics"]["detail"].count("SVG") == 2
    assert "printed one line: '1 / 3'" in steps["print"]["detail"]
    assert wait_gone(sorted(set(children_of(os.getpid())) - before)) == []


def test_quick_leaves_the_engine_checks_out(rk_local: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    status, steps, _ = doctor("local", capsys, "--quick", expected=CHAIN)
    assert status == 0 and "1+1 = 2" in steps["engine"]["detail"]
    capsys.readouterr()
    assert cli(["doctor", "local", "--quick"]) == 0
    text = capsys.readouterr().out
    assert "✓ throughput" in text and "all 7 steps passed" in text
    assert not any(f" {name} " in text for name in ENGINE_CHECKS), text


# -- engine checks against a fake engine that answers some cells wrongly ----------------------


class FakeEngine:
    """A client whose engine answers cells one at a time as Mathics3 does (``cell``), but
    ``wrong`` answers some of them otherwise: code -> function(engine, code) -> (prints,
    messages, result), a result being a MIME bundle, text, None (Null) or ``ABORTED``;
    ``ENDED`` ends the engine (the next cell gets a fresh one, announced first)."""

    ABORTED, ENDED = object(), object()

    def __init__(self, wrong: dict[str, Callable[[FakeEngine, str], Any]]) -> None:
        self.wrong = wrong
        self.engine_restarts = 0
        self.engine_gone = False
        self.interrupted = threading.Event()
        self.release = threading.Event()  # ends what hangs
        self.sent: list[str] = []
        self._packets: queue.Queue[Any] = queue.Queue()
        self._cells: queue.Queue[str] = queue.Queue()
        self._answers: queue.Queue[str] = queue.Queue()
        self._ended = False
        self._uses = {"1/0": 0}
        threading.Thread(target=self._serve, daemon=True).start()

    # the part of AgentClient the evaluation loop and the doctor use
    def send(self, pkt: Any) -> None:
        name = packet_name(pkt)
        if name == "EnterTextPacket":
            self.sent.append(pkt.args[0])
            self._cells.put(pkt.args[0])
        elif name == "TextPacket":
            self._answers.put(pkt.args[0])
        elif name == "RKInterrupt":
            self.interrupted.set()

    def interrupt(self) -> None:
        self.send(packet("RKInterrupt"))

    def next_packet(self, timeout: float) -> Any:
        try:
            return self._packets.get(timeout=timeout)
        except queue.Empty:
            return None

    def engine_restarted(self, info: dict[str, Any]) -> None:
        self.engine_restarts += 1

    # the engine
    def ask(self, prompt: str) -> str:
        self._packets.put(packet("InputPacket", prompt))
        return self._answers.get(timeout=10)

    def cell(self, code: str) -> tuple[list[str], list[tuple[str, str, str]], Any]:
        if code == 'Input["n? "]^2':
            return [], [], str(int(self.ask("n? ")) ** 2)
        if code.startswith("rkDoctorFile = "):
            return [], [], "/tmp/rk-doctor-1-0.wl"
        if code.startswith("Quiet[DeleteFile["):
            return [], [], "False"
        if code == "Throw[2^70]":
            return [], [("Throw", "nocatch", "Uncaught Throw[1180591620717411303424] "
                         "returned to top level.")], "Hold[Throw[1180591620717411303424]]"
        if code == "1/0":
            return [], [("Power", "infy", "Infinite expression 1 / 0 encountered.")], \
                "ComplexInfinity"
        if code == "Pause[30]":
            return [], [], self.ABORTED if self.interrupted.wait(30) else None
        if code == "Plot[x, {x, 0, 1}]":
            return [], [], {"text/plain": "-Graphics-", "image/svg+xml": "<svg/>"}
        if code == "Print[1/3]":
            return ["1 / 3"], [], None
        return [], [], {"Get[rkDoctorFile]\nrkDoctorSquare[3]": "10", "{1+1, rkDoctorThrown}":
                        "{2, 70}", "rkDoctorThrown = 70": "70", "rkDoctorKept = 7": "7",
                        "rkDoctorKept": "7"}[code]

    def _serve(self) -> None:
        line = 1
        while True:
            code = self._cells.get()
            if self._ended:
                self._ended = False
                self._packets.put(packet("RKEngineRestarted", {"restarts": 1,
                                                               "cause": "it crashed"}))
            self.interrupted.clear()
            if code in self._uses:
                self._uses[code] += 1
            prints, messages, result = self.wrong.get(code, FakeEngine.cell)(self, code)
            if result is self.ENDED:
                self._ended = True
                self._packets.put(packet("RKEngineDied", "the engine crashed", False))
                continue
            for text in prints:
                self._packets.put(packet("TextPacket", text))
            for message in messages:
                self._packets.put(packet("MessagePacket", *message))
            if result is self.ABORTED:
                self._packets.put(packet("ReturnPacket", Symbol("$Aborted")))
            elif result is not None:
                bundle = result if isinstance(result, dict) else {"text/plain": result}
                self._packets.put(packet("OutputNamePacket", f"Out[{line}]= "))
                self._packets.put(packet("ReturnPacket", bundle))
            line += 1
            self._packets.put(packet("InputNamePacket", f"In[{line}]:= "))


def engine_checks(engine: FakeEngine) -> dict[str, Step]:
    checkup = Checkup("fake")
    checkup.client = engine  # type: ignore[assignment]  # what the launch would have made
    steps = checkup.engine_checks()
    print("\n" + render_text("engine checks on a fake engine", steps))
    assert [step.step for step in steps] == ENGINE_CHECKS
    return {step.step: step for step in steps}


def timed_engine_checks(engine: FakeEngine) -> tuple[dict[str, Step], float]:
    """``engine_checks`` and the seconds they took; a hung fake is released afterwards."""
    try:
        started = time.monotonic()
        steps = engine_checks(engine)
        return steps, time.monotonic() - started
    finally:
        engine.release.set()


def test_the_fake_engine_passes_every_engine_check() -> None:
    steps = engine_checks(FakeEngine({}))
    assert all(step.status == "pass" for step in steps.values()), steps


def _hang(engine: FakeEngine, code: str) -> Any:
    engine.release.wait(60)
    return [], [], None


#: check -> (what the engine does wrong, what its failure says)
WRONG: dict[str, tuple[dict[str, Callable[[FakeEngine, str], Any]], list[str]]] = {
    "input": ({'Input["n? "]^2': lambda e, c: ([], [], f"{e.ask('n? ')}^2")},  # a string
              ["sent 'Input[\"n? \"]^2' (answering Input with ['41'])",
               "prompts ['n? ']; result '41^2'", "expected the prompt 'n? ' and the result 1681"]),
    "package": ({"Get[rkDoctorFile]\nrkDoctorSquare[3]": lambda e, c: (
        [], [("rkDoctorSquare", "shdw", "Symbol rkDoctorSquare appears in multiple "
              "contexts")], "Global`rkDoctorSquare[3]")},
                ["sent 'Get[rkDoctorFile]\\nrkDoctorSquare[3]'", "::shdw",
                 "result 'Global`rkDoctorSquare[3]'", "expected the result 10"]),
    "throw": ({"Throw[2^70]": lambda e, c: ([], [], FakeEngine.ENDED)},
              ["sent 'Throw[2^70]'", "engine.ended: the engine crashed",
               "expected any answer but the end of the engine"]),
    "messages": ({"1/0": lambda e, c: ([], [("General", "stop", "Further output of "
                                          "Power::infy will be suppressed")]
                                        if e._uses["1/0"] > 3 else
                                        [("Power", "infy", "Infinite expression")],
                                        "ComplexInfinity")},
                 ["sent '1/0'", "General::stop", "in cell 4 of 4"]),
    "interrupt": ({"Pause[30]": lambda e, c: (e.release.wait(3), ([], [], None))[1]},
                  ["sent 'Pause[30]'; came back nothing", "did not end within",
                   "of the interrupt"]),
    "graphics": ({"Plot[x, {x, 0, 1}]": lambda e, c: ([], [], "-Graphics-")},
                 ["sent 'Plot[x, {x, 0, 1}]'; came back result '-Graphics-'",
                  "image/svg+xml or image/png"]),
    "print": ({"Print[1/3]": lambda e, c: (["1\n-\n3"], [], None)},
              ["sent 'Print[1/3]'; came back prints ['1\\n-\\n3']",
               "expected one print output of one line"]),
}


@pytest.mark.parametrize("check", ENGINE_CHECKS)
def test_a_failing_engine_check_says_what_was_sent_and_does_not_skip_the_others(
    check: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doctor_module, "INTERRUPT_AFTER", 0.2)
    monkeypatch.setattr(doctor_module, "INTERRUPT_LIMIT", 0.5)
    wrong, said = WRONG[check]
    engine = FakeEngine(wrong)
    steps, elapsed = timed_engine_checks(engine)
    failed = steps[check]
    assert failed.status == "fail" and failed.ok is False and failed.seconds is not None
    assert failed.code == ("doctor.engine-hangs" if check == "interrupt"
                           else "doctor.engine-check")
    for text in said:
        assert text in failed.detail, (text, failed.detail)
    assert "rk-jupyter doctor NAME --json" in failed.fix
    # Every other check ran, and passed: after a lost engine, on the fresh one; after a
    # Pause[30] the interrupt did not stop, once it ended by itself.
    assert all(step.status == "pass" for name, step in steps.items() if name != check), steps
    assert elapsed < 8
    line = summary(list(steps.values()))
    assert line.startswith(f"failed at {check} after ") and "skipped" not in line


def test_a_hung_engine_fails_each_engine_check_within_its_limit(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine stops answering at the messages check: that check fails at its timeout,
    the next waits SETTLE_TIMEOUT for it, the rest fail at once; none is skipped."""
    monkeypatch.setattr(doctor_module, "CHECK_TIMEOUT", 1.0)
    monkeypatch.setattr(doctor_module, "SETTLE_TIMEOUT", 1.0)
    engine = FakeEngine({"1/0": _hang})
    steps, elapsed = timed_engine_checks(engine)
    assert [steps[name].status for name in ENGINE_CHECKS] == ["pass"] * 3 + ["fail"] * 4
    hung = steps["messages"]
    assert hung.code == "doctor.engine-hangs" and 1.0 <= hung.seconds < 2.0
    assert "sent '1/0'; came back nothing" in hung.detail
    assert "did not end within 1 s" in hung.detail
    busy = steps["interrupt"]
    assert busy.code == "doctor.engine-busy" and 1.0 <= busy.seconds < 2.0
    assert "still evaluates '1/0' (sent by the messages check)" in busy.detail
    assert all(steps[name].code == "doctor.engine-busy" and steps[name].seconds < 0.5
               for name in ("graphics", "print"))
    assert "Pause[30]" not in engine.sent  # nothing more was sent to the hung engine
    assert elapsed < 5


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
    later = len(STEPS) - STEPS.index("host key") - 1
    assert "failed at host key after " in text and f"; {later} later steps skipped" in text
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
        not_applicable = len(NETWORK) + 1  # and slurm
        assert f"all {len(STEPS) - not_applicable} steps passed in " in text
        assert f"({not_applicable} not applicable)" in text
        assert table.startswith("<table class='rk-doctor'>")
        assert table.count("<tr>") == len(STEPS) + 2 and "1+1 = 2" in table
        # The kernel's own engine is untouched.
        assert execute(kc, "1 + 1").results()[0]["data"]["text/plain"] == "2"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.mark.parametrize("second", [0.0, 1.5])
def test_a_plot_not_drawn_passes_if_the_next_one_does_not_wait_again(second: float) -> None:
    """Without a front end a plot is text saying so; the next plot must not wait for a
    front end again (more than 1 s)."""
    plots: list[float] = []

    def not_drawn(engine: FakeEngine, code: str) -> Any:
        time.sleep(0.3 if not plots else second)
        plots.append(time.monotonic())
        return [], [], "-Graphics-\n(not drawn: the kernel could not render it)"

    steps = engine_checks(FakeEngine({"Plot[x, {x, 0, 1}]": not_drawn}))
    graphics = steps["graphics"]
    assert len(plots) == 2
    if second < 1:
        assert graphics.status == "pass"
        assert graphics.detail.startswith("Plot[x, {x, 0, 1}] twice: text (not drawn) in 0.3")
        assert ", then text (not drawn) in 0.0" in graphics.detail
    else:
        assert graphics.status == "fail" and graphics.code == "doctor.engine-check"
        assert "expected the second plot within 1 s, as the first was not drawn (it took 1.5"\
            in graphics.detail
        assert "result '-Graphics-\\n(not drawn" in graphics.detail
    assert all(step.status == "pass" for step in steps.values() if step is not graphics)
