"""The launch settings: every key a kernelspec's provisioner config may hold, stated once.

Why one schema: the provisioner's traits, ``rk-jupyter add``'s options, ``%rkernel
connect``'s options, the transports, the doctor and the kernel's ``RK_SETTINGS`` all speak of
the same keys.  Each key's type, default, allowed values and help are written here and
nowhere else; the others are derived from ``LaunchSettings``'s fields, and every consumer
reads a validated, typed, frozen object instead of re-reading a dict with ``.get(k) or
default``.

Importing this module loads no paramiko, no agent server and no kernel package: the CLI and
the provisioner's class body import it.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any

from ..link.compression import PREFERENCES
from ..link.launcher import OUTPUT_LIMIT
from .errors import SettingsError

#: How the agent is reached: a process on this machine, or one on a host reached over SSH.
TRANSPORTS = ("local", "ssh")
#: The engines an agent can run.
ENGINES = ("mathics", "wolfram")
#: What to do with a host key known_hosts lacks (a changed key is refused under both).
HOST_KEY_POLICIES = ("strict", "accept-new")
#: Which SSH client connects: OpenSSH when usable (auto), or one of them by name.
SSH_CLIENTS = ("auto", "openssh", "paramiko")
#: How the agent gets onto a remote host.
AGENT_DEPLOY = ("auto", "zipapp", "installed")
#: The link's compression preferences (the link's own list).
COMPRESSIONS = tuple(PREFERENCES)
_DESTINATION = re.compile(r"^(?:(?P<user>[^@\s:/]+)@)?(?P<host>\[[^\]\s]+\]|[^@\s:/\[\]]+)"
                          r"(?::(?P<port>[^:\s]*))?$")


@dataclass(frozen=True)
class Key:
    """What a settings field means to the outside: its help text (without the "ssh: "
    prefix, which ``ssh`` adds), its allowed values, whether it applies only to transport
    ssh, and ``rk-jupyter add``'s option for it (None: add does not offer it)."""

    help: str
    choices: tuple[str, ...] = ()
    ssh: bool = False
    flag: str | None = None
    metavar: str | None = None

    @property
    def full_help(self) -> str:
        return f"ssh: {self.help}" if self.ssh else self.help


