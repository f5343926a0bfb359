"""``rk-jupyter doctor NAME``: walk the chain from this machine to a working engine, step by step.

The steps up to the agent are the doctor's own diagnosis, each over the function a kernel
start itself calls (ssh_config target resolution, ``connect.resolve``, the connect phases,
``check_login``, the Python probe of ``provisioning.diagnosis``), so a step fails with the
error a kernel start would give — its cause and its fix, and its code — at the step where it
happens and with the time it took; for a Slurm kernelspec the ``slurm`` step asks Slurm
itself (``srun --test-only``) whether it takes the kernelspec's options.  The agent, link and
engine steps are the phases of the real launch path (``provisioning.launch.open_session``)
with their times, then the checks only the doctor makes: an evaluation, the round trip and
the throughput.  Steps after a failure are skipped; for the local transport the network steps
do not apply.

Then the engine checks (``ENGINE_CHECKS``; left out with ``quick``): the engine used as a user
uses it, with cells that once went wrong on a real Wolfram kernel (Input[], a package loaded
in a cell, an uncaught Throw, repeated messages, an interrupt, graphics, Print).  They use only
Wolfram Language that Mathics3 and a Wolfram kernel both accept, each cell has a time limit,
and they are independent of each other: a failed check reports what it sent and what came
back, and the next check still runs (after what the failed one left running has ended).

The doctor never touches what running kernels use: it opens its own SSH connections (a
connection pool of its own, not the shared one) and starts its own agent, and ends both
before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import os
import queue
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import paramiko

from . import kernelspec
from .agent.engines.slurm import COMMANDS as SLURM_COMMANDS
from .agent.engines.slurm import parse_options
from .client import AgentClient, Collected, EvaluationError, run
from .client.environment import BY_KERNEL, BY_PROVISIONER, VARIABLES
from .client.evaluate import ABORTED_CODE, INTERRUPT_TIMEOUT, TIMEOUT, Evaluator
from .errors import RKError
from .link.connection import Link
from .link.frames import LinkTimeout
from .link.launcher import ENGINE_START_WAIT, LINK_TIMEOUT
from .link.packets import packet, packet_name
from .provisioning.diagnosis import PY_PROBE, check_probe, python_cannot_run
from .provisioning.errors import SettingsError, TransportError, readable
from .provisioning.launch import LaunchedSession, LaunchObserver, Phase, open_session
from .provisioning.settings import LaunchSettings
from .provisioning.ssh import backend, openssh
from .provisioning.ssh.connect import (
    SSHConnection,
    authenticate,
    connect,
    resolve,
    start_transport,
    tcp_connect,
    tunnel,
)
from .provisioning.ssh.deploy import agent_zipapp
from .provisioning.ssh.hostkeys import fingerprint
from .provisioning.ssh.pool import ConnectionPool
from .provisioning.ssh.remote_agent import check_login, check_python
from .provisioning.ssh.target import SSHTarget
from .provisioning.transports import Transport

T = TypeVar("T")

PASS, FAIL, SKIPPED, NA = "pass", "fail", "skipped", "n/a"
MARKS = {PASS: "✓", FAIL: "✗", SKIPPED: "-", NA: "·"}
EVAL_TIMEOUT = 30.0
PINGS = 5
PING_TIMEOUT = 10.0
ECHO_SIZES = (64 << 10, 1 << 20, 4 << 20)  # random, so the codec cannot shrink them
ECHO_LONG_ENOUGH = 0.5  # seconds: a transfer this long measures the link, not the overhead
ECHO_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
#: The engine checks, in the order they run (``Checkup.engine_checks``).
ENGINE_CHECKS = ("input", "package", "throw", "messages", "interrupt", "graphics", "print")
CHECK_TIMEOUT = 15.0  # seconds for one cell of an engine check
GRAPHICS_TIMEOUT = 90.0  # a first plot may wait for a front end (RKJupyter.wl gives it 60 s)
SETTLE_TIMEOUT = 35.0  # for a cell a failed check left running (Pause[30]) to end
INTERRUPT_AFTER = 1.0  # seconds into Pause[30] when the interrupt is sent
INTERRUPT_LIMIT = 2.0  # seconds from the interrupt to the end of the evaluation
REDRAW_LIMIT = 1.0  # seconds for a plot after one that was not drawn
SHOWN = 300  # characters of a sent cell or of a result shown in a failure
REPORT = ("if the same cell works in the engine by hand on its host, report it with the "
          "output of rk-jupyter doctor NAME --json")
# What to do when a failure names no fix of its own (a timeout, mostly).
HINTS = {
    "engine": "check the engine on the host: Mathics3 (pip install Mathics3) or the Wolfram "
              "kernel (engine option kernel_path)",
    "round trip": "the link is up but does not answer: check the network between the hosts",
    "throughput": "the link is up but slow: check the network's bandwidth between the hosts",
}


class Failed(RKError):
    """A check only the doctor makes failed: ``cause`` says what happened, ``fix`` what to
    do.  (A failure of what a kernel start does raises that code's own error instead.)"""

    code = "doctor.failed"


class NotApplicable(Exception):
    """The step has no meaning for this kernelspec (a network step of the local transport)."""


class _PhaseFailed(Exception):
    """The launch failed at this step's phase."""

    def __init__(self, phase: Phase) -> None:
        super().__init__(phase.name)
        self.phase = phase


@dataclass
class Step:
    """One line of the report; ``code`` is the failure's error code."""

    step: str
    status: str
    seconds: float | None = None
    detail: str = ""
    fix: str = ""
    code: str = ""

    @property
    def ok(self) -> bool | None:
        """True passed, False failed, None not run (skipped, or not applicable)."""
        return {PASS: True, FAIL: False}.get(self.status)

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "ok": self.ok, "status": self.status,
                "seconds": None if self.seconds is None else round(self.seconds, 3),
                "detail": self.detail, "fix": self.fix, "code": self.code}


