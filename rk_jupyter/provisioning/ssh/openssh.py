"""The OpenSSH backend: the system's ``ssh`` client does the connecting; we only drive it.

Why: "if ``ssh HOST`` works, the kernel works".  Everything ssh_config can say (Include,
Match, ProxyCommand, ProxyJump chains, certificates, ``@cert-authority``, GSSAPI, FIDO2 and
PKCS#11 keys, HostKeyAlias, KnownHostsCommand …) is honoured because ssh itself reads it;
re-implementing its semantics is a race that cannot be won (jupyter_client's tunnel module
and sshpyk make the same choice).

How:
- **Resolution** is ``ssh -G``: HostName, User, Port, known_hosts files, proxies, exactly as
  ssh will use them (``resolve``).
- **One master** per (user, host, port), shared by every kernel of that host through the
  pool: ``ssh -M -N -S PATH`` with BatchMode (never a prompt), ConnectTimeout, strict host
  keys, keepalive (ServerAliveInterval), its control socket in a private 0700 directory.  If
  the user's own configuration already has a live master for the host (``ssh -O check``:
  how a host with passwords or one-time codes is reached), that one is ridden instead.
- **Commands** (agent start, probes) are ``ssh -S PATH HOST CMD`` clients of the master: a
  new session on the same connection, no new login; the token goes on stdin.
- **The forward** to the agent is a local listener of ours; each accepted connection is handed
  to ``ssh -S PATH -W 127.0.0.1:PORT HOST`` as its stdin and stdout, which the master then
  reads and writes directly (the mux client passes the descriptors on), so bytes never pass
  through Python.  The listener stays when the master is replaced (a reconnect): kernels
  reconnect to the port they know.
- **The copy** of the agent is ``sftp`` through the master.
- Our master is started from one long-lived thread with PR_SET_PDEATHSIG (Linux): it ends
  with this process, even on SIGKILL.  The clients need no such care: the master reads and
  writes the descriptors they pass it (the agent's stdin is our pipe), so when this process
  dies the remote command sees EOF even on the user's own master (a test kills a client's
  owner to prove it).
- ssh's diagnostics are read by ``openssh_errors.diagnose`` into the same coded errors the
  paramiko backend raises.

If this process dies, even by SIGKILL, nothing of ours is left logged in, and the remote agent
sees its lifeline close, exactly as with the paramiko backend.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import IO, Any

from ..errors import TransportError
from .listener import LocalForward, Pair
from .openssh_errors import diagnose
from .target import SSHTarget

log = logging.getLogger("rk_jupyter.ssh")

SSH = "ssh"
SFTP = "sftp"
KEEPALIVE_COUNT_MAX = 3  # ServerAliveCountMax, as the paramiko backend's watchdog
_POLL = 0.05  # seconds between checks of a master that is logging in
_STDERR_TAIL = 40
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS
#: What a master's socket adds to the directory: "/m-" and 12 hex digits, and the
#: ".XXXXXXXXXXXXXXXX" ssh appends to the name it binds before it renames it.
_SOCKET_NAME_MAX = 32
#: What a user's ssh_config may set for interactive logins and must not apply to ours
#: (a RemoteCommand makes ssh refuse a command line; a LocalCommand would run locally).
_NOT_INTERACTIVE = ("-o", "RemoteCommand=none", "-o", "PermitLocalCommand=no")


def available() -> str:
    """Why the OpenSSH backend cannot be used here, or "" if it can: an ``ssh`` client on
    PATH that supports ControlMaster (Windows' OpenSSH port does not: no Unix sockets)."""
    if os.name == "nt":
        return "the Windows OpenSSH client has no ControlMaster (connection sharing)"
    if shutil.which(SSH) is None:
        return "no ssh client on PATH"
    return ""


def _ssh() -> str:
    path = shutil.which(SSH)
    if path is None:
        raise TransportError("no ssh client on PATH (ssh_client is 'openssh')",
                             "install OpenSSH's client (Debian: apt-get install "
                             "openssh-client), or set ssh_client to 'paramiko' in the "
                             "kernelspec", code="ssh.client-missing")
    return path


# -- resolution -------------------------------------------------------------------------------


def options_for(host: str, *, port: int | None = None, user: str | None = None,
                identity_file: str | None = None, proxy_jump: str | None = None,
                known_hosts: str | None = None, ssh_config: str | None = None) -> list[str]:
    """The ssh options that say what the kernelspec's keys say (like ``ssh -p/-l/-i/-J``,
    which win over ssh_config)."""
    options: list[str] = []
    if ssh_config:
        path = os.path.expanduser(ssh_config)
        if not os.path.isfile(path):
            raise TransportError(f"the ssh_config file {path} given in the kernelspec does "
                                 "not exist", "correct ssh_config in the kernelspec",
                                 code="ssh.config-missing")
        options += ["-F", path]
    if port:
        options += ["-p", str(port)]
    if user:
        options += ["-l", user]
    if identity_file:
        options += ["-i", os.path.expanduser(identity_file)]
    if proxy_jump:
        options += ["-o", "ProxyJump=none"] if proxy_jump.strip().lower() == "none" else \
            ["-J", proxy_jump]
    if known_hosts:
        options += ["-o", f"UserKnownHostsFile={os.path.abspath(os.path.expanduser(known_hosts))}"]
    if not host or any(c.isspace() for c in host) or host.startswith("-"):
        raise TransportError(f"the host {host!r} is not a host name", code="ssh.bad-host")
    return options


def resolve(host: str, options: Sequence[str], timeout: float) -> SSHTarget:
    """``ssh -G``: the host as ssh itself will connect to it.  Raises TransportError with
    ssh's own words for a configuration ssh rejects."""
    argv = [_ssh(), "-G", *options, host]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise TransportError(f"ssh -G {host} did not answer within {timeout:g} s",
                             "a Match exec line in ssh_config may hang; run ssh -G "
                             f"{host} to see", code="ssh.config-unreadable") from None
    if done.returncode != 0:
        said = done.stderr.strip() or f"exit status {done.returncode}"
        raise TransportError(f"ssh cannot resolve {host!r} from its configuration: {said}",
                             "correct the ssh_config line it names (ssh -G "
                             f"{host} shows the result)", code="ssh.config-unreadable")
    found: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        found.setdefault(key.lower(), []).append(value.strip())

    def one(key: str, default: str = "") -> str:
        return found.get(key, [default])[0]

    def files(key: str) -> tuple[str, ...]:
        names = " ".join(found.get(key, [])).split()
        return tuple(os.path.expanduser(n) for n in names if n.lower() != "none")

    via = ""
    if one("proxyjump") and one("proxyjump").lower() != "none":
        # ssh -G writes user@[host]:port; brackets are needed for IPv6 addresses only.
        via = "ProxyJump " + re.sub(r"\[([^]:]+)\]", r"\1", one("proxyjump"))
    elif one("proxycommand") and one("proxycommand").lower() != "none":
        via = f"ProxyCommand {one('proxycommand')}"
    try:
        port = int(one("port", "22"))
    except ValueError:
        raise TransportError(f"ssh -G gives host {host} the port {one('port')!r}",
                             code="ssh.bad-port") from None
    return SSHTarget(
        alias=host, hostname=one("hostname", host), port=port, user=one("user"),
        identity_files=tuple(f for f in files("identityfile") if os.path.exists(f)),
        identities_only=one("identitiesonly") == "yes",
        known_hosts_files=files("userknownhostsfile"),
        global_known_hosts_files=files("globalknownhostsfile"),
        backend="openssh", via=via, ssh_options=tuple(options),
    )


# -- starting masters from a thread that lives as long as the process --------------------------


class _Spawner:
    """Starts processes that must die with this process (PR_SET_PDEATHSIG).

    The signal fires when the *thread* that forked the child ends, not the process, and
    masters are started from pool and reconnect threads that come and go: so every one is
    forked from this one daemon thread, which ends only with the process."""

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[list[str], dict[str, Any], queue.Queue[Any]]] = \
            queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, daemon=True,
                                                name="ssh-master-spawner")
                self._thread.start()
        box: queue.Queue[Any] = queue.Queue(1)
        self._requests.put((argv, kwargs, box))
        result = box.get()
        if isinstance(result, BaseException):
            raise result
        return result

    def _serve(self) -> None:
        parent = os.getpid()
        while True:
            argv, kwargs, box = self._requests.get()
            try:
                box.put(subprocess.Popen(argv, preexec_fn=_die_with(parent), **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box.put(exc)


def _die_with(parent: int) -> Any:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:  # runs in the child between fork and exec
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the prctl
            os._exit(1)
    return arm


_SPAWNER = _Spawner()


def control_directory() -> str:
    """A private (0700) directory for our masters' control sockets: under Jupyter's runtime
    directory, or under the temporary directory when that path is too long for a socket."""
    try:
        from jupyter_core.paths import jupyter_runtime_dir
        base = jupyter_runtime_dir()
    except ImportError:
        base = tempfile.gettempdir()
    directory = os.path.join(base, "rk-ssh")
    if len(directory) + _SOCKET_NAME_MAX > _SOCKET_PATH_MAX:
        directory = os.path.join(tempfile.gettempdir(), f"rk-ssh-{os.getuid()}")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    info = os.lstat(directory)
    if info.st_uid != os.getuid() or not os.path.isdir(directory):
        raise TransportError(f"{directory} (for SSH control sockets) is not a directory of "
                             "yours", f"remove it: rm -r {directory}", code="ssh.control-dir")
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700)
    return directory


# -- processes as channels ----------------------------------------------------------------------


class ProcessChannel:
    """An ssh client process seen as a channel: the interface ``RemoteAgent`` and ``run`` use
    of a paramiko Channel (sendall, shutdown_write, makefile, status_event, exit status)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.status_event = threading.Event()
        threading.Thread(target=self._wait, daemon=True, name="ssh-client-wait").start()

    def _wait(self) -> None:
        self.process.wait()
        self.status_event.set()

    def sendall(self, data: bytes) -> None:
        stdin = self.process.stdin
        if stdin is None or stdin.closed:
            raise BrokenPipeError("the ssh client's stdin is closed")
        stdin.write(data)
        stdin.flush()

    def shutdown_write(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def settimeout(self, timeout: float | None) -> None:
        """Nothing to do: readers of a process's stdout wait for lines or its end."""

    def makefile(self, mode: str = "rb") -> IO[bytes]:
        assert self.process.stdout is not None
        return self.process.stdout

    def recv_exit_status(self) -> int:
        """The remote command's exit status (``remote_status``)."""
        return remote_status(self.process.wait())

    def close(self) -> None:
        """End the client (its session on the master closes: the remote command's stdin
        ends); idempotent."""
        self.shutdown_write()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.process.stdout is not None:
            with contextlib.suppress(OSError):
                self.process.stdout.close()


def remote_status(code: int | None) -> int:
    """A remote command's exit status from its ssh client's: -1 when ssh could not say (it
    exits 255 for its own failures and for a command killed by a signal), as paramiko's
    recv_exit_status."""
    return -1 if code is None or code == 255 or code < 0 else code


# -- the connection ----------------------------------------------------------------------------


class OpenSSHConnection:
    """A master connection (ours, or the user's own) and the clients that ride it.

    Ours ends with ``close`` (and with this process); the user's is never ended by us (we
    end only our clients) and is checked with ``ssh -O check`` for ``alive``.
    """

    backend = "openssh"

    def __init__(self, target: SSHTarget, control: str | None,
                 master: subprocess.Popen[bytes] | None, stderr: deque[str],
                 keepalive: float) -> None:
        self.target = target
        self.control = control  # our master's socket; None: the user's own master
        self.master = master
        self.keepalive = keepalive
        self.reason = ""
        self._stderr = stderr
        self._closed = threading.Event()
        if master is None:
            threading.Thread(target=self._watch_users_master, daemon=True,
                             name=f"ssh-master-check-{target.hostname}").start()

    @property
    def description(self) -> str:
        """Which client and master, for the launch log and status displays."""
        whose = "its own master" if self.master is not None else "your open ssh master"
        return f"OpenSSH ({whose})"

    # -- ssh command lines ----------------------------------------------------------------

    def _client(self, *args: str) -> list[str]:
        """A client command line that rides the master and never prompts."""
        via = ["-S", self.control] if self.control else []
        return [_ssh(), *self.target.ssh_options, *via, "-o", "ControlMaster=no",
                "-o", "BatchMode=yes", *_NOT_INTERACTIVE, *args]

    def alive(self) -> bool:
        if self.reason or self._closed.is_set():
            return False
        return self.master is None or self.master.poll() is None

    def death_reason(self) -> str:
        if self.reason:
            return self.reason
        if self._closed.is_set():
            return f"the SSH connection to {self.target} was closed"
        if self.master is not None and self.master.poll() is not None:
            said = "; ".join(list(self._stderr)[-3:]) or f"exit status {self.master.returncode}"
            return f"the SSH connection to {self.target} was lost (ssh: {said})"
        return ""

    def close(self) -> None:
        """End our master (and so every client riding it); idempotent.  The user's own
        master is left running: it is theirs."""
        self._closed.set()
        master = self.master
        if master is not None and master.poll() is None:
            master.terminate()
            try:
                master.wait(3)
            except subprocess.TimeoutExpired:
                master.kill()
                master.wait(3)
        if self.control:
            with contextlib.suppress(OSError):
                os.unlink(self.control)

    def _watch_users_master(self) -> None:
        interval = min(self.keepalive, 5.0) if self.keepalive > 0 else 5.0
        while not self._closed.wait(interval):
            if not check_master(self.target, None, interval):
                self.reason = (f"your ssh master connection to {self.target} ended (ssh -O "
                               "check says it is not running)")
                log.error("%s", self.reason)
                return

    # -- remote commands ------------------------------------------------------------------

    def exec(self, command: str, timeout: float, combine: bool = True) -> ProcessChannel:
        """Start ``command`` in a new session on the master (stderr merged into stdout unless
        ``combine`` is False: then it is dropped, as an SFTP session would not see it)."""
        return ProcessChannel(self._start(command, combine, subprocess.PIPE))

    def _start(self, command: str, combine: bool, stdin: int) -> subprocess.Popen[bytes]:
        if not self.alive():
            raise TransportError(f"cannot run a command on {self.target}: "
                                 f"{self.death_reason()}", code="ssh.command-failed")
        try:
            return subprocess.Popen(
                self._client("-T", self.target.alias, command), stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if combine else subprocess.DEVNULL,
                start_new_session=True)
        except OSError as exc:
            raise TransportError(f"cannot run ssh: {exc}", code="ssh.command-failed") from None

    def run(self, command: str, timeout: float, combine: bool = True) -> tuple[int, str]:
        """Run a short command (stdin empty); its exit status and output.  Raises
        TransportError when it does not finish within ``timeout`` seconds."""
        process = self._start(command, combine, subprocess.DEVNULL)
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise TransportError(f"a remote command on {self.target} did not finish within "
                                 f"{timeout:g} s", code="ssh.command-timeout") from None
        status = remote_status(process.returncode)
        if status == -1 and not self.alive():
            raise TransportError(f"a remote command on {self.target} failed: "
                                 f"{self.death_reason()}", code="ssh.command-failed")
        return status, out.decode("utf-8", "replace")

    def upload(self, data: bytes, path: str, timeout: float) -> bool:
        """Copy ``data`` to ``~/path`` unless a file of that size is there; True if copied.

        sftp through the master, under a temporary name then renamed (a reader never sees
        half a file); the size that arrived is checked (a full disk)."""
        directory = path.rsplit("/", 1)[0]
        size_cmd = "sh -c " + shlex.quote(f"cd; wc -c < {shlex.quote(path)} 2>/dev/null")
        status, out = self.run(size_cmd, timeout, combine=False)
        if status == 0 and out.strip() == str(len(data)):
            return False
        # Created private, as the paramiko backend's SFTP mkdir does (mode 0700).
        self.run("sh -c " + shlex.quote(f"cd; umask 077; mkdir -p {shlex.quote(directory)}"),
                 timeout)
        temporary = f"{path}.{os.urandom(4).hex()}.part"
        with tempfile.TemporaryDirectory(prefix="rk-upload-") as local:
            source = os.path.join(local, "agent.pyz")
            with open(source, "wb") as handle:
                handle.write(data)
            batch = [f'put "{source}" "{temporary}"', f'chmod 600 "{temporary}"',
                      f'rename "{temporary}" "{path}"']
            script = os.path.join(local, "batch")
            with open(script, "w") as handle:
                handle.write("\n".join(batch) + "\n")
            via = ["-o", f"ControlPath={self.control}"] if self.control else []
            argv = [shutil.which(SFTP) or SFTP, *_sftp_options(self.target.ssh_options), *via,
                    "-o", "ControlMaster=no", "-o", "BatchMode=yes", "-q", "-b", script,
                    self.target.alias]
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
            except subprocess.TimeoutExpired:
                raise TransportError(f"copying the agent to ~/{path} on {self.target} did not "
                                     f"finish within {timeout:g} s (command_timeout)",
                                     code="ssh.sftp") from None
            except OSError as exc:
                raise TransportError(f"cannot run sftp: {exc}", "install OpenSSH's sftp "
                                     "client, or set ssh_client to 'paramiko'",
                                     code="ssh.sftp") from None
        status, out = self.run(size_cmd, timeout, combine=False)
        if done.returncode != 0 or out.strip() != str(len(data)):
            self.run("sh -c " + shlex.quote(f"cd; rm -f {shlex.quote(temporary)}"), timeout)
            said = (done.stderr or done.stdout).strip() or f"only {out.strip() or 0} of " \
                f"{len(data)} bytes arrived"
            raise TransportError(f"cannot copy the agent to ~/{path} on the remote over "
                                 f"SFTP: {said}", code="ssh.sftp")
        return True

    # -- forwarding -----------------------------------------------------------------------

    def forward(self, destination: tuple[str, int], timeout: float) -> MuxForwarder:
        """A local loopback port forwarded to ``destination`` on the remote host."""
        return MuxForwarder(self, destination, timeout)

    def stdio_forward(self, destination: tuple[str, int],
                      stdio: int | None = None) -> subprocess.Popen[bytes]:
        """``ssh -W``: a channel to ``destination`` with ``stdio`` (a socket's descriptor)
        as both ends; None: nothing in, nothing out (a probe)."""
        host, port = destination
        return subprocess.Popen(
            self._client("-W", f"{host}:{port}", self.target.alias),
            stdin=stdio if stdio is not None else subprocess.DEVNULL,
            stdout=stdio if stdio is not None else subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True)

    def forwarding_refused(self, port: int, timeout: float) -> TransportError | None:
        """Why a forwarded channel to the agent's ``port`` cannot be opened, or None if it
        can: asked only after a kernel's link through the forward failed."""
        try:
            process = self.stdio_forward(("127.0.0.1", port))
        except OSError:
            return None
        try:
            _, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            return None
        time.sleep(0.1)  # the master's own line on why (it logs the refusal, not the client)
        said = err.decode("utf-8", "replace") + "\n".join(self._stderr)
        if "administratively prohibited" in said:
            return TransportError(
                f"the SSH server {self.target} refuses port forwarding (ssh: "
                f"{err.decode('utf-8', 'replace').strip()}; administratively prohibited)",
                "rk_jupyter reaches its agent through a forwarded port. Ask its "
                "administrator to allow it for your account (AllowTcpForwarding local or yes "
                "in sshd_config, and no restrict/no-port-forwarding option on your key in "
                "authorized_keys)", code="ssh.forwarding-refused")
        if process.returncode != 0 and "open failed" in said:
            return TransportError(f"the SSH server {self.target} cannot forward to the "
                                  f"agent: {err.decode('utf-8', 'replace').strip()}",
                                  code="ssh.forwarding-failed")
        return None


def _sftp_options(options: Sequence[str]) -> list[str]:
    """ssh's options as sftp takes them: -p PORT is -P PORT there, -l USER and -i FILE go
    as -o User= / IdentityFile=; -F, -J and -o are the same."""
    out: list[str] = []
    items = iter(options)
    names = {"-p": "-P", "-F": "-F", "-o": "-o", "-J": "-J"}
    for flag in items:
        value = next(items, "")
        if flag == "-l":
            out += ["-o", f"User={value}"]
        elif flag == "-i":
            out += ["-o", f"IdentityFile={value}"]
        else:
            out += [names.get(flag, flag), value]
    return out


def check_master(target: SSHTarget, control: str | None, timeout: float) -> bool:
    """Whether a master answers on ``control`` (None: the user's own ControlPath)."""
    via = ["-S", control] if control else []
    try:
        done = subprocess.run([_ssh(), *target.ssh_options, *via, "-O", "check", target.alias],
                              capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return done.returncode == 0


def connect(target: SSHTarget, policy: str, timeout: float,
            keepalive: float) -> OpenSSHConnection:
    """Ride the user's live master for ``target`` if there is one, else start ours and wait
    until it has logged in.  Bounded by ``timeout`` per hop (TCP, key exchange, login);
    raises the TransportError ssh's diagnostics mean."""
    if check_master(target, None, timeout):
        log.info("riding your open ssh master connection to %s", target)
        return OpenSSHConnection(target, None, None, deque(maxlen=_STDERR_TAIL), keepalive)
    tag = secrets.token_hex(6)  # one socket per master: a stale one is never reused
    control = os.path.join(control_directory(), f"m-{tag}")
    strict = "accept-new" if policy == "accept-new" else "yes"
    argv = [_ssh(), *target.ssh_options, "-M", "-N", "-S", control,
            "-o", "ControlPersist=no", "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={max(1, round(timeout))}",
            "-o", f"StrictHostKeyChecking={strict}", "-o", "ClearAllForwardings=yes",
            *_NOT_INTERACTIVE, "-o", "ExitOnForwardFailure=yes"]
    if keepalive > 0:
        argv += ["-o", f"ServerAliveInterval={max(1, round(keepalive))}",
                 "-o", f"ServerAliveCountMax={KEEPALIVE_COUNT_MAX}"]
    argv.append(target.alias)
    started = time.monotonic()
    master = _SPAWNER.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    stderr: deque[str] = deque(maxlen=_STDERR_TAIL)
    reader = threading.Thread(target=_read_stderr, args=(master, stderr, target), daemon=True,
                              name=f"ssh-master-stderr-{target.hostname}")
    reader.start()
    deadline = started + 3 * timeout * target.hops
    while True:
        if master.poll() is not None:
            reader.join(1.0)
            raise diagnose("\n".join(stderr), target, timeout)
        if os.path.exists(control) and check_master(target, control, timeout):
            break
        if time.monotonic() > deadline:
            master.kill()
            master.wait()
            reader.join(1.0)
            error = diagnose("\n".join(stderr), target, timeout)
            if error.code != "ssh.failed":
                raise error
            raise TransportError(f"ssh did not log in to {target} within "
                                 f"{deadline - started:g} s", f"run ssh -v {target.alias} to see "
                                 "where it waits; on a slow network raise connect_timeout",
                                 code="ssh.login-timeout")
        time.sleep(_POLL)
    log.info("OpenSSH master for %s logged in in %.2f s (control socket %s)", target,
             time.monotonic() - started, control)
    return OpenSSHConnection(target, control, master, stderr, keepalive)


_SECRET = re.compile(r"(?i)(password|passphrase|token|secret)\S*\s*[:=]\s*\S+")


def _read_stderr(process: subprocess.Popen[bytes], lines: deque[str],
                 target: SSHTarget) -> None:
    """Keep the master's last words (for diagnoses) and log them (at info: ssh prints only
    warnings and errors without -v; anything that looks like a secret is scrubbed)."""
    assert process.stderr is not None
    for raw in process.stderr:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            lines.append(line)
            log.info("ssh %s: %s", target.alias, _SECRET.sub(r"\1: ***", line))


# -- the forward ---------------------------------------------------------------------------


class MuxForwarder(LocalForward):
    """Hands each accepted client socket to ``ssh -W`` (see the module docstring)."""

    def _serve(self, client: socket.socket, peer: tuple[str, int]) -> None:
        connection = self.connection
        try:
            process = connection.stdio_forward(self.destination, client.fileno())
        except OSError as exc:
            log.error("forward 127.0.0.1:%d: cannot run ssh -W: %s", self.port, exc)
            client.close()
            return
        pair = (client, process)
        if not self._track(pair):
            return
        # The ``ssh -W`` client ends with its channel: then end the kernel's side too.
        _, err = process.communicate()
        said = err.decode("utf-8", "replace").strip()
        if said and not self._closed.is_set():
            report = log.error if connection.alive() else log.info
            report("forward 127.0.0.1:%d -> remote %s:%d: %s", self.port, *self.destination,
                   said)
        self._finish(pair)

    def _end(self, pair: Pair) -> None:
        client, process = pair
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)
        client.close()
        if process.poll() is None:
            process.terminate()
