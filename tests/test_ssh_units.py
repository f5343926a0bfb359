"""Pure logic of the ssh transport: ssh_config resolution, known_hosts checks and their
messages, the agent zipapp and its launch command.  No network, no sshd."""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import paramiko
import pytest

from rk_jupyter import __version__
from rk_jupyter.provisioning.ssh import deploy
from rk_jupyter.provisioning.ssh.hostkeys import (
    ChangedHostKeyError,
    HostKeyChecker,
    UnknownHostKeyError,
    fingerprint,
)
from rk_jupyter.provisioning.ssh.target import (
    SSHTarget,
    load_ssh_config,
    parse_destination,
    resolve_target,
)
from rk_jupyter.provisioning.transports import TransportError

# -- [user@]host[:port] -----------------------------------------------------------------------


@pytest.mark.parametrize("text, host, user, port", [
    ("example.org", "example.org", None, None),
    ("ada@example.org", "example.org", "ada", None),
    ("ada@example.org:2222", "example.org", "ada", 2222),
    ("10.0.0.7:22", "10.0.0.7", None, 22),
    ("bob@[::1]:2200", "::1", "bob", 2200),
    ("[fe80::1]", "fe80::1", None, None),
])
def test_destinations_parse(text: str, host: str, user: str | None, port: int | None) -> None:
    dest = parse_destination(text)
    assert (dest.host, dest.user, dest.port) == (host, user, port)


@pytest.mark.parametrize("text, why", [
    ("", "not [user@]host[:port]"),
    ("ada@", "not [user@]host[:port]"),
    ("host:abc", "port must be a number"),
    ("host:0", "port must be a number"),
    ("host:70000", "port must be a number"),
    ("a b", "not [user@]host[:port]"),
    ("a@b@c", "not [user@]host[:port]"),
])
def test_bad_destinations_say_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        parse_destination(text)


# -- ssh_config --------------------------------------------------------------------------------


@pytest.fixture
def ssh_config(tmp_path: Path) -> paramiko.SSHConfig:
    (tmp_path / "key1").write_text("")
    text = f"""
Host lab
    HostName lab.internal
    User ada
    Port 2222
    IdentityFile {tmp_path}/key1
    IdentitiesOnly yes
    ProxyJump gate
    UserKnownHostsFile {tmp_path}/kh1 {tmp_path}/kh2

Host gate
    HostName gate.example.org
    User jump
    Port 2200

Host *
    IdentityFile {tmp_path}/key_all
"""
    path = tmp_path / "config"
    path.write_text(text)
    return load_ssh_config(str(path))


def test_alias_resolves_like_ssh(ssh_config: paramiko.SSHConfig, tmp_path: Path) -> None:
    target = resolve_target("lab", ssh_config=ssh_config)
    assert (target.hostname, target.user, target.port) == ("lab.internal", "ada", 2222)
    assert target.identity_files == (f"{tmp_path}/key1", f"{tmp_path}/key_all")
    assert target.identities_only
    assert target.known_hosts_files == (f"{tmp_path}/kh1", f"{tmp_path}/kh2")
    assert target.known_hosts_name == "[lab.internal]:2222"
    [gate] = target.jumps
    assert (gate.hostname, gate.user, gate.port) == ("gate.example.org", "jump", 2200)
    assert str(target) == "ada@lab.internal:2222 via jump@gate.example.org:2200"
    assert target.key == ("paramiko", "ada", "lab.internal", 2222)


def test_kernelspec_keys_win_over_ssh_config(ssh_config: paramiko.SSHConfig,
                                             tmp_path: Path) -> None:
    target = resolve_target("lab", port=22, user="bob", identity_file="~/other",
                            proxy_jump="none", known_hosts=str(tmp_path / "mine"),
                            ssh_config=ssh_config)
    assert (target.hostname, target.user, target.port) == ("lab.internal", "bob", 22)
    assert target.identity_files[0] == os.path.expanduser("~/other")
    assert target.known_hosts_files == (str(tmp_path / "mine"),)
    assert target.known_hosts_name == "lab.internal"
    assert target.jumps == ()


def test_explicit_jump_chain(ssh_config: paramiko.SSHConfig) -> None:
    target = resolve_target("plain.example.org", proxy_jump="gate,eve@10.1.1.1:2022",
                            ssh_config=ssh_config)
    assert [(j.hostname, j.user, j.port) for j in target.jumps] == [
        ("gate.example.org", "jump", 2200), ("10.1.1.1", "eve", 2022)]
    assert target.port == 22 and target.hostname == "plain.example.org"
    with pytest.raises(TransportError, match="bad ProxyJump entry"):
        resolve_target("x", proxy_jump="a b", ssh_config=ssh_config)


