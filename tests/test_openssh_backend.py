"""The OpenSSH client backend on the set-ups real users have (issue 12), each on a real sshd.

Each set-up is first proved with plain ``ssh -F CONFIG ALIAS`` (BatchMode: what a user's
terminal would do without a prompt), then a cell runs through rk_jupyter with the kernelspec
naming only the alias and that config — through jupyter_client's KernelManager, as JupyterLab
starts kernels.  The faults of the set-ups (a failing ProxyCommand, an expired certificate, a
revoked host key, a password host with no open connection, a jump host that refuses
forwarding) each fail within connect_timeout + 2 s with a coded error naming cause and fix.

Kerberos/GSSAPI runs against a real MIT KDC (Debian's krb5-kdc) on this machine's loopback,
with an sshd that takes GSSAPI only.

Extra sshd daemons run inside the bed's network namespace on its loopback (reachable only
through the bed's own sshd: ProxyCommand, ProxyJump) or on its address (a firewall rule lets
that port in).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from rk_jupyter.cli import main as cli

from kernel_helpers import execute, start_fails, wait_for
from sshbed import SSHBed

CONNECT_TIMEOUT = 10.0  # the kernelspec's default
BOUND = CONNECT_TIMEOUT + 2.0
AGENT = r"(agent\.pyz|-m rk_jupyter\.agent) --host"
SSHD = "/usr/sbin/sshd"


@pytest.fixture(autouse=True)
def _only_chosen_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@dataclass
class Bed:
    """A bed, its extra daemons and the client files of a set-up."""

    bed: SSHBed
    dir: Path
    daemons: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def keygen(self, name: str, *extra: str) -> Path:
        path = self.dir / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f",
                        str(path), *extra], check=True, timeout=30)
        return path

    def sshd(self, listen: str, port: int, **options: str) -> str:
        """Another sshd in the bed's namespace; returns its host public key line."""
        host_key = self.keygen(f"sshd-{port}-host")
        config = {
            "Port": str(port), "ListenAddress": listen, "HostKey": str(host_key),
            "PidFile": str(self.dir / f"sshd-{port}.pid"),
            "AuthorizedKeysFile": os.path.join(self.bed.tmpdir, "authorized_keys", "%u"),
            "PasswordAuthentication": "no", "KbdInteractiveAuthentication": "no",
            "UsePAM": "no", "StrictModes": "no", "AllowTcpForwarding": "yes",
            "PrintMotd": "no", "UseDNS": "no", "LogLevel": "VERBOSE",
            "SetEnv": f"RKJ_SSHBED={self.bed.bed_id}", "Subsystem": "sftp internal-sftp",
            **options,
        }
        path = self.dir / f"sshd-{port}.conf"
        path.write_text("".join(f"{k} {v}\n" for k, v in config.items()))
        assert self.bed.ns, "these set-ups need the bed's network namespace"
        log = self.dir / f"sshd-{port}.log"
        daemon = subprocess.Popen(["ip", "netns", "exec", self.bed.ns, SSHD, "-D", "-f",
                                   str(path), "-E", str(log)], stdin=subprocess.DEVNULL,
                                  start_new_session=True)
        self.daemons.append(daemon)
        deadline = time.monotonic() + 10
        while "Server listening" not in (log.read_text() if log.exists() else ""):
            assert daemon.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        if listen != "127.0.0.1":
            subprocess.run(["ip", "netns", "exec", self.bed.ns, "nft", "add", "rule", "inet",
                            "rkjfw", "input", "tcp", "dport", str(port), "accept"],
                           check=True, timeout=10)
        return " ".join((host_key.with_suffix(".pub")).read_text().split()[:2])

    def known(self, name: str, host: str, port: int, key: str) -> Path:
        path = self.dir / name
        entry = host if port == 22 else f"[{host}]:{port}"
        with path.open("a") as file:
            file.write(f"{entry} {key}\n")
        return path

    def host_block(self, alias: str, *lines: str) -> str:
        return f"Host {alias}\n" + "".join(f"    {line}\n" for line in lines)

    def bed_lines(self) -> tuple[str, ...]:
        """The client lines that reach the bed's own sshd as its primary account."""
        b = self.bed
        return (f"HostName {b.host}", f"Port {b.port}", f"User {b.user}",
                f"IdentityFile {b.key_file}", "IdentitiesOnly yes",
                f"UserKnownHostsFile {b.known_hosts}", "GlobalKnownHostsFile /dev/null",
                "StrictHostKeyChecking yes", "BatchMode yes")

    def stop(self) -> None:
        for daemon in self.daemons:
            daemon.terminate()
        for daemon in self.daemons:
            try:
                daemon.wait(5)
            except subprocess.TimeoutExpired:
                daemon.kill()