def passed(steps: list[Step]) -> bool:
    """Every step passed or did not apply: the exit status 0 of the CLI."""
    return all(step.status in (PASS, NA) for step in steps)


def _bounded(work: Callable[[], T], timeout: float) -> T:
    """``work()`` on a daemon thread, for calls that take no timeout themselves
    (asyncio.run in a thread that may already run a loop); TimeoutError if it is not done
    within ``timeout`` seconds."""
    box: queue.Queue[tuple[bool, Any]] = queue.Queue(1)

    def run() -> None:
        try:
            box.put((True, work()))
        except BaseException as exc:  # handed to the caller
            box.put((False, exc))

    threading.Thread(target=run, name="rk-doctor-bounded", daemon=True).start()
    try:
        done, value = box.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError from None
    if not done:
        raise value
    return value


def _shown(text: str, limit: int = SHOWN) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _wl_string(text: str) -> str:
    """``text`` as a Wolfram Language string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@dataclass
class _Exchange:
    """One cell of an engine check: what was sent and what came back."""

    code: str
    answers: tuple[str, ...]
    out: Collected
    seconds: float = 0.0
    error: RKError | None = None

    @property
    def text(self) -> str | None:
        return self.out.text

    def told(self) -> str:
        """Sent and received, for a failure's detail."""
        sent = f"sent {_shown(self.code)!r}"
        if self.answers:
            sent += f" (answering Input with {list(self.answers)!r})"
        out, came = self.out, []
        if out.prompts:
            came.append(f"prompts {out.prompts!r}")
        if out.prints:
            came.append(f"prints {[_shown(p) for p in out.prints]!r}")
        if out.messages:
            came.append(f"messages {[_shown(m) for m in out.messages]!r}")
        for bundle in out.results:
            others = [f"{key} ({_amount(len(value))})" for key, value in bundle.items()
                      if key not in ("text/plain", "text/latex")]
            came.append(f"result {_shown(bundle.get('text/plain', ''))!r}"
                        + (f" with {', '.join(others)}" if others else ""))
        if self.error is not None and self.error.code not in (TIMEOUT, INTERRUPT_TIMEOUT):
            came.append(f"{self.error.code}: {self.error.cause}")
        return (f"{sent}; came back {'; '.join(came) if came else 'nothing'} in "
                f"{self.seconds:.2f} s")


class _Recorder(LaunchObserver):
    """Keeps the launch's phases (and its transport, to stop it whatever happens);
    ``describe`` rewrites a passed phase's detail while what it made still runs."""

    def __init__(self, describe: Callable[[Phase, Transport], str]) -> None:
        self.describe = describe
        self.phases: dict[str, Phase] = {}
        self.transport: Transport | None = None

    def begin(self, name: str, transport: Transport, detail: str) -> None:
        self.transport = transport

    def end(self, phase: Phase) -> None:
        if phase.ok and self.transport is not None:
            try:
                phase = replace(phase, detail=self.describe(phase, self.transport))
            except Exception:  # a description is not worth failing the launch for
                pass
        self.phases[phase.name] = phase


#: Who launches a kernelspec's engine, as the kernelspec step says it.
SELF_LAUNCH = ("launched by the provisioner (JupyterLab, Notebook) or by the kernel itself "
               "(VS Code, Positron)")
NO_SELF_LAUNCH = ("launched by the provisioner only: its argv lacks --rk-kernelspec (made "
                  "before rk_jupyter 0.4), so VS Code and Positron cannot start it; run "
                  "rk-jupyter add for it again")
#: The same for a running kernel (``%rkernel doctor`` passes RK_LAUNCHED_BY on).
LAUNCHED_BY = {BY_PROVISIONER: "this kernel was launched by the provisioner",
               BY_KERNEL: "this kernel launched its engine itself (a client that ignores "
                          "provisioners)"}