def test_missing_explicit_ssh_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="does not exist"):
        load_ssh_config(str(tmp_path / "nope"))


# -- known_hosts -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[paramiko.PKey, paramiko.PKey]:
    """Two public host keys, made with ssh-keygen (paramiko cannot generate ed25519)."""
    out = []
    for name in ("a", "b"):
        path = tmp_path_factory.mktemp("hostkey") / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                       check=True, timeout=30)
        kind, b64 = path.with_suffix(".pub").read_text().split()[:2]
        out.append(paramiko.PKey.from_type_string(kind, base64.b64decode(b64)))
    return out[0], out[1]


def _target(known_hosts: Path, host: str = "h.example", port: int = 2222) -> SSHTarget:
    return resolve_target(host, port=port, user="ada", known_hosts=str(known_hosts),
                          ssh_config=paramiko.SSHConfig())


def _line(name: str, key: paramiko.PKey) -> str:
    return f"{name} {key.get_name()} {key.get_base64()}\n"


def test_fingerprint_is_the_one_ssh_keygen_prints(keys, tmp_path: Path) -> None:
    key = keys[0]
    pub = tmp_path / "k.pub"
    pub.write_text(_line("x", key).split(" ", 1)[1])
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert fingerprint(key) in out


@pytest.mark.parametrize("name", ["[h.example]:2222", "[h.*]:2222", "other,[h.example]:2222"])
def test_known_key_passes(keys, tmp_path: Path, name: str) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text("# comment\n\n" + _line(name, keys[0]))
    HostKeyChecker(_target(kh)).verify(keys[0])


