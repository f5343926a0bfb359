"""What the OpenSSH client's own diagnostics on stderr mean, as coded TransportErrors.

The OpenSSH backend never re-implements what ssh checks (host keys, certificates, proxies,
authentication): it lets ssh do it and reads what ssh says when it refuses.  This table is
the one place ssh's wording is matched; every other module branches on the codes it yields
(``ssh.host-key-unknown``, ``ssh.auth-interactive``, …), the same codes the paramiko
backend raises for the same causes.  ssh's own lines are kept in the cause, so nothing ssh
said is lost.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import TransportError
from .target import SSHTarget

#: The recipe for a host that needs a password or a one-time code: a master the user opens
#: once in a terminal carries every later session (rk_jupyter never prompts).
MFA_FIX = ("this host asks for a password or a one-time code, and rk_jupyter never prompts. "
           "Log in once in a terminal with a shared connection that stays open:\n"
           "    ssh -o ControlMaster=auto -o ControlPath=~/.ssh/cm-%C -o ControlPersist=yes "
           "{alias}\n"
           "then start the kernel again: it rides that connection. To make it permanent, add "
           "to ~/.ssh/config:\n"
           "    Host {alias}\n        ControlMaster auto\n        ControlPath ~/.ssh/cm-%C\n"
           "        ControlPersist 12h\n"
           "Or use a key: put your public key in ~/.ssh/authorized_keys there (ssh-copy-id).")


@dataclass(frozen=True)
class _Rule:
    """One diagnosis: a pattern over ssh's stderr, and the error it means."""

    pattern: re.Pattern[str]
    code: str
    explain: Callable[[re.Match[str], SSHTarget, float], tuple[str, str]]


def _unknown(m: re.Match[str], t: SSHTarget, timeout: float) -> tuple[str, str]:
    files = ", ".join((*t.known_hosts_files, *t.global_known_hosts_files)) or "none"
    file = t.known_hosts_files[0] if t.known_hosts_files else "~/.ssh/known_hosts"
    kind = re.search(r"No (\S+) host key is known", m.string)
    scan_type = f"-t {kind.group(1).lower()} " if kind else ""
    return (f"the SSH host key of {t.known_hosts_name} is unknown: no known_hosts file lists "
            f"this host (looked in: {files})",
            "rk_jupyter checks host keys strictly and never asks. If you trust the host, "
            f"connect once with ssh and answer yes:\n    ssh {t.alias}\n"
            f"or add its key with ssh-keyscan (then compare: ssh-keygen -lf {file}):\n"
            f"    ssh-keyscan -p {t.port} {scan_type}{shlex.quote(t.hostname)} >> {file}\n"
            "or set \"host_key_policy\": \"accept-new\" in the kernelspec to trust a host's "
            "first key automatically.")


def _changed(m: re.Match[str], t: SSHTarget, timeout: float) -> tuple[str, str]:
    offending = re.search(r"Offending .* key in (?P<file>.+):(?P<line>\d+)", m.string)
    remove = (f"ssh-keygen -f {shlex.quote(offending['file'])} -R "
              f"{shlex.quote(t.known_hosts_name)}") if offending else \
        f"ssh-keygen -R {shlex.quote(t.known_hosts_name)}"
    return ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\n"
            f"{t.known_hosts_name} offered another host key than known_hosts records. Someone "
            "could be eavesdropping on you right now (a man-in-the-middle attack), or the host "
            "key has just been replaced. rk_jupyter refused to connect",
            f"if you know why the key changed, remove the old entry with:\n    {remove}\n"
            "then trust the new key (connect once with ssh).")


def _revoked(m: re.Match[str], t: SSHTarget, timeout: float) -> tuple[str, str]:
    return (f"the host key offered by {t.known_hosts_name} is marked @revoked in known_hosts; "
            "rk_jupyter refused to connect",
            "a revoked key may be stolen: ask the host's administrator for its current key")