@pytest.fixture
def make(sshbed_factory: Callable[..., SSHBed], tmp_path: Path) -> Iterator[Callable[..., Bed]]:
    made: list[Bed] = []

    def build(**kwargs: object) -> Bed:
        bed = sshbed_factory(**kwargs)
        if bed.mode != "netns":
            pytest.skip(f"needs a network namespace ({bed.fallback_reason})")
        directory = Path(tempfile_dir(tmp_path, len(made)))
        made.append(Bed(bed, directory))
        return made[-1]

    yield build
    for setup in made:
        setup.stop()


def tempfile_dir(tmp_path: Path, index: int) -> str:
    """A directory the bed's accounts can read (sshd reads keys as root; clients as us)."""
    directory = tmp_path / f"setup{index}"
    directory.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(directory, 0o755)
    return str(directory)


def write_config(setup: Bed, text: str, name: str = "ssh_config") -> str:
    path = setup.dir / name
    path.write_text(text)
    return str(path)


def plain_ssh(config: str, alias: str, command: str = "id -un",
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-F", config, "-o", "BatchMode=yes", alias,
                           *([command] if command else [])],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def add(prefix: str, name: str, alias: str, config: str, python: str, *extra: str) -> str:
    assert cli(["add", name, "--host", alias, "--ssh-config", config, "--remote-python", python,
                "--prefix", prefix, *extra]) == 0
    return f"rk-{name}"


def run_a_cell(spec: str, bed: SSHBed) -> None:
    """Start the kernel as JupyterLab does, run a cell, see it on the OpenSSH client, shut
    down, and check nothing is left on the remote."""
    km, kc = start_new_kernel(kernel_name=spec, startup_timeout=120)
    try:
        assert execute(kc, "2^10").results()[0]["data"]["text/plain"] == "1024"
        lease = km.provisioner.transport.lease
        assert lease.shared.connection.backend == "openssh"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    deadline = time.monotonic() + 15
    while bed.remote_processes(AGENT) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bed.remote_processes(AGENT) == []


# -- set-ups that must work ---------------------------------------------------------------------


def test_an_alias_from_an_included_file(make: Callable[..., Bed], jupyter_env: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    s = make()
    conf_d = s.dir / "conf.d"
    conf_d.mkdir()
    (conf_d / "lab.conf").write_text(s.host_block("included-lab", *s.bed_lines()))
    config = write_config(s, f"Include {conf_d}/*.conf\n")
    assert plain_ssh(config, "included-lab").stdout.strip() == s.bed.user
    run_a_cell(add(jupyter_env, "os-include", "included-lab", config, s.bed.remote_python),
               s.bed)
    # paramiko does not follow Include (the first failure): its doctor says so.
    spec = add(jupyter_env, "pm-include", "included-lab", config, s.bed.remote_python,
               "--ssh-client", "paramiko")
    capsys.readouterr()
    assert cli(["doctor", spec, "--json"]) == 1
    steps = {row["step"]: row for row in json.loads(capsys.readouterr().out)}
    assert "paramiko ignores of ssh_config: Include" in steps["kernelspec"]["detail"]
    assert steps["resolve"]["code"] == "ssh.dns-unresolved"


def test_a_match_host_block(make: Callable[..., Bed], jupyter_env: str) -> None:
    s = make()
    # The alias is only named by a Match; the rest comes from a Match on the host it became.
    hostname, *rest = s.bed_lines()
    # RemoteCommand and RequestTTY are a user's interactive settings; the kernel ignores them.
    rest += ["RemoteCommand echo interactive-login", "RequestTTY yes"]
    config = write_config(s, f"Match originalhost matched\n    {hostname}\n"
                          f"Match host {s.bed.host}\n" + "".join(f"    {r}\n" for r in rest))
    assert plain_ssh(config, "matched", "").stdout.strip() == "interactive-login"
    run_a_cell(add(jupyter_env, "os-match", "matched", config, s.bed.remote_python), s.bed)


def test_a_proxycommand_to_an_sshd_only_the_remote_reaches(make: Callable[..., Bed],
                                                            jupyter_env: str) -> None:
    s = make()
    key = s.sshd("127.0.0.1", 2222)
    known = s.known("known_inner", "127.0.0.1", 2222, key)
    config_path = s.dir / "ssh_config"
    config = write_config(s, s.host_block("gateway", *s.bed_lines()) + "\n" + s.host_block(
        "inner", "HostName 127.0.0.1", "Port 2222", f"User {s.bed.user}",
        f"IdentityFile {s.bed.key_file}", "IdentitiesOnly yes", f"UserKnownHostsFile {known}",
        "GlobalKnownHostsFile /dev/null", "BatchMode yes",
        f"ProxyCommand ssh -F {config_path} -W %h:%p gateway"))
    refused = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=2", "-o",
                              f"UserKnownHostsFile={known}", "-p", "2222", "127.0.0.1", "true"],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 255  # this machine's own 127.0.0.1:2222 is not the remote's
    assert plain_ssh(config, "inner").stdout.strip() == s.bed.user
    run_a_cell(add(jupyter_env, "os-proxycommand", "inner", config, s.bed.remote_python),
               s.bed)


