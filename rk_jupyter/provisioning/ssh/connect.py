"""Opening one authenticated SSH connection (through jump hosts), and keeping watch over it.

paramiko's Transport is used directly, not SSHClient, to order the host-key algorithms by the
known keys (as ssh does), to bound every phase with ``connect_timeout`` (TCP connect, banner,
key exchange, each authentication attempt), and to turn every failure into a message that
names the cause and the fix.  Authentication is by public key only: ssh-agent keys, then
identity files (a passphrase-protected file is skipped with a hint to ``ssh-add`` it).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import queue
import socket
import threading
import time
import weakref
from typing import Any

import paramiko

from ..errors import TransportError
from .forward import Forwarder
from .hostkeys import HostKeyChecker, fingerprint
from .target import SSHTarget

log = logging.getLogger("rk_jupyter.ssh")

KEEPALIVE_COUNT_MAX = 3  # like ssh's ServerAliveCountMax


class _OwnTransportErrors(logging.Filter):
    """paramiko logs what ends a transport as an ERROR plus a traceback, line by line, from
    the transport's thread: twenty lines for every reconnect attempt into a network that is
    still down.  Our callers report the same failure in one line that names the cause and the
    fix, so for the transports made here those records are demoted to DEBUG."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and threading.current_thread() in self.threads:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_PARAMIKO_ERRORS = _OwnTransportErrors()
logging.getLogger("paramiko.transport").addFilter(_PARAMIKO_ERRORS)