def _interactive(m: re.Match[str], t: SSHTarget, timeout: float) -> tuple[str, str]:
    return (f"{t.user}@{t.hostname} accepts no key of yours without a password or a code "
            f"(it offers: {m.group('methods')}), and there is no open ssh connection to ride",
            MFA_FIX.format(alias=t.alias))


def _refused_key(m: re.Match[str], t: SSHTarget, timeout: float) -> tuple[str, str]:
    keys = ", ".join(t.identity_files) or "ssh-agent's keys and ~/.ssh/id_*"
    if "gssapi" in m.group("methods") and "publickey" not in m.group("methods"):
        return (f"{t.hostname}:{t.port} refused the login of {t.user}: it takes Kerberos "
                f"(GSSAPI) only, and no valid ticket was accepted",
                "get a ticket with kinit (klist shows the ones you hold; they expire), then "
                "start the kernel again")
    return (f"{t.hostname}:{t.port} refused the login of {t.user}: no offered key or "
            f"certificate was accepted (tried: {keys})",
            f"put your public key in ~{t.user}/.ssh/authorized_keys on {t.hostname} (e.g. "
            "ssh-copy-id), set identity_file in the kernelspec, or load the key into "
            "ssh-agent (ssh-add); for a certificate, check that it is valid now "
            "(ssh-keygen -L -f KEY-cert.pub) and renew it if it expired.")


def _proxy(m: re.Match[str], t: SSHTarget, timeout: float) -> tuple[str, str]:
    how = (f"the jump host(s) {t.via.split(' ', 1)[1]}" if t.via.startswith("ProxyJump")
           else f"the {t.via}" if t.via else "the proxy")
    return (f"{how} ended before the SSH server answered",
            f"run the proxy on its own to see why (its own words are above); test with "
            f"ssh -v {t.alias}")


def _dns(m: re.Match[str], t: SSHTarget, timeout: float) -> tuple[str, str]:
    return (f"cannot resolve the host name {m.group('host')!r}",
            "check host in the kernelspec, or the HostName of that alias in your ssh_config; "
            "a name known only inside a VPN or a private network needs that network (try: "
            f"getent hosts {m.group('host')})")


def _where(m: re.Match[str]) -> str:
    host = m.group("host")
    return f"[{host}]:{m.group('port')}" if ":" in host else f"{host}:{m.group('port')}"


def _refused(m: re.Match[str], t: SSHTarget, timeout: float) -> tuple[str, str]:
    return (f"{_where(m)} refused the connection",
            "is sshd running there, and is the port right (port in the kernelspec, or Port "
            "in ssh_config)?")


def _no_answer(m: re.Match[str], t: SSHTarget, timeout: float) -> tuple[str, str]:
    return (f"no answer from {_where(m)} within {timeout:g} s (connect_timeout)",
            "the host is down, or a firewall drops SSH on the way; check the host and port, "
            "and that SSH is let through (VPN?); on a slow network raise connect_timeout in "
            "the kernelspec")


def _unreachable(m: re.Match[str], t: SSHTarget, timeout: float) -> tuple[str, str]:
    return (f"cannot reach {_where(m)}: {m.group('why')}",
            "check the host and the network route to it")


def _banner(m: re.Match[str], t: SSHTarget, timeout: float) -> tuple[str, str]:
    return (f"{t.hostname}:{t.port} did not complete the SSH handshake within {timeout:g} s",
            "is it an SSH server? On a slow network raise connect_timeout in the kernelspec")


def _jump_forwarding(m: re.Match[str], t: SSHTarget, timeout: float) -> tuple[str, str]:
    return (f"a jump host ({t.via or 'ProxyJump'}) refused to forward the connection to "
            f"{t.hostname}:{t.port} ({m.group(0).strip()})",
            "its sshd must allow TCP forwarding for your account (AllowTcpForwarding yes; "
            "no DisableForwarding, no restrict/no-port-forwarding on your key); or reach the "
            "host another way (ProxyCommand, VPN)")


