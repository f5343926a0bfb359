"""A real SSH test bed: an OpenSSH server on a "remote host" plus a shaping TCP proxy.

The "remote host" is a network namespace joined to the root namespace by a veth pair, with a
default-drop nftables firewall that admits only ssh (tcp/22), and a private ``sshd`` inside it.
Tests and benchmarks therefore exercise the real client/server code paths: host-key checking,
public-key auth, port forwarding, and the fact that nothing but port 22 is reachable from
outside. Where namespaces cannot be made (no CAP_NET_ADMIN), the bed falls back to ``sshd`` on a
free loopback port (``bed.mode == "loopback"``), without a firewall.

The remote account's Python is the test machine's own interpreter (``sys.executable``), so the
code under test can be started "remotely" without a second installation.

Plain module (no pytest): importable from ``tests/`` and from benchmarks alike::

    from sshbed import SSHBed
    with SSHBed() as bed:
        subprocess.run(bed.ssh_argv("echo ok"))
        proxy = bed.proxy(delay_ms=25, rate_bps=2_000_000)   # 50 ms RTT, 2 Mbit/s
"""

from __future__ import annotations

import atexit
import base64
import collections
import contextlib
import fcntl
import importlib.util
import os
import pwd
import re
import select
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Account",
    "FirewallCheck",
    "NamespaceListener",
    "SSHBed",
    "SSHBedError",
    "ShapingProxy",
    "cleanup_stale",
    "unavailable_reason",
]

SSHD = "/usr/sbin/sshd"
NS_PREFIX = "rkj"
TMP_PREFIX = "rkj-sshbed-"
SUBNET_BASE = "10.231"  # 10.231.X.0/24, X derived from the pid
DEFAULT_USERS = ("rkjtest",)
CMD_TIMEOUT = 30.0  # upper bound for every helper command the bed runs itself
_LOCK_FILE = "/run/lock/rkj-sshbed.lock"
_counter = 0
_counter_lock = threading.Lock()


class SSHBedError(RuntimeError):
    """The test bed could not be built or a bed operation failed."""


def _run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = CMD_TIMEOUT,
    input: str | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a helper command with a timeout; raise SSHBedError with its output on failure."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            cwd=cwd,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SSHBedError(f"{shlex.join(argv)}: {exc}") from exc
    if check and proc.returncode != 0:
        raise SSHBedError(
            f"{shlex.join(argv)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
        )
    return proc