def test_hashed_entry_passes(keys, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(_line(paramiko.HostKeys.hash_host("[h.example]:2222"), keys[0]))
    HostKeyChecker(_target(kh)).verify(keys[0])
    with pytest.raises(UnknownHostKeyError):  # the hash is of another name
        HostKeyChecker(_target(kh, port=22)).verify(keys[0])


def test_negated_pattern_does_not_vouch(keys, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(_line("[h.*]:2222,![h.example]:2222", keys[0]))
    with pytest.raises(UnknownHostKeyError):
        HostKeyChecker(_target(kh)).verify(keys[0])


def test_unknown_key_message_says_how_to_trust_it(keys, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(_line("[elsewhere]:2222", keys[0]))
    with pytest.raises(UnknownHostKeyError) as err:
        HostKeyChecker(_target(kh)).verify(keys[1])
    message = str(err.value)
    print(message)
    assert err.value.code == "ssh.host-key-unknown"
    assert "is unknown" in err.value.cause and "ssh-keyscan" in err.value.fix
    assert "is unknown" in message and fingerprint(keys[1]) in message
    assert f"ssh-keyscan -p 2222 -t ed25519 h.example >> {kh}" in message
    assert f"ssh -o UserKnownHostsFile={kh} -p 2222 ada@h.example" in message
    assert "accept-new" in message


def test_changed_key_is_refused_loudly(keys, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text("# first line\n" + _line("[h.example]:2222", keys[0]))
    for policy in ("strict", "accept-new"):
        with pytest.raises(ChangedHostKeyError) as err:
            HostKeyChecker(_target(kh), policy).verify(keys[1])
        message = str(err.value)
        assert err.value.code == "ssh.host-key-changed"
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in message
        assert f"{kh}:2" in message
        assert fingerprint(keys[0]) in message and fingerprint(keys[1]) in message
        assert f"ssh-keygen -f {kh} -R '[h.example]:2222'" in message


def test_revoked_key_is_refused(keys, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text("@revoked " + _line("*", keys[0]))
    with pytest.raises(ChangedHostKeyError, match="@revoked") as err:
        HostKeyChecker(_target(kh), "accept-new").verify(keys[0])
    assert err.value.code == "ssh.host-key-revoked"


def test_accept_new_records_the_key_once_asked(keys, tmp_path: Path) -> None:
    kh = tmp_path / "sub" / "known_hosts"
    with pytest.raises(UnknownHostKeyError):
        HostKeyChecker(_target(kh)).verify(keys[0])
    assert not kh.exists()
    HostKeyChecker(_target(kh), "accept-new").verify(keys[0])
    assert kh.read_text() == _line("[h.example]:2222", keys[0])
    assert kh.stat().st_mode & 0o777 == 0o600
    HostKeyChecker(_target(kh)).verify(keys[0])  # strict now passes


def test_known_key_types_are_preferred(keys, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(_line("[h.example]:2222", keys[0]))
    order = HostKeyChecker(_target(kh)).preferred_key_types(
        ("ecdsa-sha2-nistp256", "rsa-sha2-512", "ssh-ed25519"))
    assert order == ["ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512"]


def test_unknown_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="host_key_policy") as err:
        HostKeyChecker(_target(tmp_path / "kh"), "yolo")
    assert err.value.code == "settings.choice" and "strict, accept-new" in err.value.fix


# -- the agent zipapp --------------------------------------------------------------------------


def test_zipapp_holds_the_agent_and_nothing_else() -> None:
    app = deploy.agent_zipapp()
    names = zipfile.ZipFile(io.BytesIO(app.data)).namelist()
    assert "__main__.py" in names
    assert "rk_jupyter/__init__.py" in names
    for needed in ("rk_jupyter/agent/main.py", "rk_jupyter/agent/engines/mathics/worker.py",
                   "rk_jupyter/agent/wl/RKJupyter.wl", "rk_jupyter/link/handshake.py"):
        assert needed in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith(("rk_jupyter/kernel", "rk_jupyter/provisioning"))]
    assert app.remote_path == f".cache/rk_jupyter/{app.digest}/agent.pyz"


def test_content_hash_follows_the_content() -> None:
    files = deploy.agent_files()
    first = deploy.build_zipapp(files)
    again = deploy.build_zipapp(dict(files))
    assert (first.digest, first.data) == (again.digest, again.data)  # deterministic
    changed = dict(files)
    changed["rk_jupyter/agent/main.py"] += b"\n# changed\n"
    assert deploy.build_zipapp(changed).digest != first.digest
    renamed = dict(files)
    renamed["rk_jupyter/agent/main2.py"] = renamed.pop("rk_jupyter/agent/main.py")
    assert deploy.build_zipapp(renamed).digest != first.digest


def test_zipapp_runs_with_a_bare_python(tmp_path: Path) -> None:
    path = tmp_path / "agent.pyz"
    path.write_bytes(deploy.agent_zipapp().data)
    # -I: no site-packages, no environment: only the archive and the standard library.
    res = subprocess.run([sys.executable, "-I", str(path), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "--token-stdin" in res.stdout


def test_launch_command_modes() -> None:
    app = deploy.agent_zipapp()
    args = ["--token-stdin", "--exit-on-stdin-eof"]
    auto = deploy.launch_command("/opt/py 3/bin/python3", "auto", app, args)
    assert auto.startswith("sh -c ")
    assert "rk_jupyter.agent" in auto and app.remote_path in auto
    assert "-P -m rk_jupyter.agent" in auto and "sys.path.pop(0)" in auto  # cwd not on path
    assert f'!= "{__version__}"' in auto
    assert "'\"'\"'/opt/py 3/bin/python3'\"'\"'" in auto  # quoted inside the sh -c string
    zipapp = deploy.launch_command("python3", "zipapp", app, args)
    assert "rk_jupyter.agent" not in zipapp and deploy.DEPLOY_MARKER in zipapp
    installed = deploy.launch_command("python3", "installed", app, args)
    assert app.remote_path not in installed and deploy.NOT_INSTALLED_MARKER in installed
    with pytest.raises(TransportError, match="agent_deploy") as err:
        deploy.launch_command("python3", "sometimes", app, args)
    assert err.value.code == "settings.choice"


def test_launch_command_runs_in_sh(tmp_path: Path) -> None:
    """The command is valid sh: without python it says so, without the zipapp it asks for it."""
    app = deploy.agent_zipapp()
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(["sh", "-c", deploy.launch_command("no-such-python", "auto", app, [])],
                         capture_output=True, text=True, timeout=30, env=env)
    assert run.stdout.strip() == deploy.NO_PYTHON_MARKER
    run = subprocess.run(["sh", "-c", "umask 002; " + deploy.launch_command(
                             sys.executable, "zipapp", app, [])],
                         capture_output=True, text=True, timeout=30, env=env)
    assert run.stdout.strip() == deploy.DEPLOY_MARKER
    for directory in (deploy.CACHE_DIR, deploy.LOG_DIR):  # the user's alone, whatever umask
        assert (tmp_path / directory).stat().st_mode & 0o777 == 0o700, directory


def test_launch_command_runs_only_the_zipapp_that_was_deployed(tmp_path: Path) -> None:
    """The cached copy runs only when its bytes hash as deployed and no other user can write
    it or its directories: a same-size replacement is removed and a new copy asked for; a
    copy owned by someone else is refused, naming the path and the fix."""
    app = deploy.agent_zipapp()
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    path = tmp_path / app.remote_path
    path.parent.mkdir(parents=True, mode=0o775)
    path.write_bytes(app.data)

    def launch() -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sh", "-c", deploy.launch_command(sys.executable, "zipapp", app, ["--help"])],
            capture_output=True, text=True, timeout=60, env=env)

    run = launch()
    assert run.returncode == 0 and "--token-stdin" in run.stdout, run.stderr
    assert path.parent.stat().st_mode & 0o777 == 0o700  # tightened before the check
    path.write_bytes(app.data[:-4] + b"evil")
    run = launch()
    assert run.stdout.strip() == deploy.DEPLOY_MARKER and not path.exists(), run.stderr
    path.write_bytes(app.data)
    os.chown(path, 65534, 65534)  # nobody's: could have been replaced after the check
    run = launch()
    assert run.returncode == 4 and deploy.REFUSED_PATH_TEXT in run.stderr, run.stderr
    assert "--token-stdin" not in run.stdout


# -- the transport's identity, and who imports whom -------------------------------------------


def test_ssh_transports_are_distinct_objects(tmp_path: Path) -> None:
    """Two launches' transports are two things: not equal, and usable as dict keys."""
    from rk_jupyter.provisioning.settings import LaunchSettings
    from rk_jupyter.provisioning.transports.ssh import SSHTransport

    settings = LaunchSettings(transport="ssh", host="h.example")
    one, two = (SSHTransport(settings, str(tmp_path / "a.log")) for _ in range(2))
    assert one != two and one == one
    assert len({one: 1, two: 2}) == 2


def test_ssh_modules_do_not_import_the_transports() -> None:
    """provisioning/transports uses provisioning/ssh, never the other way round (that was an
    import cycle); both take their errors from provisioning/errors."""
    import ast

    package = Path(__file__).resolve().parents[1] / "rk_jupyter" / "provisioning" / "ssh"
    for source in package.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert "transports" not in (node.module or ""), (source.name, node.module)


def test_errors_carry_codes(tmp_path: Path) -> None:
    with pytest.raises(TransportError) as error:
        resolve_target("bad host")
    assert error.value.code == "ssh.bad-host"
    with pytest.raises(TransportError) as error:
        load_ssh_config(str(tmp_path / "none"))
    assert error.value.code == "ssh.config-missing" and error.value.fix


def test_encrypted_key_files_are_told_by_their_format(tmp_path: Path) -> None:
    """A passphrase-protected key is recognised from the file (not from an error's words)."""
    from rk_jupyter.provisioning.ssh.connect import _encrypted, _load_key

    for name, passphrase in (("plain", ""), ("locked", "a passphrase")):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f",
                        str(tmp_path / name)], check=True, timeout=30)
    assert not _encrypted(str(tmp_path / "plain")) and _encrypted(str(tmp_path / "locked"))
    notes: list[str] = []
    assert _load_key(str(tmp_path / "locked"), notes) is None
    assert notes == [f"{tmp_path / 'locked'} is passphrase-protected (load it into ssh-agent: "
                     f"ssh-add {tmp_path / 'locked'})"]
    assert _load_key(str(tmp_path / "plain"), []) is not None


@pytest.mark.parametrize("said", [
    "bastion says no\nkex_exchange_identification: Connection closed by remote host\n"
    "Connection closed by UNKNOWN port 65535",
    "bastion says no\nbanner exchange: Connection to UNKNOWN port 65535: Broken pipe",
])
def test_a_proxy_that_ended_is_named_whichever_way_ssh_says_it(said: str) -> None:
    """ssh says a ProxyCommand ended as it read the banner or as it wrote its own, by timing
    (the second wording failed CI once as ``ssh.failed``)."""
    from rk_jupyter.provisioning.ssh.openssh_errors import diagnose

    target = SSHTarget(alias="broken-proxy", hostname="10.0.0.2", port=22, user="u",
                       identity_files=(), identities_only=False, known_hosts_files=(),
                       global_known_hosts_files=(), backend="openssh",
                       via="ProxyCommand sh -c 'exit 1'")
    error = diagnose(said, target, 10.0)
    assert error.code == "ssh.proxy-failed"
    assert "ProxyCommand" in str(error) and "bastion says no" in str(error)
    assert "ssh -v broken-proxy" in str(error)