def _config(m: re.Match[str], t: SSHTarget, timeout: float) -> tuple[str, str]:
    return ("ssh cannot read its configuration", "correct the line ssh names above")


# In order: the first rule that matches names the cause (a host key refusal also prints
# "Host key verification failed", a failed proxy also "Connection closed").
_RULES = (
    _Rule(re.compile(r"REVOKED HOST KEY|was revoked and you have requested"),
          "ssh.host-key-revoked", _revoked),
    _Rule(re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed"),
          "ssh.host-key-changed", _changed),
    _Rule(re.compile(r"host key is known for .* you have requested strict checking|"
                     r"Host key verification failed"), "ssh.host-key-unknown", _unknown),
    _Rule(re.compile(r"Bad configuration option|bad configuration options|"
                     r"Can't open user config file|Bad owner or permissions on|"
                     r"line \d+: .*(unsupported|invalid|missing|bad)", re.I),
          "ssh.config-unreadable", _config),
    _Rule(re.compile(r"Could not resolve hostname (?P<host>[^:\s]+)"), "ssh.dns-unresolved",
          _dns),
    _Rule(re.compile(r"administratively prohibited|stdio forwarding failed"),
          "ssh.jump-forwarding-refused", _jump_forwarding),
    _Rule(re.compile(r"Permission denied \((?P<methods>[^)]*(password|keyboard-interactive)"
                     r"[^)]*)\)"), "ssh.auth-interactive", _interactive),
    _Rule(re.compile(r"Permission denied \((?P<methods>[^)]*)\)"), "ssh.auth-refused",
          _refused_key),
    _Rule(re.compile(r"connect to host (?P<host>\S+) port (?P<port>\d+): Connection refused"),
          "ssh.refused", _refused),
    _Rule(re.compile(r"connect to host (?P<host>\S+) port (?P<port>\d+): (Connection timed out|"
                     r"Operation timed out)"), "ssh.no-answer", _no_answer),
    _Rule(re.compile(r"connect to host (?P<host>\S+) port (?P<port>\d+): (?P<why>.+)"),
          "ssh.unreachable", _unreachable),
    _Rule(re.compile(r"Connection timed out during banner exchange"), "ssh.handshake", _banner),
    # ssh's words for a proxy that ended: as it read the server's banner, or as it wrote its
    # own ("banner exchange: Connection to UNKNOWN port 65535: Broken pipe"), whichever came
    # first; UNKNOWN is how ssh names the far end of a ProxyCommand.
    _Rule(re.compile(r"kex_exchange_identification|Connection closed by UNKNOWN|"
                     r"Connection to UNKNOWN port \d+: Broken pipe|"
                     r"ssh_exchange_identification"), "ssh.proxy-failed", _proxy),
)


_UNREACHED = ("ssh.refused", "ssh.no-answer", "ssh.unreachable", "ssh.dns-unresolved")


