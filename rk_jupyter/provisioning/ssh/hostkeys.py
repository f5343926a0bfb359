"""Host-key checking as strict as ``ssh -o StrictHostKeyChecking=yes``, with messages that
say what to do.

The known_hosts files are read here line by line (plain, wildcard and hashed ``|1|`` entries,
``@revoked`` markers) rather than through paramiko's HostKeys, so that a refusal can name the
file and line that disagrees.  Policies: "strict" (default: an unknown key is refused) and
"accept-new" (an unknown key is appended to the user's known_hosts file); a changed or revoked
key is refused under both.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import shlex
from dataclasses import dataclass

import paramiko

from ..errors import SettingsError, TransportError
from ..settings import HOST_KEY_POLICIES as POLICIES
from .target import SSHTarget

_KEYSCAN_TYPES = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa", "ssh-dss": "dsa"}


class HostKeyError(TransportError):
    """The server's host key is not one we may trust (or cannot be recorded)."""

    code = "ssh.host-key"


class UnknownHostKeyError(HostKeyError):
    """No known_hosts entry for the host."""

    code = "ssh.host-key-unknown"


class ChangedHostKeyError(HostKeyError):
    """known_hosts lists the host with another key (``ssh.host-key-changed``), or marks the
    key revoked (``ssh.host-key-revoked``)."""

    code = "ssh.host-key-changed"


@dataclass(frozen=True)
class KnownKey:
    """One known_hosts entry that names the host."""

    path: str
    lineno: int
    key: paramiko.PKey
    revoked: bool = False


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...`` as ``ssh`` and ``ssh-keygen -l`` print it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):
        try:
            expected = paramiko.HostKeys.hash_host(name, pattern)
        except (binascii.Error, ValueError, IndexError):
            return False
        return hmac.compare_digest(expected, pattern)
    if "*" not in pattern and "?" not in pattern:
        return pattern.lower() == name.lower()
    # Only * and ? are wildcards in known_hosts ("[host]:port" brackets are literal).
    regex = re.escape(pattern.lower()).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, name.lower()) is not None


def _host_matches(patterns: str, name: str) -> bool:
    """ssh's rule: some pattern matches and no negated (``!``) pattern does."""
    hit = False
    for pattern in patterns.split(","):
        if pattern.startswith("!"):
            if _pattern_matches(pattern[1:], name):
                return False
        elif _pattern_matches(pattern, name):
            hit = True
    return hit


def read_known_keys(path: str, name: str) -> list[KnownKey]:
    """The entries of one known_hosts file for ``name`` (``host`` or ``[host]:port``)."""
    try:
        with open(path, errors="replace") as handle:
            lines = handle.readlines()
    except OSError:
        return []
    found = []
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = fields.pop(0) if fields[0].startswith("@") else ""
        if marker == "@cert-authority" or len(fields) < 3:
            continue  # certificates are not supported: such lines vouch for no plain key
        if not _host_matches(fields[0], name):
            continue
        try:
            key = paramiko.PKey.from_type_string(fields[1], base64.b64decode(fields[2]))
        except (binascii.Error, ValueError, paramiko.SSHException):
            continue
        found.append(KnownKey(path, lineno, key, revoked=marker == "@revoked"))
    return found


def _same(a: paramiko.PKey, b: paramiko.PKey) -> bool:
    return a.get_name() == b.get_name() and a.asbytes() == b.asbytes()