def _key(default: Any, help: str, **options: Any) -> Any:
    """A dataclass field with its ``Key`` in the metadata."""
    meta = {"key": Key(help, **options)}
    if isinstance(default, dict):
        return field(default_factory=dict, hash=False, metadata=meta)  # a dict: not hashed
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class LaunchSettings:
    """One kernel launch's settings, validated: what the provisioner builds from its traits
    (the kernelspec's config), what ``%rkernel connect`` builds from a kernelspec and its
    options, and what the doctor checks.  ``as_dict`` is the plain-data form that travels in
    ``RK_SETTINGS``; ``from_config`` reads it back.

    Constructing one validates it: a SettingsError (code ``settings.*``) names the bad key and
    the values it allows.
    """

    transport: str = _key("local", "how to reach the agent: 'local' (this machine) or 'ssh' "
                          "(another host)", choices=TRANSPORTS)
    engine: str = _key("mathics", "the engine: 'mathics' (Mathics3) or 'wolfram' (a "
                       "WolframKernel)", choices=ENGINES, flag="--engine")
    engine_options: dict[str, Any] = _key({}, "engine options, e.g. kernel_path")
    compression: str = _key(
        "brotli", "'brotli', 'brotli-max' (~13% fewer bytes for ~1.5 ms more per larger "
        "output, up to ~0.1 s for a plot: for slow or metered networks), 'zlib' or 'none'",
        choices=COMPRESSIONS, flag="--compression")
    memory_limit: str = _key(
        "", "the engine's memory limit on its host, e.g. '8G' or '512M' (K, M, G, T; default: "
        "none); a cell that needs more is stopped with a message that names the limit",
        flag="--memory-limit", metavar="SIZE")
    output_limit: int = _key(
        OUTPUT_LIMIT, "characters of a result's text (or of one Print) above which it is shown "
        "in a short form; Out[n] keeps the whole value", flag="--output-limit", metavar="CHARS")
    python: str = _key("", "Python that runs a local agent (default: this one)")
    reconnect_grace: float = _key(
        600.0, "seconds a kernel may be cut off from its agent (network down, SSH "
        "reconnecting) before the agent ends its engine; nothing is lost meanwhile")
    persistent: bool = _key(
        False, "the engine outlives the Jupyter server: when the server stops or dies, the "
        "session goes on (definitions, a running cell and its output, the last 10 MB kept) "
        "and the same notebook re-attaches to it when it starts this kernelspec again; "
        "'rk-jupyter sessions NAME' lists and ends such sessions", flag="--persistent")
    persist_for: float = _key(
        86400.0, "seconds a persistent session waits for its notebook to come back before "
        "the agent ends its engine", flag="--persist-for", metavar="SECONDS")
    agent_start_timeout: float = _key(
        30.0, "seconds to wait for the agent's ready line (with ssh: including its upload)")
    host: str = _key("", "the remote host, a name or an ~/.ssh/config alias", ssh=True)
    ssh_client: str = _key(
        "auto", "the SSH client: 'openssh' (the system's ssh: all of ssh_config, ProxyCommand, "
        "certificates, Kerberos, an open ControlMaster for password/MFA hosts), 'paramiko' "
        "(built in: keys only, reads a subset of ssh_config), or 'auto' (openssh when an ssh "
        "client with ControlMaster is on PATH, else paramiko)", choices=SSH_CLIENTS, ssh=True,
        flag="--ssh-client")
    port: int = _key(0, "port (0: ssh_config's Port, else 22)", ssh=True)
    user: str = _key("", "login name (default: ssh_config's User, else the local user)",
                     ssh=True)
    identity_file: str = _key(
        "", "private key file, offered after ssh-agent's keys and before ssh_config's "
        "IdentityFile; it must have no passphrase, or be loaded in ssh-agent (no passwords)",
        ssh=True, flag="--identity", metavar="FILE")
    proxy_jump: str = _key(
        "", "jump host(s) like ssh -J: [user@]host[:port][,...]; 'none' disables "
        "ssh_config's ProxyJump", ssh=True, flag="--proxy-jump", metavar="HOST")
    known_hosts: str = _key(
        "", "known_hosts file for the host key check (default: ssh_config's "
        "UserKnownHostsFile, else ~/.ssh/known_hosts)", ssh=True, flag="--known-hosts",
        metavar="FILE")
    ssh_config: str = _key(
        "", "ssh_config file (default ~/.ssh/config; /etc/ssh/ssh_config is read after it)",
        ssh=True, flag="--ssh-config", metavar="FILE")
    host_key_policy: str = _key(
        "strict", "'strict' refuses a host key that known_hosts lacks; 'accept-new' records "
        "a new host's key; a changed key is refused under both", choices=HOST_KEY_POLICIES,
        ssh=True, flag="--host-key-policy")
    remote_python: str = _key(
        "python3", "the remote Python (3.10+) that runs the agent and, unless "
        "engine_options says otherwise, Mathics3", ssh=True, flag="--remote-python",
        metavar="PATH")
    agent_deploy: str = _key(
        "auto", "'auto' runs an installed rk_jupyter of this version, else copies the agent "
        "zipapp (once per version); 'zipapp' always uses the copy; 'installed' never copies",
        choices=AGENT_DEPLOY, ssh=True, flag="--agent-deploy")
    slurm: str = _key(
        "", "run the engine in a Slurm job on a compute node of the cluster whose login node "
        "is the host: your own srun/salloc options, e.g. '--partition=debug --time=60 "
        "--cpus-per-task=4' (default: none, the engine runs on the host itself); with "
        "rk-jupyter add write --slurm=\"OPTIONS\", since they start with dashes", ssh=True,
        flag="--slurm", metavar="OPTIONS")
    connect_timeout: float = _key(
        10.0, "seconds for each phase of connecting (TCP, handshake, each key tried)",
        ssh=True)
    keepalive: float = _key(
        15.0, "seconds between keepalive probes; 3 unanswered ones mean the connection is "
        "dead (0: no probes)", ssh=True)
    command_timeout: float = _key(
        30.0, "seconds for each remote command and SFTP operation", ssh=True)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _checked(f, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        if self.transport == "ssh" and not self.host:
            raise SettingsError("the kernelspec uses transport 'ssh' but names no host",
                                "set host in the kernelspec (rk-jupyter add NAME --host "
                                "[user@]host[:port])", code="settings.no-host")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LaunchSettings:
        """The settings of a kernelspec's provisioner config (or of ``as_dict``'s output);
        keys it lacks take their defaults.  SettingsError for an unknown key or a bad value."""
        known = key_names()
        for name in config:
            if name not in known:
                raise SettingsError(f"unknown key {name!r} in the kernelspec's provisioner "
                                    "config", f"use one of {', '.join(known)}",
                                    code="settings.unknown-key")
        return cls(**dict(config))

    @classmethod
    def from_json(cls, text: str) -> LaunchSettings:
        """``from_config`` of a JSON object (``RK_SETTINGS``, ``--settings-stdin``)."""
        try:
            config = json.loads(text)
        except ValueError as exc:
            raise SettingsError(f"the launch settings are not JSON: {exc}",
                                code="settings.not-json") from None
        if not isinstance(config, dict):
            raise SettingsError("the launch settings are not a JSON object",
                                code="settings.not-json")
        return cls.from_config(config)

    def engine_request(self) -> dict[str, Any]:
        """The engine options the agent gets when the session opens: ``engine_options``,
        ``output_limit``, ``memory_limit`` in bytes when one is set, and ``slurm`` (srun
        options) when set."""
        options = {"output_limit": self.output_limit, **self.engine_options}
        if self.memory_limit:
            options["memory_limit"] = memory_bytes(self.memory_limit)
        if self.slurm:
            options["slurm"] = self.slurm
        return options

    def restart_overlaps(self) -> bool:
        """Whether a restart may open the next session before the old one has ended
        (``KernelStart.open_next``): yes for a Mathics3 engine; not for a WolframKernel (a
        licence seat each: the next could be refused while the old one still holds its
        seat) nor in a Slurm job (its job step passes to the next engine only once the old
        session has ended)."""
        return self.engine == "mathics" and not self.slurm

    def as_dict(self) -> dict[str, Any]:
        """Every key with its value, as plain JSON-able data."""
        return asdict(self)

    def where(self) -> str:
        """" to HOST" for an ssh launch, "" for a local one (for one-line descriptions)."""
        return f" to {self.host}" if self.transport == "ssh" else ""


def settings_fields() -> tuple[Field, ...]:
    """The schema: LaunchSettings's fields, each with its ``Key`` in ``metadata["key"]``."""
    return fields(LaunchSettings)


def key_names() -> list[str]:
    return [f.name for f in settings_fields()]


def key_of(f: Field) -> Key:
    return f.metadata["key"]


def default_of(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]


_TYPES: dict[str, tuple[type, str]] = {
    "str": (str, "text"), "int": (int, "a whole number"), "float": (float, "a number"),
    "dict[str, Any]": (dict, "a JSON object"), "bool": (bool, "true or false"),
}


def value_type(f: Field) -> type:
    """The Python type of a field's values (str, int, float, bool or dict)."""
    return _TYPES[str(f.type)][0]


def _checked(f: Field, value: Any) -> Any:
    """``value`` as the field's type, or a SettingsError naming the key and what it allows."""
    kind, described = _TYPES[str(f.type)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise SettingsError(f"{f.name} {value!r} in the kernelspec is not {described}",
                            f"give {f.name} as {described}, e.g. {default_of(f)!r}",
                            code="settings.type")
    choices = key_of(f).choices
    if choices and value not in choices:
        raise SettingsError(f"unknown {f.name} {value!r} in the kernelspec",
                            f"use one of {', '.join(choices)}", code="settings.choice")
    if f.name == "port" and not 0 <= value < 65536:
        raise SettingsError(f"port {value} in the kernelspec is not from 1 to 65535",
                            "give port as 0 (ssh_config's Port, else 22) or a port number",
                            code="settings.port")
    if f.name == "memory_limit" and value:
        memory_bytes(value)
    if f.name == "slurm" and value:
        try:
            shlex.split(value)
        except ValueError as exc:  # the agent checks the options themselves (engines/slurm.py)
            raise SettingsError(f"slurm {value!r} in the kernelspec does not parse: {exc}",
                                "give srun options as in a shell, e.g. '--partition=debug "
                                "--time=60'", code="settings.slurm") from None
    if f.name == "output_limit" and value < 100:
        raise SettingsError(f"output_limit {value} in the kernelspec is less than 100",
                            f"give a number of characters, e.g. {OUTPUT_LIMIT}",
                            code="settings.output-limit")
    if kind is float and value < 0:
        raise SettingsError(f"{f.name} {value:g} in the kernelspec is negative",
                            f"give {f.name} in seconds, e.g. {default_of(f)!r}",
                            code="settings.negative")
    return dict(value) if kind is dict else value


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def memory_bytes(text: str) -> int:
    """A memory size as written in a kernelspec ("8G", "512M", "1.5G", "2GiB") in bytes;
    SettingsError naming the key for anything else, or for less than 64 MiB (an engine
    cannot start in less)."""
    match = _SIZE.match(text)
    if not match:
        raise SettingsError(f"memory_limit {text!r} in the kernelspec is not a size",
                            "give it like '8G' or '512M' (K, M, G, T), or leave it empty for "
                            "no limit", code="settings.memory-limit")
    size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if size < 64 << 20:
        raise SettingsError(f"memory_limit {text!r} in the kernelspec is less than 64M",
                            "give at least '512M'; an engine needs that much to start",
                            code="settings.memory-limit")
    return size


def parse_text(f: Field, text: str) -> Any:
    """A field's value from command-line text (``%rkernel connect --port 2222``); ValueError
    says what is wrong.  The value is checked when the settings are built."""
    kind = value_type(f)
    if kind is dict:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object")
        return value
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError("expected true or false")
        return text.lower() in ("true", "1", "yes")
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    return text


@dataclass(frozen=True)
class Destination:
    """``[user@]host[:port]`` as written by a user (``--host`` of ``rk-jupyter add`` and
    ``%rkernel connect``, ProxyJump entries); it becomes the host, user and port keys."""

    host: str
    user: str | None = None
    port: int | None = None


def parse_destination(text: str) -> Destination:
    """Split ``[user@]host[:port]`` (IPv6 in brackets); ValueError says what is wrong."""
    match = _DESTINATION.match(text.strip())
    if not match or not match.group("host").strip("[]"):
        raise ValueError(f"{text!r} is not [user@]host[:port]")
    port_text = match.group("port")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    return Destination(match.group("host").strip("[]"), match.group("user"), port)
