"""Which SSH client connects: the system's OpenSSH (default) or paramiko (fallback).

One place decides (``choose``), resolves a kernelspec's host the chosen client's way
(``resolve``) and connects (``connect``); the pool, the agent, the forward and the doctor
then use the connection's common surface:

- ``target``, ``backend``, ``description``; ``alive()``, ``death_reason()``, ``close()``;
- ``exec(command, timeout, combine)``: a channel (sendall, shutdown_write, makefile("rb"),
  settimeout, status_event, recv_exit_status, close); ``run(command, timeout, combine)``;
- ``upload(data, path, timeout)``: the agent's copy; ``forward(destination, timeout)``: the
  local port to the agent (``port``, ``alive``, ``retarget(connection)``, ``close``);
  ``forwarding_refused(port, timeout)``.

paramiko stays for machines whose ssh has no ControlMaster (Windows' OpenSSH) or that have
no ssh client at all; it reads ssh_config itself and so ignores much of it (``IGNORED``).
"""

from __future__ import annotations

from typing import IO, Any, Protocol

from ..errors import TransportError
from ..settings import LaunchSettings
from . import openssh
from .target import SSHTarget, load_ssh_config, resolve_target

#: What the paramiko backend does not honour of the user's ssh_config (said by the doctor).
IGNORED = ("Include", "Match", "ProxyCommand", "CertificateFile and user certificates",
           "@cert-authority host certificates", "GSSAPI/Kerberos", "FIDO2 (sk-) and PKCS#11 "
           "keys", "passwords and one-time codes (even through a ControlMaster)",
           "CanonicalizeHostname", "HostKeyAlias", "KnownHostsCommand")


class Channel(Protocol):
    """A remote command's stdin and merged output (a paramiko Channel, or an ssh client
    process): what the agent's lifeline and ``run`` use."""

    status_event: Any

    def sendall(self, data: bytes) -> None: ...
    def shutdown_write(self) -> None: ...
    def settimeout(self, timeout: float | None) -> None: ...
    def makefile(self, mode: str = "rb") -> IO[bytes]: ...
    def recv_exit_status(self) -> int: ...
    def close(self) -> None: ...


class Forward(Protocol):
    """A local loopback port forwarded to the agent; it keeps its port across reconnects."""

    port: int

    def alive(self) -> bool: ...
    def retarget(self, connection: Any) -> None: ...
    def close(self) -> None: ...


class Connection(Protocol):
    """One authenticated SSH connection, whichever client made it.  Every method is called
    from pool, agent and doctor threads; each blocks at most its ``timeout``."""

    target: SSHTarget
    backend: str
    description: str

    def alive(self) -> bool: ...
    def death_reason(self) -> str: ...
    def close(self) -> None: ...
    def exec(self, command: str, timeout: float, combine: bool = True) -> Channel: ...
    def run(self, command: str, timeout: float, combine: bool = True) -> tuple[int, str]: ...
    def upload(self, data: bytes, path: str, timeout: float) -> bool: ...
    def forward(self, destination: tuple[str, int], timeout: float) -> Forward: ...
    def forwarding_refused(self, port: int, timeout: float) -> TransportError | None: ...


def choose(ssh_client: str) -> str:
    """The backend for the kernelspec's ``ssh_client``: "openssh" or "paramiko".

    ``auto``: OpenSSH when an ssh client with ControlMaster is on PATH, else paramiko.
    Raises TransportError (``ssh.client-missing``) when ``openssh`` is asked for and cannot
    run here."""
    if ssh_client == "paramiko":
        return "paramiko"
    missing = openssh.available()
    if ssh_client == "openssh" and missing:
        raise TransportError(f"ssh_client is 'openssh', but {missing}",
                             "install OpenSSH's client (Debian: apt-get install "
                             "openssh-client), or set ssh_client to 'auto' or 'paramiko' in "
                             "the kernelspec", code="ssh.client-missing")
    return "paramiko" if missing else "openssh"


def resolve(settings: LaunchSettings) -> SSHTarget:
    """The kernelspec's host resolved as the chosen client will connect to it (blocking)."""
    s = settings
    if choose(s.ssh_client) == "openssh":
        options = openssh.options_for(
            s.host, port=s.port or None, user=s.user or None,
            identity_file=s.identity_file or None, proxy_jump=s.proxy_jump or None,
            known_hosts=s.known_hosts or None, ssh_config=s.ssh_config or None)
        return openssh.resolve(s.host, options, s.connect_timeout)
    return resolve_target(
        s.host, port=s.port or None, user=s.user or None,
        identity_file=s.identity_file or None, proxy_jump=s.proxy_jump or None,
        known_hosts=s.known_hosts or None, ssh_config=load_ssh_config(s.ssh_config or None))


def connect(target: SSHTarget, policy: str, timeout: float, keepalive: float) -> Connection:
    """An authenticated connection to ``target`` by its backend (blocking, bounded by
    ``timeout`` per phase and hop); raises the TransportError naming cause and fix."""
    if target.backend == "openssh":
        return openssh.connect(target, policy, timeout, keepalive)
    from .connect import connect as paramiko_connect  # loads paramiko only when used
    return paramiko_connect(target, policy, timeout, keepalive)