class HostKeyChecker:
    """Checks the key a server offers against the target's known_hosts files."""

    def __init__(self, target: SSHTarget, policy: str = "strict") -> None:
        if policy not in POLICIES:
            raise SettingsError(f"unknown host_key_policy {policy!r}",
                                f"use one of {', '.join(POLICIES)}", code="settings.choice")
        self.target = target
        self.policy = policy
        self.known = [
            entry
            for path in (*target.known_hosts_files, *target.global_known_hosts_files)
            for entry in read_known_keys(path, target.known_hosts_name)
        ]

    def preferred_key_types(self, available: tuple[str, ...]) -> list[str]:
        """Host-key algorithms with those of the known keys first, as ssh orders them, so
        that a host with several keys offers the one we know."""
        known = {entry.key.get_name() for entry in self.known if not entry.revoked}

        def key_type(algorithm: str) -> str:
            return "ssh-rsa" if algorithm.startswith("rsa-sha2-") else algorithm

        return sorted(available, key=lambda alg: key_type(alg) not in known)

    def verify(self, key: paramiko.PKey) -> None:
        """Return if ``key`` may be trusted; raise a HostKeyError that says what to do."""
        for entry in self.known:
            if entry.revoked and _same(entry.key, key):
                raise ChangedHostKeyError(self._revoked_message(key, entry),
                                          code="ssh.host-key-revoked")
        valid = [entry for entry in self.known if not entry.revoked]
        if any(_same(entry.key, key) for entry in valid):
            return
        if valid:
            raise ChangedHostKeyError(*self._changed_message(key, valid))
        if self.policy == "accept-new":
            self._remember(key)
            return
        raise UnknownHostKeyError(*self._unknown_message(key))

    # -- messages -------------------------------------------------------------------------

    def _user_file(self) -> str:
        return self.target.known_hosts_files[0] if self.target.known_hosts_files else \
            os.path.expanduser("~/.ssh/known_hosts")

    def _unknown_message(self, key: paramiko.PKey) -> tuple[str, str]:
        t = self.target
        kind = _KEYSCAN_TYPES.get(key.get_name(), "ecdsa")
        file = self._user_file()
        host = shlex.quote(t.hostname)
        ssh_opts = "" if file == os.path.expanduser("~/.ssh/known_hosts") else \
            f"-o UserKnownHostsFile={shlex.quote(file)} "
        if t.jumps:
            ssh_opts += "-J " + ",".join(f"{j.user}@{j.hostname}:{j.port}" for j in t.jumps) + " "
        files = ", ".join((*t.known_hosts_files, *t.global_known_hosts_files)) or "none"
        return (
            f"the SSH host key of {t.known_hosts_name} is unknown: the server offered "
            f"{key.get_name()} {fingerprint(key)}, and no known_hosts file lists this host "
            f"(looked in: {files})",
            "rk_jupyter checks host keys strictly and never asks. "
            f"If that fingerprint is the host's, trust it by connecting once with ssh and "
            f"answering yes:\n    ssh {ssh_opts}-p {t.port} {t.user}@{host}\n"
            f"or add it with ssh-keyscan (then compare: ssh-keygen -lf {shlex.quote(file)}):\n"
            f"    ssh-keyscan -p {t.port} -t {kind} {host} >> {shlex.quote(file)}\n"
            "or set \"host_key_policy\": \"accept-new\" in the kernelspec to trust a host's "
            "first key automatically."
        )

    def _changed_message(self, key: paramiko.PKey, valid: list[KnownKey]) -> tuple[str, str]:
        t = self.target
        entry = valid[0]
        return (
            "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\n"
            f"{t.known_hosts_name} offered the host key {key.get_name()} {fingerprint(key)}, "
            f"but {entry.path}:{entry.lineno} says its key is {entry.key.get_name()} "
            f"{fingerprint(entry.key)}. Someone could be eavesdropping on you right now "
            "(a man-in-the-middle attack), or the host key has just been replaced. "
            "rk_jupyter refused to connect",
            "if you know why the key changed, remove the old "
            f"entry with:\n    ssh-keygen -f {shlex.quote(entry.path)} -R "
            f"{shlex.quote(t.known_hosts_name)}\nthen trust the new key (connect once with ssh)."
        )

    def _revoked_message(self, key: paramiko.PKey, entry: KnownKey) -> str:
        return (
            f"the host key {key.get_name()} {fingerprint(key)} offered by "
            f"{self.target.known_hosts_name} is marked @revoked in {entry.path}:{entry.lineno}; "
            "rk_jupyter refused to connect."
        )

    def _remember(self, key: paramiko.PKey) -> None:
        """accept-new: append the key to the user's known_hosts file (created 0600)."""
        path = self._user_file()
        line = f"{self.target.known_hosts_name} {key.get_name()} {key.get_base64()}\n"
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as handle:
                handle.write(line)
        except OSError as exc:
            raise HostKeyError(f"cannot record the new host key of "
                               f"{self.target.known_hosts_name} in {path}: {exc}",
                               "make that file writable, or set known_hosts in the "
                               "kernelspec to a writable file",
                               code="ssh.host-key-unrecorded") from None
