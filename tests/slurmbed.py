"""A real Slurm cluster on the SSH test bed: the bed's remote host is the cluster's login node.

Built on a started ``SSHBed`` (tests/sshbed.py), never a copy of it: ``slurmctld`` runs beside the
bed's sshd in its network namespace, and two compute nodes ``c1`` and ``c2`` of one CPU each are
two ``slurmd`` on this machine (``NodeHostname`` this host, ``NodeAddr`` 127.0.0.1, a port each),
in the same namespace.  So ``srun`` typed in an SSH session on the bed runs its job on c1 or c2,
exactly as on a cluster whose login node the user reaches by SSH.  munge authenticates (the
machine's ``munged``: started here when none runs, and then stopped here).

Facts this relies on (tests/../shared testbed notes, Debian 12, Slurm 22.05):

- slurmd refuses ``ip netns exec`` (it remounts /sys: "No filesystem mounted on /sys/fs/cgroup");
  ``nsenter --net=`` (network only) works, so every daemon and command here enters the
  namespace that way.
- Commands run over SSH find the configuration only at ``/etc/slurm/slurm.conf``: the bed writes
  it there (one bed per machine at a time: a lock file says whose it is) and removes it.
- ``proctrack/linuxproc`` and ``task/none``: no cgroups needed.

``MaxTime`` is small (``max_time_minutes``, default 5) so that a forgotten job cannot hold a node
for long, and so later tests can play out time limits in minutes.

Plain module (no pytest), like sshbed::

    with SSHBed() as ssh, SlurmBed(ssh) as cluster:
        print(ssh.run_remote("srun hostname; squeue").stdout)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from sshbed import SSHBed, SSHBedError, kill_pids

__all__ = ["SlurmBed", "SlurmBedError", "cleanup_stale", "missing_programs"]

SLURM_CONF = "/etc/slurm/slurm.conf"
MUNGE_SOCKET = "/run/munge/munge.socket.2"
NODES = ("c1", "c2")
PARTITION = "debug"
CONTROLLER_PORT = 6817
NODE_PORTS = (17001, 17002)
_MARK = "# written by rk_jupyter tests/slurmbed.py for pid "
_LOCK_NAME = "rkj-slurmbed.lock"
CMD_TIMEOUT = 30.0
PROGRAMS = ("slurmctld", "slurmd", "srun", "squeue", "sinfo", "scancel", "munged", "munge",
            "nsenter")


class SlurmBedError(SSHBedError):
    """The cluster could not be built or checked; the message carries the daemons' logs."""


def missing_programs() -> list[str]:
    """The programs the cluster needs that are not installed (install them with
    .ci/install-system-packages.sh)."""
    where = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    path = os.pathsep.join([os.environ.get("PATH", ""), *where])
    return [p for p in PROGRAMS if shutil.which(p, path=path) is None]


def _which(name: str) -> str:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        raise SlurmBedError(f"{name} is not installed (run .ci/install-system-packages.sh)")
    return found


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def cleanup_stale() -> list[int]:
    """End the daemons of a bed whose process died without tearing down (SIGKILL): when
    /etc/slurm/slurm.conf carries the mark of a dead pid, every slurmctld/slurmd started with
    it, every slurmstepd, and a munged logging into a bed's directory.  Returns their pids.
    Call with the bed lock held."""
    try:
        first = Path(SLURM_CONF).read_text(errors="replace").split("\n", 1)[0]
    except OSError:
        return []
    if not first.startswith(_MARK):
        return []
    with contextlib.suppress(ValueError):
        if _pid_alive(int(first[len(_MARK):].strip())):
            return []
    stale = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        args = _cmdline(int(entry))
        name = os.path.basename(args.split(" ", 1)[0])
        if ((name in ("slurmctld", "slurmd") and SLURM_CONF in args)
                or name.startswith("slurmstepd")
                or (name == "munged" and "rkj-slurmbed-" in args)):
            stale.append(int(entry))
    kill_pids(stale, timeout=5)
    with contextlib.suppress(OSError):
        os.unlink(SLURM_CONF)
    return stale


