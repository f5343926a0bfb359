"""Where an ssh kernelspec points: its config keys resolved through ssh_config, as ``ssh`` does.

Explicit kernelspec keys win over ssh_config (like ``ssh -p/-l/-i/-J`` over the file); the
user's file is read before the system one, and the first value found wins.  Read from
ssh_config: HostName, User, Port, IdentityFile, IdentitiesOnly, ProxyJump, UserKnownHostsFile,
GlobalKnownHostsFile.  ``Include`` is not followed (paramiko's parser does not support it).
This is the paramiko backend's resolution; the OpenSSH backend asks ``ssh -G``
(``openssh.resolve``) and builds the same SSHTarget.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field, replace
from typing import Any

import paramiko

from ..errors import TransportError
from ..settings import Destination, parse_destination

__all__ = ["Destination", "SSHTarget", "load_ssh_config", "parse_destination", "resolve_target"]

DEFAULT_PORT = 22
USER_CONFIG = "~/.ssh/config"
SYSTEM_CONFIG = "/etc/ssh/ssh_config"
USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


@dataclass(frozen=True)
class SSHTarget:
    """A fully resolved SSH destination: what to connect to, as whom, with which keys."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool
    known_hosts_files: tuple[str, ...]
    global_known_hosts_files: tuple[str, ...]
    jumps: tuple[SSHTarget, ...] = field(default=())
    #: The SSH client that connects: "paramiko" (this module's resolution) or "openssh"
    #: (``openssh.resolve``: ssh -G).
    backend: str = "paramiko"
    #: How the OpenSSH client reaches the host when not directly: "ProxyJump HOSTS" or
    #: "ProxyCommand CMD"; "" for a direct connection.
    via: str = ""
    #: The options that name this host to ``ssh`` exactly as resolved (-F, -p, -l, -i, -J,
    #: -o …), before the alias on every ssh command line of the OpenSSH backend.
    ssh_options: tuple[str, ...] = field(default=())

    @property
    def key(self) -> tuple[str, str, str, int]:
        """What one shared connection is keyed by."""
        return (self.backend, self.user, self.hostname, self.port)

    @property
    def hops(self) -> int:
        """How many SSH logins reaching the host takes (jump hosts, then the host)."""
        if self.via.startswith("ProxyJump "):
            return 1 + len(self.via.split(" ", 1)[1].split(","))
        return 1 + len(self.jumps) + bool(self.via)

    @property
    def known_hosts_name(self) -> str:
        """The name ssh files this host's key under in known_hosts."""
        return self.hostname if self.port == DEFAULT_PORT else f"[{self.hostname}]:{self.port}"

    def __str__(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        text = f"{self.user}@{host}:{self.port}"
        if self.jumps:
            text += " via " + ", ".join(f"{j.user}@{j.hostname}:{j.port}" for j in self.jumps)
        elif self.via:
            how, what = self.via.split(" ", 1)
            text += f" via {what if how == 'ProxyJump' else how}"
        return text


def load_ssh_config(path: str | None) -> paramiko.SSHConfig:
    """The user's ssh_config (``path``, default ~/.ssh/config) followed by the system one.

    An explicitly given file must exist; the default ones are optional.
    """
    config = paramiko.SSHConfig()
    files = [(os.path.expanduser(path or USER_CONFIG), bool(path)), (SYSTEM_CONFIG, False)]
    for name, required in files:
        if not os.path.isfile(name):
            if required:
                raise TransportError(f"the ssh_config file {name} given in the kernelspec "
                                     "does not exist", "correct ssh_config in the kernelspec",
                                     code="ssh.config-missing")
            continue
        try:
            with open(name) as handle:
                config.parse(handle)
        except (OSError, UnicodeDecodeError, paramiko.ConfigParseError) as exc:
            raise TransportError(f"cannot read the ssh_config file {name}: {exc}",
                                 code="ssh.config-unreadable") from None
    return config


def _files(value: str | None, defaults: tuple[str, ...]) -> tuple[str, ...]:
    """A space-separated ssh_config file list (or the defaults), ~ expanded; "none" is none."""
    names = value.split() if value else list(defaults)
    return tuple(os.path.expanduser(n) for n in names if n.lower() != "none")


def _yes(value: Any) -> bool:
    return str(value).strip().lower() in ("yes", "true")


def resolve_target(
    host: str,
    *,
    port: int | None = None,
    user: str | None = None,
    identity_file: str | None = None,
    proxy_jump: str | None = None,
    known_hosts: str | None = None,
    ssh_config: paramiko.SSHConfig | None = None,
) -> SSHTarget:
    """Resolve the kernelspec's ``host`` (an alias or a name) the way ``ssh`` would.

    ``known_hosts`` replaces UserKnownHostsFile; ``proxy_jump`` replaces ProxyJump ("none"
    disables it).  Jump hosts are resolved through the same ssh_config, are checked against
    the same ``known_hosts`` file and may also use ``identity_file``; their own ProxyJump is
    not followed (the chain is what ``ssh -J`` builds).
    """
    config = ssh_config if ssh_config is not None else paramiko.SSHConfig()
    target = _resolve_one(host, port, user, identity_file, known_hosts, config)
    jump_spec = proxy_jump if proxy_jump is not None else config.lookup(host).get("proxyjump")
    if not jump_spec or jump_spec.strip().lower() == "none":
        return target
    hops = []
    for hop in jump_spec.split(","):
        try:
            dest = parse_destination(hop)
        except ValueError as exc:
            raise TransportError(f"bad ProxyJump entry: {exc}",
                                 "write proxy_jump as [user@]host[:port][,...]",
                                 code="ssh.bad-proxy-jump") from None
        hops.append(_resolve_one(dest.host, dest.port, dest.user, identity_file, known_hosts,
                                 config))
    return replace(target, jumps=tuple(hops))


def _resolve_one(
    host: str, port: int | None, user: str | None, identity_file: str | None,
    known_hosts: str | None, config: paramiko.SSHConfig,
) -> SSHTarget:
    if not host or any(c.isspace() for c in host):
        raise TransportError(f"the host {host!r} is not a host name", code="ssh.bad-host")
    found = config.lookup(host)
    try:
        port_value = port or int(found.get("port", DEFAULT_PORT))
    except ValueError:
        raise TransportError(f"ssh_config gives host {host} the port "
                             f"{found.get('port')!r}, which is not a number",
                             code="ssh.bad-port") from None
    if not 0 < port_value < 65536:
        raise TransportError(f"port {port_value} of host {host} is not from 1 to 65535",
                             code="ssh.bad-port")
    identities = [os.path.expanduser(identity_file)] if identity_file else []
    identities += [f for f in found.get("identityfile", []) if f not in identities]
    if not identities:  # ssh's defaults, offered only when they exist
        identities = [f for f in map(os.path.expanduser, DEFAULT_IDENTITIES) if os.path.exists(f)]
    if known_hosts:
        user_files: tuple[str, ...] = (os.path.abspath(os.path.expanduser(known_hosts)),)
    else:
        user_files = _files(found.get("userknownhostsfile"), USER_KNOWN_HOSTS)
    return SSHTarget(
        alias=host,
        hostname=found.get("hostname", host),
        port=port_value,
        user=user or found.get("user") or getpass.getuser(),
        identity_files=tuple(identities),
        identities_only=_yes(found.get("identitiesonly", "no")),
        known_hosts_files=user_files,
        global_known_hosts_files=_files(found.get("globalknownhostsfile"), GLOBAL_KNOWN_HOSTS),
    )