class Checkup:
    """One run of the doctor on a kernelspec (``name``) or on launch settings (``settings``:
    a LaunchSettings, or its plain form as a kernel's RK_SETTINGS hold it, checked in the
    kernelspec step); ``run`` does every step and cleans up.  ``quick`` leaves the engine
    checks out (their steps are absent from the report)."""

    def __init__(self, name: str = "",
                 settings: LaunchSettings | Mapping[str, Any] | str | None = None,
                 quick: bool = False) -> None:
        self.name = name
        self.given = settings
        self.quick = quick
        self.settings: LaunchSettings | None = None
        self.token = secrets.token_urlsafe(32).encode()
        self.kernel_id = f"doctor-{os.getpid()}-{secrets.token_hex(4)}"
        self.target: SSHTarget | None = None
        self.jump: SSHConnection | None = None
        self.sock: Any = None
        self.transport: paramiko.Transport | None = None
        self.connection: backend.Connection | None = None
        self.login_error: TransportError | None = None  # OpenSSH: found by reach, told later
        self.pool = ConnectionPool()  # the doctor's own: a running kernel's is not touched
        self.launch = _Recorder(self._describe)
        self._launcher = ""  # who launches the engine, told in the kernelspec step
        self.launched: LaunchedSession | None = None
        self.address: tuple[str, int] = ("", 0)
        self.client: AgentClient | None = None
        self.tmp = ""
        self._ids = itertools.count(1)
        self.evaluator: Evaluator | None = None  # the engine checks' cells, in order
        self._running = ""  # what a failed engine check left running: its check and cell
        self._now = self._hung = ""  # the engine check that runs; the last that hung
        self._stuck = False  # what it left running did not end when the next one waited

    def run(self, report: Callable[[Step], None] | None = None) -> list[Step]:
        """Every step in order (``report`` sees each as it ends); never raises for a failure.
        A failed step skips the steps after it, up to the engine checks, which are skipped
        when any step before them failed but do not skip each other."""
        checks: list[tuple[str, Callable[[], str | Phase]]] = [
            ("kernelspec", self._kernelspec), ("resolve", self._resolve),
            ("reach", self._reach), ("host key", self._host_key), ("auth", self._auth),
            ("remote shell", self._shell), ("python", self._python), ("slurm", self._slurm),
            ("agent", self._agent),
            ("link", self._link), ("engine", self._engine), ("round trip", self._round_trip),
            ("throughput", self._throughput),
        ]
        steps: list[Step] = []
        self.tmp = tempfile.mkdtemp(prefix="rk-doctor-")
        try:
            for name, check in checks:
                if steps and steps[-1].status in (FAIL, SKIPPED):
                    step = Step(name, SKIPPED, detail="an earlier step failed")
                else:
                    step = self._check(name, check)
                steps.append(step)
                if report:
                    report(step)
            if not self.quick:
                if passed(steps):
                    steps += self.engine_checks(report)
                else:
                    for name in ENGINE_CHECKS:
                        steps.append(Step(name, SKIPPED, detail="an earlier step failed"))
                        if report:
                            report(steps[-1])
        finally:
            self.close()
        return steps

    def engine_checks(self, report: Callable[[Step], None] | None = None) -> list[Step]:
        """The engine checks on ``self.client``'s session, each whatever the others gave."""
        checks: dict[str, Callable[[], str]] = {
            "input": self._input, "package": self._package, "throw": self._throw,
            "messages": self._messages, "interrupt": self._interrupt,
            "graphics": self._graphics, "print": self._print,
        }
        steps = []
        for name in ENGINE_CHECKS:
            steps.append(self._check(name, lambda name=name: self._engine_check(
                name, checks[name])))
            if report:
                report(steps[-1])
        return steps

    def _check(self, name: str, check: Callable[[], str | Phase]) -> Step:
        started = time.monotonic()
        try:
            found = check()
        except NotApplicable as exc:
            return Step(name, NA, detail=str(exc))
        except _PhaseFailed as exc:
            error: RKError = exc.phase.error or Failed(f"the launch failed at {name}")
            seconds = exc.phase.seconds
        except RKError as exc:  # the same error a kernel start gives, with its code
            error, seconds = exc, time.monotonic() - started
        except OSError as exc:  # LinkError is an OSError
            error = RKError(str(exc) or type(exc).__name__, code="doctor.os-error")
            seconds = time.monotonic() - started
        except Exception as exc:  # a doctor reports what it did not foresee, too
            error = RKError(f"unexpected {type(exc).__name__}: {exc}", code="doctor.unexpected")
            seconds = time.monotonic() - started
        else:
            if isinstance(found, Phase):
                return Step(name, PASS, found.seconds, found.detail)
            return Step(name, PASS, time.monotonic() - started, found)
        return Step(name, FAIL, seconds, error.cause, error.fix or HINTS.get(name, ""),
                    error.code)

    def close(self) -> None:
        """End what the run made, newest first: session, agent (and its connection), the
        diagnosis connection."""
        cleanups: list[Callable[[], Any]] = []
        if self.client:
            cleanups.append(self.client.close)
        transport = self.launch.transport
        if transport is not None:
            cleanups.append(lambda: _bounded(lambda: asyncio.run(transport.stop()),
                                             STOP_TIMEOUT))
        cleanups.append(self.pool.shutdown)
        for closable in (self.connection, self.transport, self.sock, self.jump):
            if closable is not None:
                cleanups.append(closable.close)
        cleanups.append(lambda: shutil.rmtree(self.tmp, ignore_errors=True))
        for cleanup in cleanups:
            with contextlib.suppress(Exception):  # best effort: end everything else still
                cleanup()
        self.client = self.launched = None
        self.launch.transport = None
        self.connection = self.transport = self.sock = self.jump = None

    # -- settings --------------------------------------------------------------------------

    @property
    def _s(self) -> LaunchSettings:
        assert self.settings is not None  # the kernelspec step passed
        return self.settings

    def _ssh(self) -> LaunchSettings:
        """The settings of an ssh kernelspec; NotApplicable for a local one."""
        if self._s.transport != "ssh":
            raise NotApplicable("the agent runs on this machine (transport local)")
        return self._s

    # -- the steps before the launch: each returns what it found, or raises ----------------

    def _kernelspec(self) -> str:
        label = self.name or "this kernel"
        # A running kernel's doctor (``%rkernel doctor``) is told who launched it.
        self._launcher = LAUNCHED_BY.get(os.environ.get(VARIABLES["launched_by"], ""), "")
        given = self.given
        if isinstance(given, LaunchSettings):
            self.settings = given
        elif isinstance(given, str):  # the caller could not even read them
            raise Failed(given, "run %rkernel doctor NAME to check kernelspec rk-NAME",
                         code="settings.not-json")
        elif given is not None:
            try:
                self.settings = LaunchSettings.from_config(given)
            except SettingsError as exc:
                raise Failed(f"{label}'s launch settings are invalid: {exc.cause}", exc.fix,
                             code=exc.code) from None
        else:
            rows = kernelspec.installed()
            row = next((r for r in rows if self.name in (r["name"], r["kernelspec"])), None)
            if row is None:
                available = ", ".join(r["kernelspec"] for r in rows) or "none"
                raise Failed(f"no rk- kernelspec named {self.name!r}",
                             f"rk-jupyter list shows the installed ones (here: {available}); "
                             "add one with rk-jupyter add NAME --local, or --host "
                             "[user@]host[:port]", code="doctor.no-kernelspec")
            label = row["kernelspec"]
            self._launcher = SELF_LAUNCH if row["self_launch"] else NO_SELF_LAUNCH
            try:
                self.settings = LaunchSettings.from_config(row["config"])
            except SettingsError as exc:
                raise Failed(f"{label} has an invalid provisioner config: {exc.cause}",
                             f"{exc.fix}; correct "
                             f"{os.path.join(row['resource_dir'], 'kernel.json')}, or install "
                             "it again with rk-jupyter add", code=exc.code) from None
        s = self._s
        found = (f"{label}: transport {s.transport}{s.where()}, engine {s.engine}, "
                 f"compression {s.compression}")
        if self._launcher:
            found += f"; {self._launcher}"
        if s.transport == "ssh":
            client = backend.choose(s.ssh_client)
            found += f"; SSH client {client} (ssh_client {s.ssh_client})"
            if client == "paramiko":
                found += (". paramiko ignores of ssh_config: " + ", ".join(backend.IGNORED)
                          + " (ssh_client 'openssh' honours them)")
        return found

    def _resolve(self) -> str:
        s = self._ssh()
        self.target = target = backend.resolve(s)
        if target.via:
            how = "ssh -G" if target.backend == "openssh" else "ssh_config"
            return (f"{target.alias} is {target} ({how}); {target.via.split(' ', 1)[0]} "
                    f"reaches {target.hostname}, so its name is resolved on the way")
        first = (*target.jumps, target)[0]
        infos = resolve(first, s.connect_timeout)
        addresses = ", ".join(dict.fromkeys(info[4][0] for info in infos))
        detail = f"{first.hostname} is {addresses}"
        if target.alias != target.hostname:
            how = "ssh -G" if target.backend == "openssh" else "ssh_config"
            detail = f"{target.alias} is {target} ({how}); {detail}"
        if target.jumps:
            detail += f"; the jump host resolves {target.hostname}"
        return detail

    def _reach(self) -> str:
        s, target = self._ssh(), self.target
        assert target is not None
        if target.backend == "openssh":
            return self._login_openssh()
        if target.jumps:
            chain = replace(target.jumps[-1], jumps=target.jumps[:-1])
            self.jump = connect(chain, s.host_key_policy, s.connect_timeout, 0)
            self.sock = tunnel(self.jump, target, s.connect_timeout)
            return f"{target.hostname}:{target.port} answers through {self.jump.target}"
        self.sock = tcp_connect(target, s.connect_timeout)
        return f"{target.hostname}:{target.port} accepts TCP connections"

    def _login_openssh(self) -> str:
        """OpenSSH logs in in one go: the doctor runs it at the reach step, fails there for
        what means "not reached" and keeps a host-key or login refusal for its own step."""
        s, target = self._ssh(), self.target
        assert target is not None
        try:
            self.connection = openssh.connect(target, s.host_key_policy, s.connect_timeout, 0)
        except TransportError as exc:
            if not exc.code.startswith(("ssh.host-key", "ssh.auth")):
                raise
            self.login_error = exc
        where = f"{target.hostname}:{target.port}"
        if target.via.startswith("ProxyJump "):
            return f"{where} answers through {target.via.split(' ', 1)[1]}"
        if target.via:
            return f"{where} answers through its ProxyCommand"
        return f"{where} answers (OpenSSH)"

    def _host_key(self) -> str:
        s, target = self._ssh(), self.target
        assert target is not None
        if target.backend == "openssh":
            if self.login_error and self.login_error.code.startswith("ssh.host-key"):
                raise self.login_error
            strict = "accept-new" if s.host_key_policy == "accept-new" else "yes"
            return (f"OpenSSH trusts the host key of {target.known_hosts_name} "
                    f"(StrictHostKeyChecking={strict})")
        self.transport = start_transport(target, self.sock, s.host_key_policy,
                                         s.connect_timeout)
        key = self.transport.get_remote_server_key()
        return (f"{target.known_hosts_name} offered {key.get_name()} {fingerprint(key)}: "
                f"trusted (host_key_policy {s.host_key_policy})")

    def _auth(self) -> str:
        self._ssh()
        assert self.target is not None
        if self.target.backend == "openssh":
            if self.login_error:
                raise self.login_error
            assert self.connection is not None
            return f"logged in as {self.target.user} ({self.connection.description})"
        assert self.transport is not None
        label = authenticate(self.transport, self.target)
        self.connection = SSHConnection(self.target, self.transport,
                                        [self.jump] if self.jump else [], keepalive=0)
        return f"logged in as {self.target.user} with {label}"

    def _shell(self) -> str:
        s = self._ssh()
        assert self.connection is not None
        return check_login(self.connection, s.command_timeout)

    def _python(self) -> str:
        s = self._s
        if s.transport != "ssh":
            python = s.python or sys.executable
            try:
                done = subprocess.run([python, "-c", PY_PROBE], capture_output=True,
                                      text=True, timeout=s.command_timeout)
            except subprocess.TimeoutExpired:
                raise Failed(f"the Python {python!r} of the local agent did not answer "
                             f"within {s.command_timeout:g} s (command_timeout)",
                             "set python in the kernelspec to a working interpreter, or "
                             "leave it empty for Jupyter's own",
                             code="agent.python-unusable") from None
            except OSError as exc:
                raise python_cannot_run(python, exc) from None
            return check_probe(python, "this machine", done.returncode, done.stdout, "python")
        assert self.connection is not None
        return check_python(self.connection, s.remote_python, s.command_timeout)

    def _slurm(self) -> str:
        """A Slurm kernelspec: the Slurm commands are on the login shell's PATH (the agent's,
        which runs srun) and ``srun --test-only`` takes the kernelspec's options (partition,
        time, memory, account…), so a refused option shows here, with Slurm's own words,
        not as a failed kernel start; says when and where such a job would start."""
        s = self._s
        if not s.slurm:
            raise NotApplicable("the kernelspec asks for no Slurm job (slurm)")
        assert self.connection is not None  # slurm is an ssh-only key
        host = self.connection.target.hostname
        words = parse_options(s.slurm)  # a SlurmError (slurm.options) fails the step
        status, out = self.connection.run(
            f"command -v {' '.join(SLURM_COMMANDS)}", s.command_timeout)
        missing = [name for name in SLURM_COMMANDS if f"/{name}" not in out]
        if status != 0 or missing:
            raise Failed(f"{' and '.join(missing)} not on the PATH of {host}'s login shell, "
                         "which starts the agent that runs them",
                         "use the cluster's login node as the host, or add Slurm's bin "
                         "directory to PATH in the login shell's startup files (~/.bashrc, "
                         "above any line that returns for non-interactive shells)",
                         code="slurm.no-srun")
        test = ["srun", "--test-only", *words, "--ntasks=1", "--nodes=1", "true"]
        status, out = self.connection.run(shlex.join(test), s.command_timeout)
        said = " ".join(line.removeprefix("srun: ").strip() for line in out.splitlines()
                        if line.strip())
        if status != 0:
            raise Failed(f"Slurm refuses the kernelspec's slurm options {s.slurm!r}: "
                         f"{_shown(said) or f'srun --test-only exited {status}'}",
                         "correct the options (rk-jupyter add NAME --host HOST "
                         "--slurm=\"OPTIONS\" rewrites them); sinfo on the login node lists "
                         "the partitions and their limits", code="slurm.rejected")
        return f"srun --test-only takes the options: {_shown(said)}"

    # -- the launch path's phases, then the doctor's own checks ------------------------------

    def _agent(self) -> Phase:
        """Run the real launch (agent, link, engine) and report its agent phase; the next two
        steps report the other two."""
        s = self._s
        bound = (s.agent_start_timeout + 4 * s.connect_timeout + s.command_timeout
                 + LINK_TIMEOUT + ENGINE_START_WAIT)
        log_path = os.path.join(self.tmp, "agent.log")
        try:
            self.launched = _bounded(lambda: asyncio.run(open_session(
                s, self.kernel_id, self.token, log_path, self.launch, pool=self.pool)), bound)
        except RKError:
            pass  # recorded as the failing phase's error
        except TimeoutError:
            raise Failed(f"the launch did not finish within {bound:g} s",
                         code="doctor.launch-timeout") from None
        if self.launched is not None:
            self.client = self.launched.client
            self.token = self.launched.token
            self.address = (self.launched.agent.host, self.launched.agent.port)
        return self._phase("agent")

    def _phase(self, name: str) -> Phase:
        phase = self.launch.phases.get(name)
        if phase is None:
            raise Failed(f"the launch ended before its {name} phase",
                         code="doctor.launch-incomplete")
        if phase.error is not None:
            raise _PhaseFailed(phase)
        return phase

    def _describe(self, phase: Phase, transport: Transport) -> str:
        """The agent phase told as the doctor tells it: how the agent got there (copied now,
        the cached copy, or an installed rk_jupyter) and what runs it."""
        if phase.name != "agent":
            return phase.detail
        lease = getattr(transport, "lease", None)
        if lease is None:
            return f"started {self._s.python or sys.executable} -m rk_jupyter.agent: " \
                   f"{phase.detail}"
        agent, app = lease.agent, agent_zipapp()
        if agent.deployed:
            how = f"copied the agent ({len(app.data) >> 10} KiB) to ~/{app.remote_path} over SFTP"
        else:
            status, command = lease.shared.connection.run(f"ps -o args= -p {agent.pid}",
                                                          self._s.command_timeout)
            how = ("runs the copy cached in ~/" + app.remote_path
                   if status == 0 and "agent.pyz" in command else
                   "runs the installed rk_jupyter"
                   if status == 0 and "rk_jupyter.agent" in command else "started")
        ready = agent.ready
        return (f"{how}; agent pid {agent.pid} (rk_jupyter {ready.get('version')}, Python "
                f"{ready.get('python')}) listens on remote 127.0.0.1:{agent.port}")

    def _link(self) -> Phase:
        return self._phase("link")

    def _engine(self) -> Phase:
        phase = self._phase("engine")
        assert self.launched is not None
        started = time.monotonic()
        answer = self._evaluate("1+1")
        if answer != "2":
            raise Failed(f"the engine answered 1+1 with {answer!r}",
                         "the engine runs but does not compute: see its messages above, and "
                         "the engine's installation on the host", code="doctor.wrong-answer")
        info = self.launched.info
        return replace(phase, seconds=phase.seconds + time.monotonic() - started,
                       detail=f"{info.get('name')} {info.get('version')} started; 1+1 = 2")

    def _evaluate(self, code: str) -> str | None:
        """The text/plain result of one input, as a notebook cell would show it (its messages
        when it has none)."""
        assert self.client is not None
        out = Collected()
        try:
            run(self.client, code, out, timeout=EVAL_TIMEOUT)
        except EvaluationError as exc:
            if exc.code == TIMEOUT:
                raise Failed(f"the engine did not answer {code} within {EVAL_TIMEOUT:g} s",
                              "the engine started but hangs: look at its process on the "
                              "host", code="doctor.engine-hangs") from None
        result = out.text
        return result if result is not None or not out.messages else "; ".join(out.messages)

    def _round_trip(self) -> str:
        assert self.client is not None
        rtts = [self.client.ping(PING_TIMEOUT) * 1000 for _ in range(PINGS)]
        return (f"{PINGS} pings: min {min(rtts):.2f} ms, avg {sum(rtts) / PINGS:.2f} ms, "
                f"max {max(rtts):.2f} ms")

    def _throughput(self) -> str:
        """Random bytes to the agent and back on a link of its own, in growing sizes until
        one transfer takes long enough to measure (or the largest is done)."""
        link = Link.connect(*self.address, self.token, self._s.compression,
                            timeout=LINK_TIMEOUT)
        try:
            for size in ECHO_SIZES:
                before = link.stats.sent.wire_bytes + link.stats.received.wire_bytes
                seconds = self._echo(link, os.urandom(size))
                wire = link.stats.sent.wire_bytes + link.stats.received.wire_bytes - before
                if seconds >= ECHO_LONG_ENOUGH:
                    break
        finally:
            link.close()
        return (f"{_amount(size)} to the agent and back in {seconds:.3f} s: "
                f"{2 * size / seconds / 1e6:.1f} MB/s ({wire / 2**20:.1f} MiB on the wire)")

    def _echo(self, link: Link, payload: bytes) -> float:
        """Seconds for ``payload`` to go to the agent and back (it echoes RKPing's data)."""
        ident = next(self._ids)
        started = time.monotonic()
        link.send(0, packet("RKPing", ident, payload))
        try:
            while True:
                remaining = started + ECHO_TIMEOUT - time.monotonic()
                channel, expr = link.recv(timeout=max(remaining, 0.0))
                if channel == 0 and packet_name(expr) == "RKPong" and expr.args[:1] == (ident,):
                    break
        except LinkTimeout:
            raise Failed(f"{_amount(len(payload))} did not come back within "
                         f"{ECHO_TIMEOUT:g} s", code="doctor.echo-timeout") from None
        if expr.args[1:] != (payload,):
            raise Failed("the agent answered the echo without its data",
                         "the agent is another rk_jupyter version: let it be deployed again "
                         "(agent_deploy 'zipapp')", code="doctor.echo-corrupt")
        return time.monotonic() - started

    # -- the engine checks: a user's cells, each of which once went wrong on a real kernel --

    def _engine_check(self, name: str, check: Callable[[], str]) -> str:
        """Run ``check`` once what an earlier check left running has ended."""
        assert self.client is not None  # the steps before passed
        if self.evaluator is None:
            self.evaluator = Evaluator(self.client)
        if self.evaluator.owed:
            wait = 0.0 if self._stuck else SETTLE_TIMEOUT  # waited for once is enough
            if not self.evaluator.settle(wait):
                self._stuck = True
                raise Failed(f"not run: the engine still evaluates {self._running}"
                             + (f"; waited {wait:g} s more for it" if wait else ""),
                             f"see the {self._hung} check above: the engine hangs on its "
                             "cell", code="doctor.engine-busy")
        self._running, self._stuck = "", False
        self._now = name
        return check()

    def _send(self, code: str, answers: tuple[str, ...] = (), timeout: float | None = None,
              late: str = "") -> _Exchange:
        """One cell of the current check, as a notebook sends it (``answers`` go to
        Input[]).  A cell that does not end within ``timeout`` s (CHECK_TIMEOUT) fails the
        check (``late`` says why that matters) and is left running; a lost session fails it
        too."""
        assert self.evaluator is not None
        timeout = CHECK_TIMEOUT if timeout is None else timeout
        out = Collected(answers=list(answers))
        exchange = _Exchange(code, answers, out)
        started = time.monotonic()
        try:
            self.evaluator.run(code, out, timeout=timeout)
        except EvaluationError as exc:
            exchange.error = exc
        except RKError as exc:  # the session is lost, or the agent refused the request
            exchange.seconds = time.monotonic() - started
            raise Failed(f"{exchange.told()}; then {exc.cause}", exc.fix or REPORT,
                         code=exc.code) from None
        exchange.seconds = time.monotonic() - started
        if exchange.error is not None and exchange.error.code in (TIMEOUT, INTERRUPT_TIMEOUT):
            self._running = f"{_shown(code)!r} (sent by the {self._now} check)"
            self._hung = self._now
            raise Failed(f"{exchange.told()}; it did not end within {timeout:g} s"
                         + (f": {late}" if late else ""),
                         "the engine hangs on this cell; " + REPORT,
                         code="doctor.engine-hangs")
        return exchange

    def _wrong(self, exchange: _Exchange, expected: str, fix: str) -> Failed:
        return Failed(f"{exchange.told()}; expected {expected}", f"{fix}; {REPORT}",
                      code="doctor.engine-check")

    def _input(self) -> str:
        """Input[]'s answer is Wolfram Language, not a string ("41"^2 was the bug)."""
        cell = self._send('Input["n? "]^2', answers=("41",))
        if cell.text != "1681" or cell.out.prompts != ["n? "] or cell.error:
            raise self._wrong(cell, "the prompt 'n? ' and the result 1681",
                              "Input[] must show its prompt and evaluate the answer as input")
        return "Input[\"n? \"]^2 answered 41: prompt 'n? ', result 1681"

    def _package(self) -> str:
        """A package file written on the engine's host, loaded and used in one cell: its
        symbols must be found there, not shadowed by Global` ones the cell made first."""
        text = "\n".join([
            'BeginPackage["RKDoctorPkg`"];',
            'rkDoctorSquare::usage = "rkDoctorSquare[x] is x^2 + 1 (rk-jupyter doctor).";',
            'Begin["`Private`"];',
            "rkDoctorSquare[x_] := x^2 + 1;",
            "End[];",
            "EndPackage[];", ""])
        name = f"rk-doctor-\" <> ToString[$ProcessID] <> \"-{secrets.token_hex(4)}.wl"
        write = self._send(
            f'rkDoctorFile = FileNameJoin[{{$TemporaryDirectory, "{name}"}}]; '
            "rkDoctorStream = OpenWrite[rkDoctorFile]; "
            f"WriteString[rkDoctorStream, {_wl_string(text)}]; Close[rkDoctorStream]")
        try:
            if write.error or write.out.messages or not write.text:
                raise self._wrong(write, "the package file's name (Close's result) and no "
                                  "message", "the engine must write a file in "
                                  "$TemporaryDirectory on its host")
            use = self._send("Get[rkDoctorFile]\nrkDoctorSquare[3]")
            shadowed = [m for m in use.out.messages if "::shdw" in m]
            if use.text != "10" or shadowed or use.error:
                raise self._wrong(use, "the result 10 and no ::shdw message",
                                  "a cell must be evaluated line by line, so that a package "
                                  "loaded on one line defines the symbols of the next")
        finally:
            deleted = "left it"
            if self.evaluator is not None and not self.evaluator.owed:
                with contextlib.suppress(Exception):  # best effort: a file in the temp dir
                    gone = self._send("Quiet[DeleteFile[rkDoctorFile]]; "
                                      "FileExistsQ[rkDoctorFile]", timeout=5.0)
                    deleted = "deleted it" if gone.text == "False" else deleted
        return (f"wrote {write.text} on the engine's host; Get of it and rkDoctorSquare[3] "
                f"in one cell: 10, no ::shdw; {deleted}")

    def _throw(self) -> str:
        """An uncaught Throw of a bignum may give anything but must cost neither the
        session nor the engine (a later cell sees what an earlier one defined)."""
        assert self.client is not None
        restarts = self.client.engine_restarts
        before = self._send("rkDoctorThrown = 70")
        thrown = self._send("Throw[2^70]")
        if thrown.error is not None:
            raise self._wrong(thrown, "any answer but the end of the engine",
                              "an uncaught Throw must not end the engine")
        after = self._send("{1+1, rkDoctorThrown}")
        if after.text != "{2, 70}" or self.client.engine_restarts != restarts or after.error:
            raise self._wrong(after, f"{{2, 70}}, from the same engine (after "
                              f"{before.told()} and {thrown.told()})",
                              "an uncaught Throw must leave the engine and its definitions")
        shown = thrown.text or "; ".join(thrown.out.messages) or "Null"
        return f"Throw[2^70] gave {_shown(shown, 80)!r}; then 1+1 = 2 on the same engine"

    def _messages(self) -> str:
        """A message repeated in later cells is shown in each (General::stop counts a
        message once per cell, not per session)."""
        for n in range(1, 5):
            cell = self._send("1/0")
            infy = any(m.startswith("Power::infy") for m in cell.out.messages)
            if not infy or any("General::stop" in m for m in cell.out.messages):
                raise self._wrong(cell, f"the message Power::infy in cell {n} of 4",
                                  "each cell must show its own messages (General::stop "
                                  "counts them per cell)")
        return "1/0 in 4 cells: Power::infy in each"

    def _interrupt(self) -> str:
        """An interrupt stops a running cell within INTERRUPT_LIMIT s, and keeps the
        session's definitions."""
        assert self.client is not None
        client = self.client
        self._send("rkDoctorKept = 7")
        lock = threading.Lock()
        times: dict[str, float] = {}
        errors: list[Exception] = []

        def interrupt() -> None:
            with lock:
                if "ended" in times:
                    return
                times["sent"] = time.monotonic()
            try:
                client.interrupt()
            except Exception as exc:  # reported below
                errors.append(exc)

        timer = threading.Timer(INTERRUPT_AFTER, interrupt)
        timer.daemon = True
        timer.start()
        try:
            paused = self._send("Pause[30]", timeout=INTERRUPT_AFTER + INTERRUPT_LIMIT + 1.0,
                                late=f"it did not stop within {INTERRUPT_LIMIT + 1.0:g} s "
                                     f"of the interrupt sent after {INTERRUPT_AFTER:g} s")
        finally:
            with lock:
                times["ended"] = time.monotonic()
            timer.cancel()
        fix = "the engine must stop a cell on an interrupt (Kernel > Interrupt)"
        if errors:
            raise self._wrong(paused, f"the interrupt to be sent (it failed: {errors[0]})", fix)
        if "sent" not in times:
            raise self._wrong(paused, f"Pause[30] to run until the interrupt after "
                              f"{INTERRUPT_AFTER:g} s", fix)
        took = times["ended"] - times["sent"]
        if paused.error is None or paused.error.code != ABORTED_CODE:
            raise self._wrong(paused, "the evaluation to be aborted", fix)
        if took > INTERRUPT_LIMIT:
            raise self._wrong(paused, f"the abort within {INTERRUPT_LIMIT:g} s of the "
                              f"interrupt (it took {took:.2f} s)", fix)
        kept = self._send("rkDoctorKept")
        if kept.text != "7" or kept.error:
            raise self._wrong(kept, "7, set before the interrupt",
                              "an interrupt must abort the cell, not reset the session")
        return (f"Pause[30] interrupted after {INTERRUPT_AFTER:g} s: aborted {took:.2f} s "
                "after the interrupt; rkDoctorKept is still 7")

    def _graphics(self) -> str:
        """A plot comes as a picture, or as text that says why it was not drawn; when not
        drawn, the next plot does not wait for a front end again."""
        shown = []
        first: str | None = None
        for n in (1, 2):
            cell = self._send("Plot[x, {x, 0, 1}]", timeout=GRAPHICS_TIMEOUT,
                              late="no answer, not even the note that it was not drawn")
            bundle = cell.out.results[-1] if cell.out.results else {}
            kind = ("SVG" if "image/svg+xml" in bundle else "PNG" if "image/png" in bundle
                    else "text (not drawn)" if "not drawn" in bundle.get("text/plain", "")
                    else None)
            if kind is None or cell.error:
                raise self._wrong(cell, "a result with image/svg+xml or image/png, or text "
                                  "that says why it was not drawn",
                                  "graphics need a Wolfram front end on the engine's host "
                                  "(see docs/wolfram-engine.md, First steps on your host)")
            if n == 2 and first == "text (not drawn)" and cell.seconds > REDRAW_LIMIT:
                raise self._wrong(cell, f"the second plot within {REDRAW_LIMIT:g} s, as the "
                                  f"first was not drawn (it took {cell.seconds:.2f} s)",
                                  "after a plot that could not be drawn, the engine must not "
                                  "wait for a front end again")
            first = first or kind
            size = max((len(v) for k, v in bundle.items() if k.startswith("image/")),
                       default=0)
            shown.append(f"{kind}{f' ({_amount(size)})' if size else ''} in "
                         f"{cell.seconds:.2f} s")
        return "Plot[x, {x, 0, 1}] twice: " + ", then ".join(shown)

    def _print(self) -> str:
        """Print[1/3] is one print output of one line (not 1, -, 3 on three lines)."""
        cell = self._send("Print[1/3]")
        if len(cell.out.prints) != 1 or "\n" in cell.out.prints[0] or cell.error:
            raise self._wrong(cell, "one print output of one line",
                              "Print must send its text as one line (OutputForm), once")
        return f"Print[1/3] printed one line: {cell.out.prints[0]!r}"