class SlurmBed:
    """A started Slurm cluster on an ``SSHBed``'s remote host (its login node).

    ``start()`` writes the configuration, starts munged (if needed), slurmctld and one slurmd
    per node, and waits (bounded) until every node is idle; any failure tears down what was
    started and raises ``SlurmBedError`` with the daemons' logs.  ``stop()`` cancels every job,
    ends every daemon and job step it started, and removes the configuration; idempotent.

    Attributes after ``start()``: ``conf`` (= /etc/slurm/slurm.conf), ``tmpdir`` (state,
    spool, logs), ``nodes``, ``partition``, ``startup_seconds``.
    """

    def __init__(self, ssh: SSHBed, *, max_time_minutes: int = 5,
                 start_timeout: float = 60.0) -> None:
        self.ssh = ssh
        self.max_time_minutes = max_time_minutes
        self.start_timeout = start_timeout
        self.nodes = NODES
        self.partition = PARTITION
        self.conf = SLURM_CONF
        self.tmpdir = ""
        self.startup_seconds = 0.0
        self._daemons: dict[str, subprocess.Popen[bytes]] = {}
        self._munged_pid: int | None = None
        self._lock_fh: object | None = None
        self._wrote_conf = False
        self._started = False
        self._stopped = False

    def __enter__(self) -> SlurmBed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SlurmBed {','.join(self.nodes)} on {self.ssh!r}>"

    # -- running things in the login node's namespace ---------------------------------------
    def _prefix(self) -> list[str]:
        """nsenter into the bed's network namespace (only the network: slurmd needs the real
        /sys); nothing in the bed's loopback mode."""
        if self.ssh.ns:
            return [_which("nsenter"), f"--net=/run/netns/{self.ssh.ns}"]
        return []

    def run(self, argv: Sequence[str], timeout: float = CMD_TIMEOUT,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a command as root on the login node (e.g. ``["sinfo"]``); never hangs."""
        try:
            proc = subprocess.run([*self._prefix(), *argv], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlurmBedError(f"{shlex.join(argv)}: {exc}{self.logs()}") from exc
        if check and proc.returncode != 0:
            raise SlurmBedError(f"{shlex.join(argv)} exited {proc.returncode}: "
                                f"{(proc.stderr or proc.stdout).strip()}{self.logs()}")
        return proc

    def jobs(self, name: str | None = None) -> list[dict[str, str]]:
        """The jobs squeue lists (pending, running, completing), each as
        ``{id, name, user, state, reason, node}``; only those named ``name`` when given."""
        argv = ["squeue", "-h", "-o", "%i|%j|%u|%T|%r|%N"]
        if name is not None:
            argv.append(f"--name={name}")
        out = self.run(argv, check=True).stdout
        keys = ("id", "name", "user", "state", "reason", "node")
        return [dict(zip(keys, line.split("|"), strict=True))
                for line in out.splitlines() if line.strip()]

    def wait_no_jobs(self, timeout: float, name: str | None = None) -> list[dict[str, str]]:
        """Poll squeue until it lists no job (named ``name``); the jobs still listed after
        ``timeout`` s ([] on success)."""
        deadline = time.monotonic() + timeout
        while (left := self.jobs(name)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def node_states(self) -> dict[str, str]:
        """Each node's state as sinfo says it ("idle", "mixed", "allocated", "down*", …)."""
        out = self.run(["sinfo", "-h", "-N", "-o", "%N %T"], check=True).stdout
        return dict(line.split(None, 1) for line in out.splitlines() if line.strip())

    def logs(self, lines: int = 30) -> str:
        """The last lines of every daemon's log, for error messages."""
        if not self.tmpdir:
            return ""
        parts = []
        for path in sorted(Path(self.tmpdir).glob("*.log")):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"\n--- {path.name} (last {lines} lines) ---\n" + "\n".join(text))
        return "".join(parts)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> SlurmBed:
        if self._started:
            return self
        missing = missing_programs()
        if missing:
            raise SlurmBedError(f"not installed: {', '.join(missing)} "
                                "(run .ci/install-system-packages.sh)")
        self._started = True
        atexit.register(self.stop)
        t0 = time.monotonic()
        try:
            self._lock()
            cleanup_stale()
            self.tmpdir = tempfile.mkdtemp(prefix=f"rkj-slurmbed-{os.getpid()}-")
            os.chmod(self.tmpdir, 0o755)
            for sub in ("state", "spool"):
                os.makedirs(os.path.join(self.tmpdir, sub), mode=0o755)
            self._write_conf()
            self._start_munged()
            self._start_daemon("slurmctld", [_which("slurmctld"), "-D", "-c", "-f", self.conf])
            self._wait_controller()
            for node in self.nodes:
                self._start_daemon(f"slurmd-{node}",
                                   [_which("slurmd"), "-D", "-f", self.conf, "-N", node])
            self._wait_idle(self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Cancel every job, end the daemons and every job step (slurmstepd outlives slurmd),
        remove the configuration, stop munged if this bed started it.  Idempotent."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if "slurmctld" in self._daemons and self._daemons["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                self.run(["scancel", "--full", "--user=" + self.ssh.user], timeout=10)
        daemons = list(self._daemons.values())
        kill_pids([p.pid for p in daemons] + self._step_daemons(), timeout=5)
        for proc in daemons:
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        kill_pids(self._step_daemons(), timeout=3)
        if self._munged_pid is not None:
            kill_pids([self._munged_pid], timeout=5)
        if self._wrote_conf:
            with contextlib.suppress(OSError):
                os.unlink(self.conf)
        if self.tmpdir and not os.environ.get("RKJ_SLURMBED_KEEP"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        self._unlock()

    def leftover_daemons(self) -> list[tuple[int, str]]:
        """(pid, command) of every Slurm daemon or job step of this bed still running (after
        ``stop()``: [] is the promise)."""
        found = []
        for pid in [p.pid for p in self._daemons.values()] + self._step_daemons():
            if _pid_alive(pid):
                found.append((pid, _cmdline(pid)))
        if self._munged_pid is not None and _pid_alive(self._munged_pid):
            found.append((self._munged_pid, "munged"))
        return found

    # -- building ------------------------------------------------------------------------
    def _lock(self) -> None:
        """One cluster per machine (there is one /etc/slurm/slurm.conf): an exclusive lock held
        for the bed's life, waited for at most ``start_timeout``."""
        import fcntl

        lock_dir = "/run/lock" if os.path.isdir("/run/lock") else tempfile.gettempdir()
        fh = open(os.path.join(lock_dir, _LOCK_NAME), "a")  # noqa: SIM115 (held until stop)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    fh.close()
                    raise SlurmBedError("another Slurm test bed holds "
                                        f"{lock_dir}/{_LOCK_NAME}") from None
                time.sleep(0.2)
        self._lock_fh = fh

    def _unlock(self) -> None:
        fh = self._lock_fh
        self._lock_fh = None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()  # type: ignore[attr-defined]

    def conf_text(self) -> str:
        """slurm.conf for this bed (one partition, two 1-CPU nodes, everything on loopback)."""
        host = socket.gethostname().split(".")[0]
        d = self.tmpdir
        first, last = NODE_PORTS[0], NODE_PORTS[-1]
        lines = [
            f"{_MARK}{os.getpid()}",
            "ClusterName=rkjbed",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={CONTROLLER_PORT}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"StateSaveLocation={d}/state",
            f"SlurmdSpoolDir={d}/spool/%n",
            f"SlurmctldPidFile={d}/slurmctld.pid",
            f"SlurmdPidFile={d}/slurmd-%n.pid",
            f"SlurmctldLogFile={d}/slurmctld.log",
            f"SlurmdLogFile={d}/slurmd-%n.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2",
            "MailProg=/bin/true",  # none installed: slurmctld logs an error otherwise
            "InactiveLimit=0",
            "KillWait=3",  # seconds from SIGTERM to SIGKILL when a step is cancelled
            "MinJobAge=5",
            "MessageTimeout=10",
            f"NodeName=c[1-{len(NODES)}] NodeHostname={host} NodeAddr=127.0.0.1 "
            f"Port=[{first}-{last}] CPUs=1 RealMemory=1000 State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes=c[1-{len(NODES)}] Default=YES "
            f"MaxTime={self.max_time_minutes} State=UP",
        ]
        return "\n".join(lines) + "\n"

    def _write_conf(self) -> None:
        """Write /etc/slurm/slurm.conf; refuse to replace one this bed's kind did not write
        (a real cluster's), replace one left by a dead test run."""
        path = Path(self.conf)
        if path.exists():
            first = path.read_text(errors="replace").split("\n", 1)[0]
            if not first.startswith(_MARK):
                raise SlurmBedError(f"{self.conf} exists and was not written by the test bed: "
                                    "refusing to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.conf_text())
        path.chmod(0o644)
        self._wrote_conf = True

    def _munge_works(self) -> bool:
        munge, unmunge = _which("munge"), _which("unmunge")
        try:
            cred = subprocess.run([munge, "-n"], capture_output=True, timeout=10,
                                  stdin=subprocess.DEVNULL)
            if cred.returncode != 0:
                return False
            back = subprocess.run([unmunge], input=cred.stdout, capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return back.returncode == 0

    def _start_munged(self) -> None:
        """Use the machine's munged if one answers; else start one (as user munge, as its
        package expects) and remember to stop it."""
        if self._munge_works():
            return
        os.makedirs("/run/munge", exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        os.chmod("/run/munge", 0o755)
        log = os.path.join(self.tmpdir, "munged.log")
        Path(log).touch()
        shutil.chown(log, "munge", "munge")
        pidfile = "/run/munge/munged.pid"
        with contextlib.suppress(OSError):
            os.unlink(pidfile)
        proc = subprocess.run(
            ["setpriv", "--reuid=munge", "--regid=munge", "--clear-groups", "--",
             _which("munged"), f"--log-file={log}", f"--pid-file={pidfile}", "--force"],
            capture_output=True, text=True, timeout=CMD_TIMEOUT, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise SlurmBedError(f"munged did not start: {(proc.stderr or proc.stdout).strip()}"
                                f"{self.logs()}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                self._munged_pid = int(Path(pidfile).read_text().split()[0])
            if self._munged_pid and self._munge_works():
                return
            time.sleep(0.05)
        raise SlurmBedError(f"munged started but munge -n | unmunge fails{self.logs()}")

    def _start_daemon(self, name: str, argv: list[str]) -> None:
        """Start a daemon in the foreground (-D), so the Popen's pid is the daemon's."""
        out = open(os.path.join(self.tmpdir, f"{name}.out.log"), "wb")  # noqa: SIM115
        with out:
            self._daemons[name] = subprocess.Popen(
                [*self._prefix(), *argv], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)

    def _check_daemons(self) -> None:
        for name, proc in self._daemons.items():
            if proc.poll() is not None:
                raise SlurmBedError(f"{name} exited with status {proc.returncode}{self.logs()}")

    def _wait_controller(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            self._check_daemons()
            if self.run(["scontrol", "ping"], timeout=15).stdout.count("UP") >= 1:
                return
            if time.monotonic() > deadline:
                raise SlurmBedError(f"slurmctld did not answer within {self.start_timeout:g} s"
                                    f"{self.logs()}")
            time.sleep(0.2)

    def _wait_idle(self, timeout: float) -> None:
        """Wait until every node is idle (a node that registers late is "unknown" or "down"
        until then)."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while True:
            self._check_daemons()
            states = self.node_states()
            if all(states.get(n) == "idle" for n in self.nodes):
                return
            if time.monotonic() > deadline:
                raise SlurmBedError(f"nodes not idle within {timeout:g} s: {states}"
                                    f"{self.logs()}")
            time.sleep(0.2)

    def _step_daemons(self) -> list[int]:
        """slurmstepd processes of this bed (in its namespace; any slurmstepd in loopback
        mode): they outlive slurmd."""
        found = []
        inode = None
        if self.ssh.ns:
            with contextlib.suppress(OSError):
                inode = os.stat(f"/run/netns/{self.ssh.ns}").st_ino
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
                if not comm.startswith("slurmstepd"):
                    continue
                if inode is not None and os.stat(f"/proc/{entry}/ns/net").st_ino != inode:
                    continue
            except OSError:
                continue
            found.append(int(entry))
        return found


def _main() -> None:
    """``python tests/slurmbed.py``: start a bed and a cluster, show them, wait for Ctrl-C
    (or SIGTERM)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill PID: tear down too
    with SSHBed() as ssh, SlurmBed(ssh) as cluster:
        print(f"cluster up in {cluster.startup_seconds:.2f}s: {cluster.node_states()}")
        print(f"ssh -F {ssh.ssh_config} {ssh.host_alias} srun hostname")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    _main()