class SSHConnection:
    """An authenticated connection; ``jumps`` are the connections it tunnels through.

    A watchdog thread sends a keepalive request every ``keepalive`` seconds and declares the
    connection dead (and closes it) when one stays unanswered for KEEPALIVE_COUNT_MAX
    intervals, so that a silently dead network is noticed (paramiko's own keepalive does not
    wait for answers).
    """

    backend = "paramiko"
    description = "paramiko"

    def __init__(self, target: SSHTarget, transport: paramiko.Transport,
                 jumps: list[SSHConnection], keepalive: float) -> None:
        self.target = target
        self.transport = transport
        self.jumps = jumps
        self.keepalive = keepalive
        self.reason = ""
        self._closed = threading.Event()
        self._probe_sent: float | None = None
        if keepalive > 0:
            for work, name in ((self._probe, "probe"), (self._watch, "watch")):
                threading.Thread(target=work, name=f"ssh-keepalive-{name}-{target.hostname}",
                                 daemon=True).start()

    def alive(self) -> bool:
        return not self.reason and not self._closed.is_set() and self.transport.is_active()

    def death_reason(self) -> str:
        if self.reason:
            return self.reason
        if self._closed.is_set():
            return f"the SSH connection to {self.target} was closed"
        if not self.transport.is_active():
            detail = self.transport.saved_exception
            why = f"{type(detail).__name__}: {detail}" if detail else \
                "closed by the server or the network"
            return f"the SSH connection to {self.target} was lost ({why})"
        return ""

    def close(self) -> None:
        """Close the connection and its jump connections; idempotent."""
        self._closed.set()
        self.transport.close()
        for jump in reversed(self.jumps):
            jump.close()

    # -- remote commands -------------------------------------------------------------------

    def open_session(self, timeout: float) -> paramiko.Channel:
        try:
            return self.transport.open_session(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"cannot open an SSH session channel to {self.target}: "
                                 f"{exc or type(exc).__name__}", code="ssh.channel") from None

    def exec(self, command: str, timeout: float, combine: bool = True) -> paramiko.Channel:
        """Start ``command`` on a new channel (stderr merged into stdout unless ``combine`` is
        False; then reading the channel gives stdout alone).

        paramiko waits for the server's answer to an exec request without a timeout; a timer
        closes the channel after ``timeout`` seconds, which ends that wait.
        """
        channel = self.open_session(timeout)
        channel.set_combine_stderr(combine)
        channel.settimeout(timeout)
        timer = threading.Timer(timeout, channel.close)
        timer.daemon = True
        timer.start()
        try:
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            channel.close()
            why = f"no answer within {timeout:g} s" if timer.finished.is_set() else str(exc)
            raise TransportError(f"cannot run a command on {self.target}: {why}",
                                 code="ssh.command-failed") from None
        finally:
            timer.cancel()
        return channel

    def run(self, command: str, timeout: float, combine: bool = True) -> tuple[int, str]:
        """Run a short command (stdin empty); return its exit status and combined output
        (stdout alone if ``combine`` is False: what an SFTP session would see).

        Raises TransportError when it does not finish within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        channel = self.exec(command, timeout, combine)
        try:
            channel.shutdown_write()
            chunks = []
            while True:
                channel.settimeout(max(deadline - time.monotonic(), 0.01))
                data = channel.recv(65536)
                if not data:
                    break
                chunks.append(data)
            if not channel.status_event.wait(max(deadline - time.monotonic(), 0.01)):
                raise TimeoutError
            return channel.recv_exit_status(), b"".join(chunks).decode("utf-8", "replace")
        except TimeoutError:
            raise TransportError(f"a remote command on {self.target} did not finish within "
                                 f"{timeout:g} s", code="ssh.command-timeout") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"a remote command on {self.target} failed: {exc}",
                                 code="ssh.command-failed") from None
        finally:
            channel.close()

    def open_sftp(self, timeout: float) -> paramiko.SFTPClient:
        try:
            sftp = paramiko.SFTPClient.from_transport(self.transport)
        except (paramiko.SSHException, paramiko.SFTPError, OSError, EOFError) as exc:
            raise TransportError(f"cannot start SFTP on {self.target}: {exc}",
                                 "is the sftp subsystem enabled in its sshd_config?",
                                 code="ssh.sftp") from None
        if sftp is None:
            raise TransportError(f"the server {self.target} refused the sftp subsystem",
                                 "enable it in its sshd_config (Subsystem sftp ...)",
                                 code="ssh.sftp")
        sftp.get_channel().settimeout(timeout)
        return sftp

    def upload(self, data: bytes, path: str, timeout: float) -> bool:
        """Copy ``data`` to ``~/path`` over SFTP unless it is there; True if copied."""
        from .deploy import upload  # deploy imports the agent's packaging: only when used

        sftp = self.open_sftp(timeout)
        try:
            return upload(sftp, data, path)
        finally:
            sftp.close()

    def forward(self, destination: tuple[str, int], timeout: float) -> Forwarder:
        """A local loopback port forwarded to ``destination`` on the remote host."""
        return Forwarder(self, destination, timeout)

    def forwarding_refused(self, port: int, timeout: float) -> TransportError | None:
        """Why a forwarded channel to the agent's ``port`` cannot be opened, or None if it
        can: asked only after a kernel's link through the forward failed, to name the cause."""
        try:
            channel = self.transport.open_channel(
                "direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0), timeout=timeout)
        except paramiko.ChannelException as exc:
            if exc.code == paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED:
                return TransportError(
                    f"the SSH server {self.target} refuses port forwarding ({exc.text})",
                    "rk_jupyter reaches its agent through a forwarded port. Ask its "
                    "administrator to allow it for your account (AllowTcpForwarding local or "
                    "yes in sshd_config, and no restrict/no-port-forwarding option on your key "
                    "in authorized_keys)", code="ssh.forwarding-refused")
            return TransportError(f"the SSH server {self.target} cannot forward to the "
                                  f"agent: {exc.text}", code="ssh.forwarding-failed")
        except (paramiko.SSHException, OSError, EOFError):
            return None
        channel.close()
        return None

    # -- keepalive ---------------------------------------------------------------------------

    def _probe(self) -> None:
        while not self._closed.wait(self.keepalive):
            if not self.transport.is_active():
                return
            self._probe_sent = time.monotonic()
            # OpenSSH answers an unknown global request with a failure: any answer will do.
            self.transport.global_request("keepalive@openssh.com", wait=True)
            self._probe_sent = None

    def _watch(self) -> None:
        limit = self.keepalive * KEEPALIVE_COUNT_MAX
        while not self._closed.wait(min(1.0, self.keepalive)):
            sent = self._probe_sent
            if sent is not None and time.monotonic() - sent > limit:
                self.reason = (f"the SSH connection to {self.target} is dead: no answer to "
                               f"keepalive for {limit:g} s")
                log.error("%s", self.reason)
                self.close()
                return
            if not self.transport.is_active():
                return


def connect(target: SSHTarget, policy: str, timeout: float, keepalive: float) -> SSHConnection:
    """Connect (through ``target.jumps``), check the host key, authenticate.

    Blocking; each phase is bounded by ``timeout``.  Raises TransportError naming the cause.
    """
    hops = (*target.jumps, target)
    jumps: list[SSHConnection] = []
    try:
        try:
            sock: Any = _tcp_connect(hops[0], timeout)
        except TransportError as exc:
            if not target.jumps:
                raise
            raise TransportError(f"the jump host {hops[0]} (proxy_jump, or ProxyJump in "
                                 f"ssh_config) cannot be reached: {exc.cause}", exc.fix,
                                 code="ssh.jump-unreachable") from None
        for hop, next_hop in zip(hops, hops[1:], strict=False):
            jumps.append(_handshake(hop, sock, policy, timeout, keepalive=0))
            sock = _through(jumps[-1], next_hop, timeout)
        connection = _handshake(target, sock, policy, timeout, keepalive)
    except BaseException:
        for jump in reversed(jumps):
            jump.close()
        raise
    connection.jumps = jumps
    return connection


def resolve(hop: SSHTarget, timeout: float) -> list[Any]:
    """getaddrinfo bounded by ``timeout`` (it takes none, and a resolver that does not answer
    makes it wait tens of seconds): on a daemon thread, abandoned when late.

    The one place a name that does not resolve is diagnosed (``ssh.dns-unresolved``,
    ``ssh.dns-timeout``): a connect and the doctor's resolve step both call it."""
    box: queue.Queue[Any] = queue.Queue(1)

    def work() -> None:
        try:
            box.put(socket.getaddrinfo(hop.hostname, hop.port, type=socket.SOCK_STREAM))
        except OSError as exc:
            box.put(exc)

    threading.Thread(target=work, name=f"ssh-resolve-{hop.hostname}", daemon=True).start()
    try:
        found = box.get(timeout=timeout)
    except queue.Empty:
        raise TransportError(f"the resolver gave no answer for {hop.hostname!r} within "
                             f"{timeout:g} s (connect_timeout)",
                             "check the DNS servers in /etc/resolv.conf, or give the host as "
                             "an IP address", code="ssh.dns-timeout") from None
    if isinstance(found, OSError):
        why = found.strerror if isinstance(found, socket.gaierror) else str(found)
        raise TransportError(
            f"cannot resolve the host name {hop.hostname!r} ({why})",
            "check host in the kernelspec, or the HostName of that alias in your ssh_config; "
            "a name known only inside a VPN or a private network needs that network (try: "
            f"getent hosts {hop.hostname})", code="ssh.dns-unresolved")
    return found


def _tcp_connect(hop: SSHTarget, timeout: float) -> socket.socket:
    where = f"{hop.hostname}:{hop.port}"
    started = time.monotonic()
    sock = None
    try:
        for family, kind, proto, _, address in resolve(hop, timeout):  # in order, as ssh
            sock = socket.socket(family, kind, proto)
            sock.settimeout(max(timeout - (time.monotonic() - started), 0.01))
            try:
                sock.connect(address)
                break
            except OSError as exc:
                sock.close()
                error, sock = exc, None
        if sock is None:
            raise error
    except ConnectionRefusedError:
        raise TransportError(f"{where} refused the connection",
                             "is sshd running there, and is the port right (port in the "
                             "kernelspec, or Port in ssh_config)?", code="ssh.refused") from None
    except TimeoutError:
        raise TransportError(f"no answer from {where} within {timeout:g} s (connect_timeout)",
                             "the host is down, or a firewall drops SSH on the way; check the "
                             "host and port, and that SSH is let through (VPN?); on a slow "
                             "network raise connect_timeout in the kernelspec",
                             code="ssh.no-answer") from None
    except OSError as exc:
        raise TransportError(f"cannot reach {where}: {exc.strerror or exc}",
                             "check the host and the network route to it",
                             code="ssh.unreachable") from None
    log.info("TCP connection to %s (%s) in %.2f s", where, sock.getpeername()[0],
             time.monotonic() - started)
    # One cell is a few small writes: do not let Nagle hold them for an ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _through(jump: SSHConnection, hop: SSHTarget, timeout: float) -> paramiko.Channel:
    try:
        return jump.transport.open_channel("direct-tcpip", (hop.hostname, hop.port),
                                           ("127.0.0.1", 0), timeout=timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise TransportError(f"the jump host {jump.target} could not connect to "
                             f"{hop.hostname}:{hop.port}: {exc}",
                             code="ssh.jump-tunnel") from None


# -- the phases one by one, public for ``rk-jupyter doctor``, which times and reports each ----


def tcp_connect(hop: SSHTarget, timeout: float) -> socket.socket:
    """The TCP connection to ``hop`` (TransportError: unresolvable, refused, no answer)."""
    return _tcp_connect(hop, timeout)


def tunnel(jump: SSHConnection, hop: SSHTarget, timeout: float) -> paramiko.Channel:
    """A channel from the jump host ``jump`` to ``hop``'s SSH port."""
    return _through(jump, hop, timeout)


def start_transport(hop: SSHTarget, sock: Any, policy: str, timeout: float) -> paramiko.Transport:
    """Key exchange and host-key check on ``sock``, no login yet; closed again on failure."""
    checker = HostKeyChecker(hop, policy)
    transport = paramiko.Transport(sock)
    _PARAMIKO_ERRORS.threads.add(transport)
    transport.banner_timeout = timeout
    transport.handshake_timeout = timeout
    transport.auth_timeout = timeout
    options = transport.get_security_options()
    options.key_types = checker.preferred_key_types(tuple(options.key_types))
    try:
        try:
            transport.start_client(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"{hop.hostname}:{hop.port} did not complete the SSH "
                                 f"handshake within {timeout:g} s: {exc}",
                                 code="ssh.handshake") from None
        if not transport.is_active() or transport.host_key is None:
            # start_client returns without an error when its timeout passes mid-exchange.
            raise TransportError(f"{hop.hostname}:{hop.port} did not complete the SSH "
                                 f"handshake within {timeout:g} s (no answer)",
                                 code="ssh.handshake")
        key = transport.get_remote_server_key()
        checker.verify(key)
        log.info("host key of %s: %s %s", hop.known_hosts_name, key.get_name(),
                 fingerprint(key))
    except BaseException:
        transport.close()
        raise
    return transport


def authenticate(transport: paramiko.Transport, hop: SSHTarget) -> str:
    """Log in with the first key the server accepts; return that key's label (its file, or
    ``ssh-agent key SHA256:...``)."""
    return _authenticate(transport, hop)


def _handshake(hop: SSHTarget, sock: Any, policy: str, timeout: float,
               keepalive: float) -> SSHConnection:
    transport = start_transport(hop, sock, policy, timeout)
    try:
        _authenticate(transport, hop)
    except BaseException:
        transport.close()
        raise
    return SSHConnection(hop, transport, [], keepalive)


def _agent_keys() -> list[paramiko.AgentKey]:
    if not os.environ.get("SSH_AUTH_SOCK"):
        return []
    try:
        return list(paramiko.Agent().get_keys())
    except (paramiko.SSHException, OSError) as exc:
        log.warning("ssh-agent ($SSH_AUTH_SOCK) cannot be used: %s", exc)
        return []


def _public_blob(path: str) -> bytes | None:
    """The public key next to an identity file (``.pub``), to match it with agent keys."""
    try:
        with open(path + ".pub") as handle:
            fields = handle.read().split()
        return paramiko.PKey.from_type_string(fields[0], base64.b64decode(fields[1])).asbytes()
    except (OSError, IndexError, ValueError, binascii.Error, paramiko.SSHException):
        return None


def _load_key(path: str, notes: list[str]) -> paramiko.PKey | None:
    """The private key in ``path``, or None with a note saying why it cannot be used."""
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError:
        notes.append(f"{path} does not exist")
    except (paramiko.PasswordRequiredException, TypeError) as exc:
        # For an encrypted OpenSSH-format key paramiko lets cryptography's TypeError through.
        if isinstance(exc, TypeError) and not _encrypted(path):
            raise
        notes.append(f"{path} is passphrase-protected (load it into ssh-agent: ssh-add {path})")
    except (OSError, ValueError, paramiko.SSHException) as exc:
        notes.append(f"{path} cannot be read as a private key: {exc}")
    return None


def _encrypted(path: str) -> bool:
    """Whether the private key file ``path`` is passphrase-protected, read from its format
    (an OpenSSH key names its cipher, "none" when it has no passphrase; a PEM key says
    ENCRYPTED in its header), not from an error's wording."""
    try:
        with open(path, errors="replace") as handle:
            text = handle.read()
    except OSError:
        return False
    begin, end = "-----BEGIN OPENSSH PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----"
    if begin in text:
        body = text.split(begin, 1)[1].split(end, 1)[0]
        try:
            data = base64.b64decode("".join(body.split()))
        except (binascii.Error, ValueError):
            return False
        magic = b"openssh-key-v1\0"
        if not data.startswith(magic):
            return False
        size = int.from_bytes(data[len(magic):len(magic) + 4], "big")
        return data[len(magic) + 4:len(magic) + 4 + size] != b"none"
    return "-----BEGIN ENCRYPTED PRIVATE KEY-----" in text or "Proc-Type: 4,ENCRYPTED" in text


def _candidate_keys(hop: SSHTarget) -> tuple[list[tuple[str, paramiko.PKey]], list[str]]:
    """Keys to offer, in ssh's order (agent, then files), and notes on files left out."""
    notes: list[str] = []
    keys: list[tuple[str, paramiko.PKey]] = []
    agent = _agent_keys()
    if os.environ.get("SSH_AUTH_SOCK") and not agent:
        notes.append(f"ssh-agent ({os.environ['SSH_AUTH_SOCK']}) holds no keys")
    wanted = {b for b in map(_public_blob, hop.identity_files) if b}
    for key in agent:
        if not hop.identities_only or key.asbytes() in wanted:
            keys.append((f"ssh-agent key {fingerprint(key)}", key))
    offered = {key.asbytes() for _, key in keys}
    for path in hop.identity_files:
        if _public_blob(path) in offered:
            continue
        key = _load_key(path, notes)
        if key is not None and key.asbytes() not in offered:
            keys.append((path, key))
            offered.add(key.asbytes())
    return keys, notes


def _authenticate(transport: paramiko.Transport, hop: SSHTarget) -> str:
    keys, notes = _candidate_keys(hop)
    tried = []
    for label, key in keys:
        try:
            remaining = transport.auth_publickey(hop.user, key)
        except paramiko.BadAuthenticationType as exc:
            raise TransportError(
                f"{hop} does not accept public keys (it allows: "
                f"{', '.join(exc.allowed_types) or 'nothing'})",
                "rk_jupyter needs key-based login (no passwords)", code="ssh.auth-method",
            ) from None
        except paramiko.AuthenticationException:
            tried.append(label)
            continue
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"authentication with {hop} failed: {exc}",
                                 code="ssh.auth-failed") from None
        if remaining:
            raise TransportError(f"{hop} wants more than a key ({', '.join(remaining)})",
                                 "rk_jupyter can only log in with keys",
                                 code="ssh.auth-partial")
        log.info("authenticated to %s with %s", hop, label)
        return label
    extra = f" ({'; '.join(notes)})" if notes else ""
    if not tried:
        raise TransportError(
            f"no usable key to log in to {hop.hostname}:{hop.port} as {hop.user}{extra}",
            "set identity_file in the kernelspec to a key without a passphrase, or load the "
            "key into ssh-agent (ssh-add); passwords are not used.", code="ssh.auth-no-key",
        )
    raise TransportError(
        f"{hop.hostname}:{hop.port} refused the login of {hop.user}: no offered key was "
        f"accepted. Tried: {'; '.join(tried)}{extra}",
        f"put your public key in ~{hop.user}/.ssh/authorized_keys on {hop.hostname} (e.g. "
        "ssh-copy-id), set identity_file in the kernelspec, or load the key into ssh-agent.",
        code="ssh.auth-refused",
    )