# -- reports ---------------------------------------------------------------------------------


def _amount(size: int) -> str:
    return (f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB" if size >= 1 << 10
            else f"{size} B")


def format_step(step: Step) -> str:
    """One step as a text line (and, on failure, its fix below it)."""
    seconds = "" if step.seconds is None else f"{step.seconds:.2f} s"
    detail = f"{step.status}: {step.detail}" if step.status in (SKIPPED, NA) else step.detail
    line = f"  {MARKS[step.status]} {step.step:<12} {seconds:>8}  {detail}"
    if step.status == FAIL and step.fix:
        pad = " " * 27
        fix = readable(step.fix, 88 - len(pad)).splitlines()
        line += "\n" + "\n".join(pad + ("fix: " if i == 0 else "     ") + text
                                 for i, text in enumerate(fix))
    return line


def summary(steps: list[Step]) -> str:
    """The last line: all passed, or where it failed."""
    total = sum(step.seconds or 0.0 for step in steps)
    ran = [step for step in steps if step.status != NA]
    if passed(steps):
        na = len(steps) - len(ran)
        return (f"all {len(ran)} steps passed in {total:.2f} s"
                + (f" ({na} not applicable)" if na else ""))
    first, *more = [step.step for step in steps if step.status == FAIL]
    skipped = sum(step.status == SKIPPED for step in steps)
    return (f"failed at {first}" + (f" (and at {', '.join(more)})" if more else "")
            + f" after {total:.2f} s" + (f"; {skipped} later steps skipped" if skipped else ""))