def diagnose(stderr: str, target: SSHTarget, timeout: float) -> TransportError:
    """The error ssh's ``stderr`` (its last words before giving up) means for ``target``.

    ssh's own lines end the fix (indented: JupyterLab's dialog keeps them whole, and the
    sentences before them wrap); what matched nothing is ``ssh.failed`` with ssh's
    words and the command that shows more.  A refused login whose keys could not even be
    offered (missing, passphrase-protected and not in ssh-agent) is ``ssh.auth-no-key``
    with the reason for each, as the paramiko backend says it.
    """
    said = _quote(stderr)
    for rule in _RULES:
        found = rule.pattern.search(stderr)
        if not found:
            continue
        cause, fix = rule.explain(found, target, timeout)
        code = rule.code
        if code in _UNREACHED and target.via.startswith("ProxyJump "):
            cause = (f"the jump host {target.via.split(' ', 1)[1]} (proxy_jump, or ProxyJump "
                     f"in ssh_config) cannot be reached: {cause}")
            code = "ssh.jump-unreachable"
        elif code == "ssh.auth-refused":
            unusable = _unusable_keys(target)
            expired = _expired_certificates(target)
            if expired:
                cause = (f"{target.hostname}:{target.port} refused the login of {target.user}: "
                         f"{'; '.join(expired)}")
                fix = ("renew the certificate (ask whoever signs your SSH certificates: your "
                       "CA's tool, or ssh-keygen -s CA -I ID -n USER -V +1d KEY.pub), then "
                       "start the kernel again")
                code = "ssh.auth-cert-expired"
            elif unusable is not None:
                cause = (f"no usable key to log in to {target.hostname}:{target.port} as "
                         f"{target.user} ({'; '.join(unusable)})")
                fix = ("set identity_file in the kernelspec to a key without a passphrase, "
                       "or load the key into ssh-agent (ssh-add); or log in once with a "
                       "shared connection (ControlMaster) that the kernel rides.")
                code = "ssh.auth-no-key"
        return TransportError(cause, f"{fix}\nssh said:\n{said}", code=code)
    return TransportError(f"ssh could not connect to {target}",
                          f"run ssh -v {target.alias} to see more\nssh said:\n{said}",
                          code="ssh.failed")


def _unusable_keys(target: SSHTarget) -> list[str] | None:
    """Why none of ``target``'s keys could be offered, one note per key (and ssh-agent);
    None when some key could be (the server refused it: ``ssh.auth-refused`` stands)."""
    from .connect import _encrypted  # reads the key file's format; no key is loaded

    files = _identity_files(target)
    notes = []
    usable = False
    agent = os.environ.get("SSH_AUTH_SOCK", "")
    if agent:
        try:
            listed = subprocess.run(["ssh-add", "-l"], capture_output=True, timeout=5,
                                    stdin=subprocess.DEVNULL)
            if listed.returncode == 1:
                notes.append(f"ssh-agent ({agent}) holds no keys")
            else:
                usable = True
        except (OSError, subprocess.TimeoutExpired):
            usable = True  # cannot tell: do not claim there was no key
    for path in files:
        if not os.path.exists(path):
            notes.append(f"{path} does not exist")
        elif _encrypted(path):
            notes.append(f"{path} is passphrase-protected (load it into ssh-agent: ssh-add "
                         f"{path})")
        else:
            usable = True
    return None if usable or not (notes or files) else notes


def _identity_files(target: SSHTarget) -> list[str]:
    options = list(target.ssh_options)
    given = [options[i + 1] for i, flag in enumerate(options[:-1]) if flag == "-i"]
    return list(dict.fromkeys([*given, *target.identity_files]))


def _expired_certificates(target: SSHTarget) -> list[str]:
    """The user certificates next to ``target``'s keys (KEY-cert.pub, as ssh looks for
    them) that are not valid now, each with its validity as ssh-keygen -L reads it."""
    found = []
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    for key in _identity_files(target):
        cert = key[:-4] + "-cert.pub" if key.endswith(".pub") else key + "-cert.pub"
        if not os.path.exists(cert):
            continue
        try:
            listed = subprocess.run(["ssh-keygen", "-L", "-f", cert], capture_output=True,
                                    text=True, timeout=5, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            continue
        valid = re.search(r"Valid: from (\S+) to (\S+)", listed.stdout)
        if valid and not valid.group(1) <= now <= valid.group(2):
            when = "expired on" if valid.group(2) < now else "is not valid before"
            date = valid.group(2) if valid.group(2) < now else valid.group(1)
            found.append(f"the certificate {cert} {when} {date} (valid from "
                         f"{valid.group(1)} to {valid.group(2)})")
    return found


def _quote(stderr: str) -> str:
    lines = [line.rstrip() for line in stderr.replace("\r", "").splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("@@@@")]
    return "\n".join(f"    {line}" for line in lines[-12:]) or "    (nothing)"