def unavailable_reason() -> str | None:
    """Why a bed cannot be built on this machine at all (None when it can), for pytest.skip."""
    if os.geteuid() != 0:
        return "the SSH test bed needs root (it creates accounts and namespaces)"
    for tool in (SSHD, "ssh", "ssh-keygen", "useradd", "setpriv", "ss", "ps"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (run .ci/install-system-packages.sh)"
    return None


def _pid_alive(pid: int) -> bool:
    """True for a running process (a zombie counts as dead: its bed can be cleaned up)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def kill_pids(pids: Sequence[int], timeout: float = 3.0) -> None:
    """SIGTERM the given pids, then SIGKILL whatever is left after ``timeout``."""
    pids = [p for p in pids if p > 1 and p != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _pid_alive(p)]
        if pids:
            time.sleep(0.02)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _ns_pids(ns: str) -> list[int]:
    proc = _run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in proc.stdout.split()]


def cleanup_stale() -> list[str]:
    """Remove namespaces and temp dirs left by beds whose process died (e.g. SIGKILL)."""
    removed: list[str] = []
    if shutil.which("ip") is not None:
        proc = _run(["ip", "netns", "list"], check=False)
        for line in proc.stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            m = re.fullmatch(rf"{NS_PREFIX}-(\d+)-\d+", name)
            if m and not _pid_alive(int(m.group(1))):
                kill_pids(_ns_pids(name))
                _run(["ip", "netns", "del", name], check=False)
                removed.append(name)
    tmp = Path(tempfile.gettempdir())
    for path in tmp.glob(f"{TMP_PREFIX}*"):
        m = re.match(rf"{TMP_PREFIX}(\d+)-", path.name)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


@contextlib.contextmanager
def file_lock(name: str, timeout: float, poll: float = 0.05) -> Iterator[None]:
    """An exclusive lock between concurrent test runs on this machine (/run/lock/NAME, or
    the temp dir where /run/lock is missing); SSHBedError after ``timeout`` seconds."""
    lock_dir = os.path.dirname(_LOCK_FILE)
    path = os.path.join(lock_dir if os.path.isdir(lock_dir) else tempfile.gettempdir(), name)
    with open(path, "a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SSHBedError(f"timed out waiting for {path}") from None
                time.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def probe_port(host: str, port: int, timeout: float = 1.0) -> str:
    """Try a TCP connect: "open", "refused" (RST, e.g. closed port) or "timeout" (dropped)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"error: {exc}"


_PROBE_SCRIPT = (
    "import socket,sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))\n"
    "    print('open')\n"
    "except ConnectionRefusedError:\n"
    "    print('refused')\n"
    "except (TimeoutError, socket.timeout):\n"
    "    print('timeout')\n"
    "except OSError as e:\n"
    "    print('error: %s' % e)\n"
)

_LISTENER_SCRIPT = (
    "import socket,sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)\n"
    "print('ready %d' % s.getsockname()[1], flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hello\\n'); c.close()\n"
)


@dataclass
class Account:
    """An unprivileged account on the remote, with the client key pair authorized for it."""

    name: str
    uid: int
    gid: int
    home: str
    key_file: str  # private key, 0600, owned by root (the Jupyter side)
    public_key: str  # the authorized public key line


@dataclass
class FirewallCheck:
    """Reachability of a namespace port from inside and from the root namespace."""

    port: int
    inside: str  # probe result from inside the namespace ("open" expected)
    outside: str  # probe result from the root namespace ("timeout" expected: dropped)
    ssh_outside: str  # port 22 from the root namespace ("open" expected)

    @property
    def blocked(self) -> bool:
        """True when the port works inside but is silently dropped from outside."""
        return self.inside == "open" and self.outside == "timeout" and self.ssh_outside == "open"


@dataclass
class NamespaceListener:
    """A throwaway TCP listener inside the namespace (greets with b"hello\\n")."""

    proc: subprocess.Popen[str]
    host: str
    port: int

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()


class _Link:
    """One direction of the emulated link: serialisation at ``rate`` plus propagation delay.

    A virtual clock (``_busy_until``) models the wire: a chunk of n bytes finishes at
    ``max(now - burst, busy_until) + n*8/rate``. The reader sleeps until then (back-pressure on
    the sender) and hands the chunk to the writer stamped ``finish + delay``; the writer releases
    it at that time. Many chunks are in flight at once, so throughput is ``rate`` regardless of
    the delay (a pipe with latency, not stop-and-wait).
    """

    def __init__(self, delay_s: float, rate_bps: float | None, burst_s: float = 0.005) -> None:
        self.delay_s = delay_s
        self.rate_bps = rate_bps
        self.burst_s = burst_s
        self._busy_until = 0.0
        self._lock = threading.Lock()

    def chunk_size(self) -> int:
        if not self.rate_bps:
            return 65536
        return int(min(65536, max(1460, self.rate_bps / 8 * self.burst_s)))

    def reserve(self, nbytes: int) -> float:
        """Book ``nbytes`` on the wire; return when their last bit has been sent."""
        now = time.monotonic()
        if not self.rate_bps:
            return now
        with self._lock:
            start = max(now - self.burst_s, self._busy_until)
            self._busy_until = start + nbytes * 8 / self.rate_bps
            return max(now, self._busy_until)


class _Conn:
    """One proxied TCP connection: two directions, each a reader and a writer thread."""

    def __init__(self, proxy: ShapingProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.accepted_at = time.monotonic()
        self._closed = threading.Event()
        self._eofs = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._setup, name="shaping-proxy-conn", daemon=True).start()

    def _setup(self) -> None:
        p = self.proxy
        # A new connection over a dead network goes nowhere; over a slow one the SYN takes
        # one one-way delay to reach the server.
        if not p._wait_flowing(self._closed):
            return self.close()
        if p.link_up.delay_s:
            time.sleep(p.link_up.delay_s)
        try:
            up = socket.create_connection((p.target_host, p.target_port), timeout=p.connect_timeout)
        except OSError:
            return self.close()
        up.settimeout(None)
        for s in (self.client, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.upstream = up
        if self._closed.is_set():
            return self.close()
        # A real client can send only after the SYN-ACK came back: one round trip.
        self._direction(self.client, up, p.link_up, "up", self.accepted_at + 2 * p.link_up.delay_s)
        self._direction(up, self.client, p.link_down, "down", 0.0)

    def _direction(
        self, src: socket.socket, dst: socket.socket, link: _Link, name: str, start_at: float
    ) -> None:
        queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        cond = threading.Condition()
        state = {"queued": 0}

        def reader() -> None:
            last_release = 0.0
            _sleep_until(start_at, self._closed)
            try:
                while not self._closed.is_set():
                    if not self.proxy._wait_flowing(self._closed):
                        break
                    data = src.recv(link.chunk_size())
                    if not data:
                        with cond:
                            eof_at = max(last_release, time.monotonic() + link.delay_s)
                            queue.append((eof_at, None))
                            cond.notify_all()
                        return
                    finished = link.reserve(len(data))
                    _sleep_until(finished, self._closed)
                    # Data read before a cut stays in flight; it is delivered after restore.
                    if not self.proxy._wait_flowing(self._closed):
                        break
                    release = max(finished + link.delay_s, last_release)
                    last_release = release
                    limit = self.proxy._buffer_limit(link)
                    with cond:
                        while state["queued"] > limit and not self._closed.is_set():
                            cond.wait(0.1)
                        queue.append((release, data))
                        state["queued"] += len(data)
                        cond.notify_all()
                    self.proxy._count(name, len(data))
            except OSError:
                pass
            self.close()

        def writer() -> None:
            try:
                while not self._closed.is_set():
                    with cond:
                        while not queue and not self._closed.is_set():
                            cond.wait(0.1)
                        if self._closed.is_set():
                            break
                        release, data = queue[0]
                    _sleep_until(release, self._closed)
                    if not self.proxy._wait_flowing(self._closed):
                        break
                    with cond:
                        queue.popleft()
                        if data is not None:
                            state["queued"] -= len(data)
                        cond.notify_all()
                    if data is None:
                        dst.shutdown(socket.SHUT_WR)
                        with self._lock:
                            self._eofs += 1
                            done = self._eofs == 2
                        if done:
                            self.close()
                        return
                    dst.sendall(data)
            except OSError:
                pass
            self.close()

        for fn, role in ((reader, "r"), (writer, "w")):
            threading.Thread(target=fn, name=f"shaping-proxy-{name}-{role}", daemon=True).start()

    def close(self, reset: bool = False) -> None:
        """Close both sockets (with RST when ``reset``); idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        for s in (self.client, self.upstream):
            if s is None:
                continue
            with contextlib.suppress(OSError):
                if reset:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        self.proxy._forget(self)


def _sleep_until(deadline: float, stop: threading.Event) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        stop.wait(delay)


class ShapingProxy:
    """TCP proxy on 127.0.0.1 that emulates a slow/far/dead network in front of a server.

    Why: sch_netem is not available in the test kernel, and a proxy is portable. Each direction
    gets ``delay_ms`` of one-way latency and (optionally) ``rate_bps`` of bandwidth; the rate is
    shared by all connections through the proxy, like one access link. ``cut()`` stops all
    forwarding but keeps the connections open (a dead network: no RST, no FIN); ``restore()``
    resumes. ``reset_connections()`` aborts them with RST instead. Delay and rate can be changed
    while running (``set_shape``).
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        delay_ms: float = 0,
        rate_bps: float | None = None,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.connect_timeout = connect_timeout
        self.link_up = _Link(delay_ms / 1000, rate_bps)  # client -> server
        self.link_down = _Link(delay_ms / 1000, rate_bps)  # server -> client
        self.host = listen_host
        self.port = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections_total = 0
        self._conns: set[_Conn] = set()
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopped = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------------
    def start(self) -> ShapingProxy:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.listen_host, self.listen_port))
        sock.listen(128)
        sock.settimeout(0.2)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        self._thread = threading.Thread(target=self._accept_loop, name="shaping-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close every proxied connection."""
        self._stopped.set()
        self._flowing.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for conn in list(self._conns):
            conn.close()

    def __enter__(self) -> ShapingProxy:
        return self.start() if self._sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def cut(self) -> None:
        """Emulate a dead network: forward nothing, keep every connection open."""
        self._flowing.clear()

    def restore(self) -> None:
        """Undo ``cut()``: held data and connections continue."""
        self._flowing.set()

    @property
    def is_cut(self) -> bool:
        return not self._flowing.is_set()

    def set_shape(
        self, delay_ms: float | None = None, rate_bps: float | None | bool = False
    ) -> None:
        """Change delay and/or rate on the fly (``rate_bps=None`` removes the limit)."""
        for link in (self.link_up, self.link_down):
            if delay_ms is not None:
                link.delay_s = delay_ms / 1000
            if rate_bps is not False:
                link.rate_bps = rate_bps  # type: ignore[assignment]

    def reset_connections(self) -> int:
        """Abort every proxied connection with RST (a NAT reboot, a crashed middlebox)."""
        conns = list(self._conns)
        for conn in conns:
            conn.close(reset=True)
        return len(conns)

    @property
    def active_connections(self) -> int:
        return len(self._conns)

    @property
    def delay_ms(self) -> float:
        return self.link_up.delay_s * 1000

    @property
    def rate_bps(self) -> float | None:
        return self.link_up.rate_bps

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    # -- internals -----------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            client.settimeout(None)
            conn = _Conn(self, client)
            with self._lock:
                self._conns.add(conn)
                self.connections_total += 1
            conn.start()

    def _wait_flowing(self, closed: threading.Event) -> bool:
        """Block while cut; False if the connection or proxy was closed meanwhile."""
        while not self._flowing.wait(0.1):
            if closed.is_set() or self._stopped.is_set():
                return False
        return not closed.is_set() and not self._stopped.is_set()

    def _buffer_limit(self, link: _Link) -> float:
        bdp = (link.rate_bps or 0) / 8 * link.delay_s
        return max(4 << 20, 2 * bdp)

    def _count(self, direction: str, n: int) -> None:
        with self._lock:
            if direction == "up":
                self.bytes_up += n
            else:
                self.bytes_down += n

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.discard(conn)


class SSHBed:
    """A remote host with a real sshd, unprivileged accounts with keys, and helpers.

    ``start()`` builds everything (≈0.2-0.4 s) and registers an atexit teardown; ``stop()`` removes
    it all (idempotent). Attributes (valid after ``start()``):

    - ``mode``: "netns" or "loopback"; ``fallback_reason`` says why netns was not used.
    - ``host``/``port``: where sshd listens; ``ns``: namespace name (None in loopback mode).
    - ``user``/``key_file``/``account``: the primary account; ``accounts``: all, by name.
    - ``known_hosts``/``host_key``: sshd's real host key; ``wrong_known_hosts``: another key
      for the same host; ``unauthorized_key_file``: a key sshd refuses.
    - ``ssh_config``/``host_alias``: an ssh_config with ``Host`` aliases
      (``host_alias`` → primary user, ``f"{host_alias}-{name}"`` → each account).
    - ``remote_python``: the interpreter remote commands can run (this machine's Python).
    - ``sshd_log``: sshd's log (LogLevel VERBOSE), ``sshd_pid``, ``sshd_config``, ``tmpdir``.
    """

    def __init__(
        self,
        users: Sequence[str] = DEFAULT_USERS,
        *,
        mode: str | None = None,
        sshd_options: Mapping[str, str] | None = None,
        require_python: bool = True,
    ) -> None:
        """``mode``: "auto" (default, or $RKJ_SSHBED_MODE), "netns" (no fallback) or "loopback".

        ``sshd_options`` are extra/overriding sshd_config keywords (e.g. ClientAliveInterval).
        """
        if not users:
            raise ValueError("at least one account name is needed")
        self.users = list(users)
        self.requested_mode = mode or os.environ.get("RKJ_SSHBED_MODE", "auto")
        if self.requested_mode not in ("auto", "netns", "loopback"):
            raise ValueError(f"bad mode {self.requested_mode!r}")
        self.sshd_options = dict(sshd_options or {})
        self.require_python = require_python
        global _counter
        with _counter_lock:
            _counter += 1
            self.index = _counter
        self.bed_id = f"{NS_PREFIX}-{os.getpid()}-{self.index}"
        self.mode = ""
        self.fallback_reason: str | None = None
        self.ns: str | None = None
        self.veth_host: str | None = None
        self.host_side_address: str | None = None
        self.host = ""
        self.port = 0
        self.tmpdir = ""
        self.accounts: dict[str, Account] = {}
        self.known_hosts = ""
        self.wrong_known_hosts = ""
        self.host_key = ""
        self.unauthorized_key_file = ""
        self.ssh_config = ""
        self.host_alias = "rkjbed"
        self.remote_python = sys.executable
        self.permission_changes: list[str] = []
        self.sshd_config = ""
        self.sshd_log = ""
        self.sshd_pid = 0
        self.startup_seconds = 0.0
        self._sshd: subprocess.Popen[bytes] | None = None
        self._proxies: list[ShapingProxy] = []
        self._listeners: list[NamespaceListener] = []
        self._ns_inode: int | None = None
        self._started = False
        self._stopped = False

    # -- public convenience --------------------------------------------------------------
    @property
    def account(self) -> Account:
        return self.accounts[self.users[0]]

    @property
    def user(self) -> str:
        return self.users[0]

    @property
    def key_file(self) -> str:
        return self.account.key_file

    def __enter__(self) -> SSHBed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SSHBed {self.bed_id} mode={self.mode or '-'} {self.user}@{self.host}:{self.port}>"

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> SSHBed:
        """Build the bed; on any failure tear down what was built and raise SSHBedError."""
        if self._started:
            return self
        reason = unavailable_reason()
        if reason:
            raise SSHBedError(reason)
        t0 = time.monotonic()
        self._started = True
        atexit.register(self.stop)
        try:
            self.tmpdir = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-{self.index}-")
            # Accounts must traverse it to read authorized_keys; they cannot list it.
            os.chmod(self.tmpdir, 0o711)
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
            self._make_network()
            self._make_accounts()
            self._make_keys()
            self._start_sshd()
            self._write_client_files()
            self._check_python()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Tear everything down; safe to call repeatedly and after a partial start."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        for proxy in self._proxies:
            with contextlib.suppress(Exception):
                proxy.stop()
        for listener in self._listeners:
            with contextlib.suppress(Exception):
                listener.stop()
        if self._sshd is not None:
            with contextlib.suppress(Exception):
                self._sshd.terminate()
                try:
                    self._sshd.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._sshd.kill()
                    self._sshd.wait(timeout=5)
        # Sessions (sshd children, user processes) this bed started.
        with contextlib.suppress(Exception):
            kill_pids(self._bed_pids())
        if self.ns is not None:
            with contextlib.suppress(Exception):
                if self.veth_host:
                    _run(["ip", "link", "del", self.veth_host], check=False)
                _run(["ip", "netns", "del", self.ns], check=False)
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    # -- building ------------------------------------------------------------------------
    def _make_network(self) -> None:
        if self.requested_mode == "loopback":
            self._use_loopback("loopback mode requested")
            return
        try:
            with file_lock(os.path.basename(_LOCK_FILE), timeout=30):
                cleanup_stale()
                self._make_namespace()
        except SSHBedError as exc:
            if self.ns is not None:
                if self.veth_host:
                    _run(["ip", "link", "del", self.veth_host], check=False)
                _run(["ip", "netns", "del", self.ns], check=False)
                self.ns = None
                self.veth_host = None
            if self.requested_mode == "netns":
                raise
            self._use_loopback(str(exc))

    def _use_loopback(self, reason: str) -> None:
        self.mode = "loopback"
        self.fallback_reason = reason
        self.host = "127.0.0.1"

    def _pick_subnet(self) -> int:
        used = _run(["ip", "-o", "-4", "addr"], check=False).stdout
        used += _run(["ip", "-4", "route", "show", "table", "all"], check=False).stdout
        start = os.getpid() % 250
        for i in range(250):
            x = (start + self.index - 1 + i) % 250 + 1
            if f"{SUBNET_BASE}.{x}." not in used:
                return x
        raise SSHBedError(f"no free {SUBNET_BASE}.X.0/24 subnet")

    def _make_namespace(self) -> None:
        if shutil.which("ip") is None or shutil.which("nft") is None:
            raise SSHBedError("ip/nft not installed")
        x = self._pick_subnet()
        ns = self.bed_id
        veth_host = f"{NS_PREFIX}{os.getpid()}n{self.index}h"[:15]
        veth_ns = f"{NS_PREFIX}{os.getpid()}n{self.index}p"[:15]
        host_ip, ns_ip = f"{SUBNET_BASE}.{x}.1", f"{SUBNET_BASE}.{x}.2"
        _run(["ip", "netns", "add", ns])
        self.ns = ns
        _run(["ip", "link", "add", veth_host, "type", "veth", "peer", "name", veth_ns, "netns", ns])
        self.veth_host = veth_host
        _run(["ip", "addr", "add", f"{host_ip}/24", "dev", veth_host])
        _run(["ip", "link", "set", veth_host, "up"])
        nsx = ["ip", "netns", "exec", ns]
        _run([*nsx, "ip", "link", "set", "lo", "up"])
        _run([*nsx, "ip", "addr", "add", f"{ns_ip}/24", "dev", veth_ns])
        _run([*nsx, "ip", "link", "set", veth_ns, "up"])
        ruleset = (
            "table inet rkjfw {\n"
            "  chain input {\n"
            "    type filter hook input priority 0; policy drop;\n"
            "    iif lo accept\n"
            "    ct state established,related accept\n"
            "    tcp dport 22 accept\n"
            "  }\n"
            "}\n"
        )
        _run([*nsx, "nft", "-f", "-"], input=ruleset)
        self._ns_inode = os.stat(f"/run/netns/{ns}").st_ino
        self.mode = "netns"
        self.host_side_address = host_ip
        self.host = ns_ip

    def _make_accounts(self) -> None:
        for name in self.users:
            try:
                pw = pwd.getpwnam(name)
            except KeyError:
                proc = _run(
                    [
                        "useradd",
                        "--create-home",
                        "--shell",
                        "/bin/bash",
                        "--comment",
                        "rk_jupyter SSH test bed",
                        name,
                    ],
                    check=False,
                )
                try:  # a concurrent run may have created it meanwhile
                    pw = pwd.getpwnam(name)
                except KeyError:
                    raise SSHBedError(f"useradd {name}: {proc.stderr.strip()}") from None
            if pw.pw_uid == 0:
                raise SSHBedError(f"refusing to use {name}: it is uid 0")
            # A "!" password locks the account for sshd too; "*" means "no password".
            shadow = _run(["getent", "shadow", name], check=False).stdout.split(":")
            if len(shadow) < 2 or shadow[1] != "*":
                _run(["usermod", "-p", "*", name])
            if not os.path.isdir(pw.pw_dir):
                os.makedirs(pw.pw_dir, mode=0o750)
                os.chown(pw.pw_dir, pw.pw_uid, pw.pw_gid)
            self.accounts[name] = Account(name, pw.pw_uid, pw.pw_gid, pw.pw_dir, "", "")

    def _keygen(self, path: str, comment: str) -> str:
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
        return Path(path + ".pub").read_text().strip()

    def _make_keys(self) -> None:
        d = self.tmpdir
        self.host_key_file = os.path.join(d, "ssh_host_ed25519_key")
        self.host_key = self._keygen(self.host_key_file, f"{self.bed_id}-host")
        self._wrong_host_key = self._keygen(os.path.join(d, "wrong_host_key"), "wrong-host")
        self.unauthorized_key_file = os.path.join(d, "unauthorized_key")
        self._keygen(self.unauthorized_key_file, "unauthorized")
        ak_dir = os.path.join(d, "authorized_keys")
        os.makedirs(ak_dir)
        os.chmod(ak_dir, 0o755)
        for name, acc in self.accounts.items():
            acc.key_file = os.path.join(d, f"id_ed25519_{name}")
            acc.public_key = self._keygen(acc.key_file, f"{name}@{self.bed_id}")
            os.chmod(acc.key_file, 0o600)
            ak = os.path.join(ak_dir, name)
            Path(ak).write_text(acc.public_key + "\n")
            os.chmod(ak, 0o644)

    def _sshd_config_text(self) -> str:
        opts: dict[str, str] = {
            "Port": str(self.port),
            "ListenAddress": self.host,
            "AddressFamily": "inet",
            "HostKey": self.host_key_file,
            "PidFile": os.path.join(self.tmpdir, "sshd.pid"),
            "AuthorizedKeysFile": os.path.join(self.tmpdir, "authorized_keys", "%u"),
            "PubkeyAuthentication": "yes",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "UsePAM": "no",
            "StrictModes": "no",
            "PermitRootLogin": "no",
            "AllowTcpForwarding": "yes",
            "AllowStreamLocalForwarding": "yes",
            "StreamLocalBindUnlink": "yes",
            "GatewayPorts": "no",
            "X11Forwarding": "no",
            "PrintMotd": "no",
            "PrintLastLog": "no",
            "UseDNS": "no",
            "LogLevel": "VERBOSE",
            "MaxSessions": "200",
            "MaxStartups": "200:30:400",
            "MaxAuthTries": "6",
            "LoginGraceTime": "30",
            # Tags every session process so the bed can find (and clean up) its own.
            "SetEnv": f"RKJ_SSHBED={self.bed_id}",
            "Subsystem": "sftp internal-sftp",
        }
        opts.update(self.sshd_options)
        return "".join(f"{k} {v}\n" for k, v in opts.items())

    def _start_sshd(self) -> None:
        self.sshd_config = os.path.join(self.tmpdir, "sshd_config")
        self.sshd_log = os.path.join(self.tmpdir, "sshd.log")
        attempts = 1 if self.mode == "netns" else 5
        for attempt in range(attempts):
            self.port = 22 if self.mode == "netns" else free_loopback_port()
            Path(self.sshd_config).write_text(self._sshd_config_text())
            _run([SSHD, "-t", "-f", self.sshd_config])
            Path(self.sshd_log).write_text("")
            argv = [SSHD, "-D", "-f", self.sshd_config, "-E", self.sshd_log]
            if self.ns:
                argv = ["ip", "netns", "exec", self.ns, *argv]
            # ip netns exec execs sshd, so this pid is the daemon's.
            self._sshd = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
            self.sshd_pid = self._sshd.pid
            if self._wait_sshd_ready(timeout=10):
                return
            log = Path(self.sshd_log).read_text()
            with contextlib.suppress(Exception):
                self._sshd.kill()
                self._sshd.wait(timeout=5)
            if "Address already in use" not in log or attempt == attempts - 1:
                raise SSHBedError(f"sshd did not start: {log.strip()}")

    def _wait_sshd_ready(self, timeout: float) -> bool:
        """Wait for sshd's "Server listening" line (no probe connection pollutes the log)."""
        deadline = time.monotonic() + timeout
        assert self._sshd is not None
        while time.monotonic() < deadline:
            if self._sshd.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                if "Server listening on" in Path(self.sshd_log).read_text():
                    return True
            time.sleep(0.01)
        return False

    def _write_client_files(self) -> None:
        name = _known_hosts_name(self.host, self.port)
        self.known_hosts = os.path.join(self.tmpdir, "known_hosts")
        self.wrong_known_hosts = os.path.join(self.tmpdir, "wrong_known_hosts")
        Path(self.known_hosts).write_text(f"{name} {self._key_only(self.host_key)}\n")
        Path(self.wrong_known_hosts).write_text(f"{name} {self._key_only(self._wrong_host_key)}\n")
        self.ssh_config = os.path.join(self.tmpdir, "ssh_config")
        blocks = []
        for alias, acc in [(self.host_alias, self.account)] + [
            (f"{self.host_alias}-{n}", a) for n, a in self.accounts.items()
        ]:
            blocks.append(
                f"Host {alias}\n"
                f"    HostName {self.host}\n"
                f"    Port {self.port}\n"
                f"    User {acc.name}\n"
                f"    IdentityFile {acc.key_file}\n"
                f"    IdentitiesOnly yes\n"
                f"    UserKnownHostsFile {self.known_hosts}\n"
                f"    GlobalKnownHostsFile /dev/null\n"
                f"    StrictHostKeyChecking yes\n"
                f"    BatchMode yes\n"
            )
        Path(self.ssh_config).write_text("\n".join(blocks))

    @staticmethod
    def _key_only(pub_line: str) -> str:
        return " ".join(pub_line.split()[:2])

    def _check_python(self) -> None:
        """Make sure the accounts can run ``remote_python`` and import installed packages.

        Why: the remote's Python is this machine's, which may live under /root (0700). If the
        accounts cannot reach it, add o+x (traverse, not list) to the directories in the way.
        """
        probe_mods = [m for m in ("paramiko", "jupyter_client", "mathics") if _has_module(m)]
        script = (
            "import importlib.util,sys\n"
            "for m in sys.argv[1:]:\n"
            "    s = importlib.util.find_spec(m); open(s.origin, 'rb').close()\n"
            "print(sys.version)\n"
        )
        cmd = shlex.join([self.remote_python, "-c", script, *probe_mods])

        def ok() -> bool:
            return all(self.run_remote(cmd, user=u).returncode == 0 for u in self.users)

        if ok():
            return
        for path in self._python_paths():
            for parent in [*reversed(Path(path).parents), Path(path)]:
                with contextlib.suppress(OSError):
                    st = os.stat(parent)
                    if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH:
                        os.chmod(parent, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
                        self.permission_changes.append(f"chmod o+x {parent}")
        if not ok() and self.require_python:
            res = self.run_remote(cmd)
            raise SSHBedError(
                f"{self.user} cannot run {self.remote_python}: {res.stderr.strip()} "
                f"(changes made: {self.permission_changes})"
            )

    def _python_paths(self) -> list[str]:
        import site
        import sysconfig

        paths = {
            self.remote_python,
            os.path.realpath(self.remote_python),
            sys.prefix,
            sys.base_prefix,
            sysconfig.get_paths()["stdlib"],
        }
        with contextlib.suppress(AttributeError):
            paths.update(site.getsitepackages())
        return sorted(p for p in paths if p)

    # -- ssh client helpers --------------------------------------------------------------
    def ssh_argv(
        self,
        *remote_cmd: str,
        user: str | None = None,
        host: str | None = None,
        port: int | None = None,
        key_file: str | None = None,
        known_hosts: str | None = None,
        options: Sequence[str] = (),
    ) -> list[str]:
        """An ``ssh`` command line with strict host key checking and only the bed's key."""
        acc = self.accounts[user or self.user]
        return [
            "ssh", "-F", "/dev/null",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=10",
            "-i", key_file or acc.key_file,
            "-p", str(port or self.port),
            *options,
            f"{acc.name}@{host or self.host}",
            *remote_cmd,
        ]  # fmt: skip

    def ssh(
        self, *remote_cmd: str, timeout: float = 30, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ssh_argv(...)`` and capture its output."""
        return subprocess.run(
            self.ssh_argv(*remote_cmd, **kw),
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def host_pkey(self) -> Any:
        """The host key as a paramiko PKey (what sshtunnel's ``ssh_host_key`` wants)."""
        import paramiko

        kind, b64 = self.host_key.split()[:2]
        return paramiko.PKey.from_type_string(kind, base64.b64decode(b64))

    def paramiko_client(self, user: str | None = None, **connect_kw: Any) -> Any:
        """A connected paramiko SSHClient (strict: RejectPolicy + the bed's known_hosts)."""
        import paramiko

        client = paramiko.SSHClient()
        client.load_host_keys(self.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        kw: dict[str, Any] = dict(
            hostname=self.host, port=self.port, username=user or self.user,
            key_filename=self.accounts[user or self.user].key_file, look_for_keys=False,
            allow_agent=False, timeout=10, banner_timeout=10, auth_timeout=10,
        )  # fmt: skip
        kw.update(connect_kw)
        client.connect(**kw)
        return client

    # -- remote-side helpers -------------------------------------------------------------
    def remote_argv(self, cmd: str, user: str | None = None) -> list[str]:
        """argv that runs ``sh -c cmd`` as the account on the remote, with a clean login env.

        Why not ssh: this needs no network, so it also works while a test has the network cut.
        Why setpriv, not runuser/su: it execs (no parent lingering; runuser waits 2 s on
        SIGTERM), so a Popen's pid is the command's. The environment mirrors an ssh session's.
        """
        acc = self.accounts[user or self.user]
        env = [
            f"HOME={acc.home}", f"USER={acc.name}", f"LOGNAME={acc.name}", "SHELL=/bin/bash",
            "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", f"RKJ_SSHBED={self.bed_id}",
        ]  # fmt: skip
        ids = [f"--reuid={acc.uid}", f"--regid={acc.gid}", "--init-groups"]
        argv = ["setpriv", *ids, "--", "env", "-i", *env, "sh", "-c", cmd]
        if self.ns:
            argv = ["ip", "netns", "exec", self.ns, *argv]
        return argv

    def run_remote(
        self, cmd: str, user: str | None = None, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command as the account on the remote; never raises on exit status."""
        acc = self.accounts[user or self.user]
        return subprocess.run(
            self.remote_argv(cmd, user), capture_output=True, text=True, timeout=timeout,
            input=input, cwd=acc.home, stdin=None if input is not None else subprocess.DEVNULL,
        )  # fmt: skip

    def popen_remote(self, cmd: str, user: str | None = None, **kw: Any) -> subprocess.Popen[Any]:
        """Start a long-running command as the account (killed at teardown if still alive)."""
        acc = self.accounts[user or self.user]
        kw.setdefault("cwd", acc.home)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.remote_argv(cmd, user), **kw)

    def run_in_namespace(
        self, argv: Sequence[str], timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run argv as root on the remote host (inside the namespace; plain in loopback)."""
        full = ["ip", "netns", "exec", self.ns, *argv] if self.ns else list(argv)
        return subprocess.run(
            full, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )

    def _bed_pids(self) -> list[int]:
        """Processes belonging to this bed: in its namespace, or tagged by its environment."""
        pids: list[int] = []
        tag = f"RKJ_SSHBED={self.bed_id}".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            pid = int(entry)
            try:
                if self._ns_inode is not None:
                    if os.stat(f"/proc/{pid}/ns/net").st_ino == self._ns_inode:
                        pids.append(pid)
                        continue
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    if tag in fh.read().split(b"\0"):
                        pids.append(pid)
                        continue
                with open(f"/proc/{pid}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == self.sshd_pid:
                        pids.append(pid)  # session sshd (loopback mode)
            except (OSError, ValueError, IndexError):
                continue
        return pids

    def remote_processes(
        self, pattern: str | None = None, user: str | None = None
    ) -> list[tuple[int, str]]:
        """(pid, cmdline) of the account's processes on this bed's remote, matching a regex."""
        acc = self.accounts[user or self.user]
        mine = set(self._bed_pids())
        out = _run(["ps", "-ww", "-u", str(acc.uid), "-o", "pid=,args="], check=False).stdout
        result: list[tuple[int, str]] = []
        for line in out.splitlines():
            parts = line.strip().split(None, 1)
            if not parts:
                continue
            pid, args = int(parts[0]), (parts[1] if len(parts) > 1 else "")
            if pid in mine and (pattern is None or re.search(pattern, args)):
                result.append((pid, args))
        return result

    def kill_remote_processes(self, pattern: str | None = None, user: str | None = None) -> int:
        """Kill (by pid) the account's processes on this bed that match ``pattern``."""
        pids = [pid for pid, _ in self.remote_processes(pattern, user)]
        kill_pids(pids)
        return len(pids)

    def established_ssh_connections(self) -> int:
        """Server-side established TCP connections to sshd (what the remote host sees)."""
        filt = f"( sport = :{self.port} )"
        res = self.run_in_namespace(["ss", "-Htn", "state", "established", filt])
        if res.returncode != 0:
            raise SSHBedError(f"ss failed: {res.stderr.strip()}")
        return sum(1 for line in res.stdout.splitlines() if line.strip())

    def wait_established(self, count: int, timeout: float = 10) -> int:
        """Poll until ``established_ssh_connections() == count``; return the last value."""
        deadline = time.monotonic() + timeout
        n = self.established_ssh_connections()
        while n != count and time.monotonic() < deadline:
            time.sleep(0.05)
            n = self.established_ssh_connections()
        return n

    # -- sshd log ------------------------------------------------------------------------
    def sshd_log_text(self) -> str:
        return Path(self.sshd_log).read_text(errors="replace")

    def count_log(self, pattern: str) -> int:
        """Lines of the sshd log matching a regex, e.g. r"Accepted publickey for rkjtest"."""
        return sum(1 for line in self.sshd_log_text().splitlines() if re.search(pattern, line))

    def wait_for_log(self, pattern: str, count: int = 1, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count_log(pattern) >= count:
                return True
            time.sleep(0.05)
        return False

    # -- firewall ------------------------------------------------------------------------
    def probe_from_root(self, port: int, timeout: float = 1.0) -> str:
        """Connect from the root namespace (the Jupyter side) to the remote's ``port``."""
        return probe_port(self.host, port, timeout)

    def probe_from_inside(self, port: int, host: str | None = None, timeout: float = 1.0) -> str:
        """Connect from inside the remote host to ``host`` (default: its own address)."""
        argv = [sys.executable, "-c", _PROBE_SCRIPT, host or self.host, str(port), str(timeout)]
        res = self.run_in_namespace(argv, timeout=timeout + 15)
        return res.stdout.strip() or f"error: {res.stderr.strip()}"

    def listen_in_namespace(self, port: int = 0, host: str | None = None) -> NamespaceListener:
        """Start a TCP listener on the remote (as root) and wait until it is bound.

        Default address: all of the namespace's addresses in netns mode, 127.0.0.1 in loopback
        mode (never the machine's real interfaces).
        """
        if host is None:
            host = "0.0.0.0" if self.ns else "127.0.0.1"
        argv = [sys.executable, "-u", "-c", _LISTENER_SCRIPT, host, str(port)]
        if self.ns:
            argv = ["ip", "netns", "exec", self.ns, *argv]
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            start_new_session=True,
        )  # fmt: skip
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("ready"):
            proc.kill()
            proc.wait(timeout=5)
            raise SSHBedError(f"listener on port {port} did not start")
        listener = NamespaceListener(proc, self.host, int(line.split()[1]))
        self._listeners.append(listener)
        return listener

    def check_firewall(self, port: int = 0, timeout: float = 1.0) -> FirewallCheck:
        """Prove the firewall: a listener on ``port`` is reachable inside, dropped outside.

        Takes ~``timeout`` seconds (the dropped connect must time out). The port-22 probe shows
        up in the sshd log as one extra "Connection from" line.
        """
        if self.mode != "netns":
            raise SSHBedError(f"no firewall in {self.mode} mode ({self.fallback_reason})")
        listener = self.listen_in_namespace(port)
        try:
            return FirewallCheck(
                port=listener.port,
                inside=self.probe_from_inside(listener.port, timeout=timeout),
                outside=self.probe_from_root(listener.port, timeout=timeout),
                ssh_outside=self.probe_from_root(self.port, timeout=timeout),
            )
        finally:
            listener.stop()
            self._listeners.remove(listener)

    # -- shaping -------------------------------------------------------------------------
    def proxy(self, delay_ms: float = 25, rate_bps: float | None = 2_000_000) -> ShapingProxy:
        """A started ShapingProxy on 127.0.0.1 in front of sshd (stopped with the bed).

        The sshd host key is also added to ``known_hosts`` under ``[127.0.0.1]:proxy.port``
        (and the wrong key to ``wrong_known_hosts``), so strict checking works through it.
        """
        p = ShapingProxy(self.host, self.port, delay_ms, rate_bps).start()
        self._proxies.append(p)
        name = _known_hosts_name(p.host, p.port)
        with open(self.known_hosts, "a") as fh:
            fh.write(f"{name} {self._key_only(self.host_key)}\n")
        with open(self.wrong_known_hosts, "a") as fh:
            fh.write(f"{name} {self._key_only(self._wrong_host_key)}\n")
        return p


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _main() -> None:
    """``python tests/sshbed.py``: start a bed, print how to reach it, wait for Ctrl-C."""
    with SSHBed() as bed:
        print(f"mode={bed.mode} started in {bed.startup_seconds:.2f}s")
        print(shlex.join(bed.ssh_argv()))
        print(f"ssh -F {bed.ssh_config} {bed.host_alias}")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    _main()
