"""``rk-jupyter doctor NAME``: walk the chain from this machine to a working engine, step by step.

The steps up to the agent are the doctor's own diagnosis, each over the function a kernel
start itself calls (ssh_config target resolution, ``connect.resolve``, the connect phases,
``check_login``, the Python probe of ``provisioning.diagnosis``), so a step fails with the
error a kernel start would give — its cause and its fix, and its code — at the step where it
happens and with the time it took.  The agent, link and engine steps are the phases of the
real launch path (``provisioning.launch.open_session``) with their times, then the checks only
the doctor makes: an evaluation, the round trip and the throughput.  Steps after a failure
are skipped; for the local transport the network steps do not apply.

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
from .client import AgentClient, Collected, EvaluationError, run
from .client.environment import BY_KERNEL, BY_PROVISIONER, VARIABLES
from .client.evaluate import TIMEOUT
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
    kernelspec step); ``run`` does every step and cleans up."""

    def __init__(self, name: str = "",
                 settings: LaunchSettings | Mapping[str, Any] | str | None = None) -> None:
        self.name = name
        self.given = settings
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

    def run(self, report: Callable[[Step], None] | None = None) -> list[Step]:
        """Every step in order (``report`` sees each as it ends); never raises for a failure."""
        checks: list[tuple[str, Callable[[], str | Phase]]] = [
            ("kernelspec", self._kernelspec), ("resolve", self._resolve),
            ("reach", self._reach), ("host key", self._host_key), ("auth", self._auth),
            ("remote shell", self._shell), ("python", self._python), ("agent", self._agent),
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
        finally:
            self.close()
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


# -- reports ---------------------------------------------------------------------------------


def _amount(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


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
    failed = next(step for step in steps if step.status == FAIL)
    skipped = sum(step.status == SKIPPED for step in steps)
    return f"failed at {failed.step} after {total:.2f} s; {skipped} later steps skipped"


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