def test_a_two_hop_proxyjump_chain_from_ssh_config(
        make: Callable[..., Bed], jupyter_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    s = make()
    hop2_key, target_key = s.sshd("127.0.0.1", 2223), s.sshd("127.0.0.1", 2224)
    known = s.known("known_chain", "127.0.0.1", 2223, hop2_key)
    s.known("known_chain", "127.0.0.1", 2224, target_key)
    common = (f"User {s.bed.user}", f"IdentityFile {s.bed.key_file}", "IdentitiesOnly yes",
              f"UserKnownHostsFile {known}", "GlobalKnownHostsFile /dev/null", "BatchMode yes")
    config = write_config(s, s.host_block("hop1", *s.bed_lines()) + s.host_block(
        "hop2", "HostName 127.0.0.1", "Port 2223", "ProxyJump hop1", *common) + s.host_block(
        "chain-target", "HostName 127.0.0.1", "Port 2224", "ProxyJump hop2", *common))
    assert plain_ssh(config, "chain-target").stdout.strip() == s.bed.user
    spec = add(jupyter_env, "os-chain", "chain-target", config, s.bed.remote_python)
    run_a_cell(spec, s.bed)
    # The doctor walks the same chain, step by step, with the OpenSSH client.
    capsys.readouterr()
    assert cli(["doctor", spec, "--json"]) == 0
    steps = {row["step"]: row for row in json.loads(capsys.readouterr().out)}
    assert "SSH client openssh" in steps["kernelspec"]["detail"]
    assert "ssh -G" in steps["resolve"]["detail"]
    assert "answers through hop2" in steps["reach"]["detail"]
    assert "OpenSSH (its own master)" in steps["auth"]["detail"]
    assert all(row["status"] in ("pass", "n/a") for row in steps.values()), steps


def certificate_login(s: Bed, port: int, alias: str, validity: str) -> tuple[Path, str]:
    """An sshd on ``port`` that takes user certificates of a CA only (AuthorizedKeysFile
    none), a key with a certificate valid for ``validity`` (ssh-keygen -V), and a client
    config for ``alias``; returns the key and the config."""
    user_ca = s.keygen(f"user_ca_{port}")
    host_key = s.sshd(s.bed.host, port, TrustedUserCAKeys=f"{user_ca}.pub",
                      AuthorizedKeysFile="none")
    key = s.keygen(f"{alias}-key")
    subprocess.run(["ssh-keygen", "-q", "-s", str(user_ca), "-I", "rkj", "-n", s.bed.user,
                    "-V", validity, f"{key}.pub"], check=True, timeout=30)
    known = s.known(f"known_{alias}", s.bed.host, port, host_key)
    return key, write_config(s, s.host_block(
        alias, f"HostName {s.bed.host}", f"Port {port}", f"User {s.bed.user}",
        f"IdentityFile {key}", "IdentitiesOnly yes", f"UserKnownHostsFile {known}",
        "GlobalKnownHostsFile /dev/null", "BatchMode yes"))


def test_a_user_certificate_without_authorized_keys(make: Callable[..., Bed],
                                                    jupyter_env: str) -> None:
    s = make()
    _, config = certificate_login(s, 2225, "certified", "+2h")
    assert plain_ssh(config, "certified").stdout.strip() == s.bed.user
    run_a_cell(add(jupyter_env, "os-user-cert", "certified", config, s.bed.remote_python),
               s.bed)


def test_a_host_certificate_trusted_through_cert_authority(make: Callable[..., Bed],
                                                           jupyter_env: str) -> None:
    s = make()
    host_ca = s.keygen("host_ca")
    host_key = s.keygen("signed-host")
    subprocess.run(["ssh-keygen", "-q", "-s", str(host_ca), "-h", "-I", "host", "-n",
                    s.bed.host, "-V", "+2h", f"{host_key}.pub"], check=True, timeout=30)
    s.sshd(s.bed.host, 2226, HostKey=str(host_key), HostCertificate=f"{host_key}-cert.pub")
    known = s.dir / "known_ca"
    authority = " ".join(Path(f"{host_ca}.pub").read_text().split()[:2])
    known.write_text(f"@cert-authority * {authority}\n")
    config = write_config(s, s.host_block(
        "hostcert", f"HostName {s.bed.host}", "Port 2226", f"User {s.bed.user}",
        f"IdentityFile {s.bed.key_file}", "IdentitiesOnly yes", f"UserKnownHostsFile {known}",
        "GlobalKnownHostsFile /dev/null", "BatchMode yes", "StrictHostKeyChecking yes"))
    assert plain_ssh(config, "hostcert").stdout.strip() == s.bed.user
    run_a_cell(add(jupyter_env, "os-host-cert", "hostcert", config, s.bed.remote_python),
               s.bed)


PASSWORD_USER = "rkjpass"


@pytest.fixture
def password_host(make: Callable[..., Bed]) -> Iterator[tuple[Bed, str, dict[str, str]]]:
    """A password-only account; a config with ControlMaster auto, as the MFA recipe says;
    the environment of an askpass helper that types the password (never in an argv)."""
    s = make(users=[PASSWORD_USER], sshd_options={
        "PasswordAuthentication": "yes", "PubkeyAuthentication": "no"})
    password = f"pw-{os.getpid()}-{time.monotonic_ns()}"
    subprocess.run(["chpasswd"], input=f"{PASSWORD_USER}:{password}\n", text=True, check=True,
                   timeout=30)
    secret = s.dir / "secret"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    askpass = s.dir / "askpass"
    askpass.write_text(f"#!/bin/sh\ncat {shlex.quote(str(secret))}\n")
    askpass.chmod(0o700)
    sockets = tempfile.mkdtemp(prefix="rkcm-")  # a socket path must fit in 108 bytes
    config = write_config(s, s.host_block(
        "mfa-host", f"HostName {s.bed.host}", f"Port {s.bed.port}", f"User {PASSWORD_USER}",
        f"UserKnownHostsFile {s.bed.known_hosts}", "GlobalKnownHostsFile /dev/null",
        "StrictHostKeyChecking yes", "ControlMaster auto",
        f"ControlPath {sockets}/cm-%C", "ControlPersist 600"))
    env = {"SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
    yield s, config, env
    subprocess.run(["ssh", "-F", config, "-O", "exit", "mfa-host"], capture_output=True,
                   timeout=30)
    shutil.rmtree(sockets, ignore_errors=True)


def test_a_password_host_through_the_users_open_connection(
        password_host: tuple[Bed, str, dict[str, str]], jupyter_env: str) -> None:
    s, config, env = password_host
    # Log in once without a terminal, as the README's recipe does in one.
    started = subprocess.run(["setsid", "ssh", "-F", config, "-fN", "mfa-host"],
                             env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                             capture_output=True, timeout=30)
    assert started.returncode == 0, started.stderr
    assert plain_ssh(config, "mfa-host").stdout.strip() == PASSWORD_USER
    spec = add(jupyter_env, "os-mfa", "mfa-host", config, s.bed.remote_python)
    run_a_cell(spec, s.bed)
    # The user's connection is theirs: still open after the kernel's shutdown.
    assert subprocess.run(["ssh", "-F", config, "-O", "check", "mfa-host"], capture_output=True,
                          timeout=30).returncode == 0
    # A Jupyter side killed with SIGKILL leaves no client on the user's master holding a
    # remote command's stdin open (the agent's lifeline): the remote command sees EOF.
    marker = f"rkj-lifeline-{os.getpid()}"
    script = (
        "import sys, time\n"
        "from rk_jupyter.provisioning.settings import LaunchSettings\n"
        "from rk_jupyter.provisioning.ssh import backend\n"
        f"s = LaunchSettings(transport='ssh', host='mfa-host', ssh_config={config!r})\n"
        "c = backend.connect(backend.resolve(s), 'strict', 10, 0)\n"
        f"c.exec({s.bed.remote_python!r} + ' -c \"import sys; sys.stdin.read()\" {marker}', 10)\n"
        "print('ready', flush=True); time.sleep(600)\n")
    side = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert side.stdout.readline().strip() == "ready"
        assert wait_for(lambda: s.bed.remote_processes(marker, PASSWORD_USER), 10)
    finally:
        side.kill()
        side.wait()
    assert wait_for(lambda: not s.bed.remote_processes(marker, PASSWORD_USER), 10)


# -- faults: each names cause and fix, within connect_timeout + 2 s ----------------------------


def test_a_password_host_without_an_open_connection(
        password_host: tuple[Bed, str, dict[str, str]], jupyter_env: str) -> None:
    s, config, _ = password_host
    assert plain_ssh(config, "mfa-host").returncode == 255
    spec = add(jupyter_env, "os-mfa-none", "mfa-host", config, s.bed.remote_python,
               "--ssh-client", "openssh")
    message = start_fails(spec, BOUND, "ssh.auth-interactive")
    assert "password" in message and "ssh -o ControlMaster=auto" in message
    assert "ControlPersist" in message and "mfa-host" in message


def test_a_failing_proxycommand(make: Callable[..., Bed], jupyter_env: str) -> None:
    s = make()
    config = write_config(s, s.host_block(
        "broken-proxy", *s.bed_lines(),
        "ProxyCommand sh -c 'echo bastion says no >&2; exit 1'"))
    assert "bastion says no" in plain_ssh(config, "broken-proxy").stderr
    message = start_fails(add(jupyter_env, "os-bad-proxy", "broken-proxy", config,
                              s.bed.remote_python), BOUND, "ssh.proxy-failed")
    assert "ProxyCommand" in message and "bastion says no" in message
    assert "ssh -v broken-proxy" in message


def test_an_expired_user_certificate(make: Callable[..., Bed], jupyter_env: str) -> None:
    s = make()
    key, config = certificate_login(s, 2227, "expired-cert", "20200101:20200102")
    assert "Permission denied" in plain_ssh(config, "expired-cert").stderr
    message = start_fails(add(jupyter_env, "os-expired", "expired-cert", config,
                              s.bed.remote_python), BOUND, "ssh.auth-cert-expired")
    assert f"the certificate {key}-cert.pub expired on 2020-01-02" in message
    assert "renew the certificate" in message


def test_a_revoked_host_key(make: Callable[..., Bed], jupyter_env: str) -> None:
    s = make()
    known = s.dir / "known_revoked"
    shutil.copy(s.bed.known_hosts, known)
    with known.open("a") as file:
        file.write(f"@revoked * {' '.join(s.bed.host_key.split()[:2])}\n")
    lines = [line if not line.startswith("UserKnownHostsFile") else
             f"UserKnownHostsFile {known}" for line in s.bed_lines()]
    config = write_config(s, s.host_block("revoked", *lines))
    assert "REVOKED HOST KEY" in plain_ssh(config, "revoked").stderr
    message = start_fails(add(jupyter_env, "os-revoked", "revoked", config,
                              s.bed.remote_python), BOUND, "ssh.host-key-revoked")
    assert "marked @revoked" in message and "administrator" in message


def test_a_jump_host_that_refuses_forwarding(make: Callable[..., Bed], jupyter_env: str) -> None:
    s = make(sshd_options={"AllowTcpForwarding": "no", "DisableForwarding": "yes"})
    config = write_config(s, s.host_block("no-forward-jump", *s.bed_lines()) + s.host_block(
        "behind", "HostName 127.0.0.1", "Port 22", f"User {s.bed.user}",
        f"IdentityFile {s.bed.key_file}", "IdentitiesOnly yes",
        f"UserKnownHostsFile {s.bed.known_hosts}", "GlobalKnownHostsFile /dev/null",
        "BatchMode yes", "ProxyJump no-forward-jump"))
    said = plain_ssh(config, "behind").stderr
    assert "administratively prohibited" in said or "stdio forwarding failed" in said
    message = start_fails(add(jupyter_env, "os-jump-refuses", "behind", config,
                              s.bed.remote_python), BOUND, "ssh.jump-forwarding-refused")
    assert "refused to forward" in message and "AllowTcpForwarding" in message


# -- Kerberos / GSSAPI against a real MIT KDC ------------------------------------------------------

REALM = "RKJ.TEST"


@pytest.fixture
def kerberos(make: Callable[..., Bed], monkeypatch: pytest.MonkeyPatch,
             tmp_path: Path) -> Iterator[tuple[Bed, str]]:
    """A realm with a KDC on this machine's loopback, a host principal for an sshd that takes
    GSSAPI only (no keys, no passwords), and the bed's user holding a ticket (kinit from a
    keytab); yields the bed and a client config for alias "kerberized"."""
    if shutil.which("krb5kdc") is None:
        pytest.fail("krb5kdc is not installed (.ci/install-system-packages.sh installs it)")
    s = make()
    realm_dir = Path(tempfile.mkdtemp(prefix="rkj-krb5-"))
    port = _free_tcp_port()
    conf, profile = realm_dir / "krb5.conf", realm_dir / "kdc.conf"
    conf.write_text(
        f"[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = false\n"
        " dns_lookup_realm = false\n rdns = false\n dns_canonicalize_hostname = false\n"
        f"[realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{port}\n }}\n")
    profile.write_text(
        f"[kdcdefaults]\n kdc_ports = {port}\n kdc_tcp_ports = {port}\n"
        f"[realms]\n {REALM} = {{\n  database_name = {realm_dir}/principal\n"
        f"  key_stash_file = {realm_dir}/stash\n  acl_file = {realm_dir}/kadm5.acl\n }}\n")
    env = {"KRB5_CONFIG": str(conf), "KRB5_KDC_PROFILE": str(profile),
           "KRB5CCNAME": f"FILE:{realm_dir}/ccache"}
    run = {"env": {**os.environ, **env}, "check": True, "capture_output": True, "timeout": 60}
    subprocess.run(["kdb5_util", "create", "-s", "-r", REALM, "-P", os.urandom(12).hex()],
                   **run)
    host_principal = f"host/{s.bed.host}@{REALM}"
    user_keytab, sshd_keytab = realm_dir / "user.keytab", realm_dir / "sshd.keytab"
    for command in (f"addprinc -randkey {s.bed.user}@{REALM}",
                    f"addprinc -randkey {host_principal}",
                    f"ktadd -k {user_keytab} {s.bed.user}@{REALM}",
                    f"ktadd -k {sshd_keytab} {host_principal}"):
        subprocess.run(["kadmin.local", "-r", REALM, "-q", command], **run)
    kdc = subprocess.Popen(["krb5kdc", "-n", "-r", REALM], env=run["env"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["kinit", "-k", "-t", str(user_keytab), f"{s.bed.user}@{REALM}"],
                             env=run["env"], capture_output=True, timeout=30).returncode:
            assert time.monotonic() < deadline and kdc.poll() is None, "the KDC did not start"
            time.sleep(0.1)
        for name, value in env.items():
            monkeypatch.setenv(name, value)  # the provisioner's ssh inherits the ticket
        monkeypatch.setenv("KRB5_KTNAME", str(sshd_keytab))  # for the sshd started next
        key = s.sshd(s.bed.host, 2228, GSSAPIAuthentication="yes",
                     GSSAPIStrictAcceptorCheck="no", PubkeyAuthentication="no",
                     AuthorizedKeysFile="none")
        monkeypatch.delenv("KRB5_KTNAME")
        known = s.known("known_krb", s.bed.host, 2228, key)
        config = write_config(s, s.host_block(
            "kerberized", f"HostName {s.bed.host}", "Port 2228", f"User {s.bed.user}",
            "GSSAPIAuthentication yes", "PubkeyAuthentication no", f"UserKnownHostsFile {known}",
            "GlobalKnownHostsFile /dev/null", "BatchMode yes"))
        yield s, config
    finally:
        kdc.terminate()
        kdc.wait(10)
        shutil.rmtree(realm_dir, ignore_errors=True)


def _free_tcp_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_kerberos_gssapi_login(kerberos: tuple[Bed, str], jupyter_env: str) -> None:
    s, config = kerberos
    assert plain_ssh(config, "kerberized").stdout.strip() == s.bed.user
    run_a_cell(add(jupyter_env, "os-kerberos", "kerberized", config, s.bed.remote_python), s.bed)
    subprocess.run(["kdestroy"], capture_output=True, timeout=30)  # no ticket: a clear refusal
    spec = add(jupyter_env, "os-kerberos-noticket", "kerberized", config, s.bed.remote_python)
    message = start_fails(spec, BOUND, "ssh.auth-refused")
    assert "Kerberos" in message and "kinit" in message and "gssapi-with-mic" in message