def render_text(title: str, steps: list[Step]) -> str:
    return "\n".join([title, *map(format_step, steps), summary(steps)])


def render_html(title: str, steps: list[Step]) -> str:
    """A table for a notebook; failures in red with their fix."""
    colors = {PASS: "#1a7f37", FAIL: "#cf222e", SKIPPED: "#6e7781", NA: "#6e7781"}
    cell = "<td style='text-align:left;vertical-align:top'>"
    rows = []
    for step in steps:
        seconds = "" if step.seconds is None else f"{step.seconds:.2f} s"
        detail = html.escape(step.detail)
        if step.status in (SKIPPED, NA):
            detail = f"<i>{step.status}</i>: {detail}"
        if step.status == FAIL and step.fix:
            detail += (f"<pre style='white-space:pre-wrap;margin:0.3em 0 0 0'><b>fix:</b> "
                       f"{html.escape(step.fix)}</pre>")
        rows.append(f"<tr><td style='color:{colors[step.status]};font-weight:bold'>"
                    f"{MARKS[step.status]}</td>{cell}{html.escape(step.step)}</td>"
                    f"<td style='text-align:right;vertical-align:top'>{seconds}</td>"
                    f"{cell}{detail}</td></tr>")
    return (f"<table class='rk-doctor'><caption>{html.escape(title)}</caption>"
            "<tr><th></th><th style='text-align:left'>step</th><th>time</th>"
            f"<th style='text-align:left'>result</th></tr>{''.join(rows)}"
            f"<tr><td></td><td colspan='3' style='text-align:left'>"
            f"{html.escape(summary(steps))}</td></tr></table>")
