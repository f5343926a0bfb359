"""``rk-jupyter add/list/remove``: the kernelspecs it writes, and the arguments it refuses."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.provisioning import KernelProvisionerFactory

from rk_jupyter.cli import main
from rk_jupyter.provisioning.provisioner import RemoteKernelProvisioner


@pytest.fixture
def prefix(jupyter_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Jupyter prefix of this test's own, on JUPYTER_PATH so that list and the
    KernelSpecManager see what is installed there."""
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    return tmp_path


@pytest.fixture
def key_files(tmp_path: Path) -> tuple[str, str]:
    identity, known = tmp_path / "id_test", tmp_path / "known_hosts"
    identity.write_text("not really a key\n")
    known.write_text("")
    return str(identity), str(known)


def spec_json(prefix: Path, name: str) -> dict:
    return json.loads((prefix / "share/jupyter/kernels" / f"rk-{name}" / "kernel.json").read_text())


def test_add_remote_writes_the_ssh_kernelspec(prefix: Path, key_files, capsys) -> None:
    identity, known = key_files
    assert main(["add", "lab", "--host", "ada@lab.example.org:2222", "--engine", "wolfram",
                 "--kernel-path", "/opt/Wolfram/WolframKernel", "--remote-python",
                 "/usr/bin/python3", "--identity", identity, "--proxy-jump", "gate:2200",
                 "--known-hosts", known, "--compression", "zlib", "--prefix", str(prefix)]) == 0
    assert "installed kernelspec rk-lab" in capsys.readouterr().out
    spec = spec_json(prefix, "lab")
    assert spec["display_name"] == "Wolfram Language (lab)"
    provisioner = spec["metadata"]["kernel_provisioner"]
    assert provisioner["provisioner_name"] == "rk-ssh-provisioner"
    assert provisioner["config"] == {
        "transport": "ssh", "host": "lab.example.org", "user": "ada", "port": 2222,
        "remote_python": "/usr/bin/python3", "identity_file": identity,
        "proxy_jump": "gate:2200", "known_hosts": known, "engine": "wolfram",
        "compression": "zlib", "engine_options": {"kernel_path": "/opt/Wolfram/WolframKernel"},
    }
    assert spec["argv"][1:4] == ["-P", "-m", "rk_jupyter.kernel"]  # cwd not on sys.path
    assert spec["metadata"]["supported_encryption"] == ["curve"]


def test_kernelspec_config_becomes_provisioner_traits(prefix: Path, key_files) -> None:
    """What jupyter_client does with the kernelspec: every key is a trait of ours."""
    identity, known = key_files
    main(["add", "lab", "--host", "ada@lab.example.org:2222", "--identity", identity,
          "--known-hosts", known, "--host-key-policy", "accept-new", "--agent-deploy",
          "zipapp", "--prefix", str(prefix)])
    kernel_spec = KernelSpecManager().get_kernel_spec("rk-lab")
    factory = KernelProvisionerFactory.instance()
    provisioner = factory.create_provisioner_instance("k1", kernel_spec, parent=None)
    assert isinstance(provisioner, RemoteKernelProvisioner)
    assert (provisioner.transport_name, provisioner.host, provisioner.port, provisioner.user) == \
        ("ssh", "lab.example.org", 2222, "ada")
    assert provisioner.identity_file == identity and provisioner.known_hosts == known
    assert provisioner.host_key_policy == "accept-new" and provisioner.agent_deploy == "zipapp"
    assert provisioner.remote_python == "python3"  # the default
    for name in ("host", "port", "identity_file", "known_hosts", "host_key_policy",
                 "remote_python", "agent_deploy", "connect_timeout", "keepalive"):
        assert RemoteKernelProvisioner.class_traits()[name].help, name


def test_add_local_and_host_alias(prefix: Path) -> None:
    assert main(["add", "here", "--local", "--prefix", str(prefix)]) == 0
    assert spec_json(prefix, "here")["metadata"]["kernel_provisioner"]["config"] == {
        "transport": "local", "engine": "mathics", "compression": "brotli"}
    assert spec_json(prefix, "here")["display_name"] == "Wolfram Language (Mathics3, here)"
    assert main(["add", "alias", "--host", "mybox", "--prefix", str(prefix)]) == 0
    assert spec_json(prefix, "alias")["display_name"] == "Wolfram Language (alias)"
    config = spec_json(prefix, "alias")["metadata"]["kernel_provisioner"]["config"]
    assert config == {"transport": "ssh", "host": "mybox", "engine": "mathics",
                      "compression": "brotli"}  # the rest comes from ~/.ssh/config


def test_add_persistent_and_sessions_without_an_agent(prefix: Path, capsys) -> None:
    """--persistent is a switch (a bool key, typed as the provisioner's Bool trait);
    ``sessions`` looks for the kernelspec's running agent and never starts one."""
    assert main(["add", "keep", "--local", "--persistent", "--persist-for", "60",
                 "--prefix", str(prefix)]) == 0
    config = spec_json(prefix, "keep")["metadata"]["kernel_provisioner"]["config"]
    assert config["persistent"] is True and config["persist_for"] == 60.0
    assert main(["add", "plain", "--local", "--prefix", str(prefix)]) == 0
    assert "persistent" not in spec_json(prefix, "plain")["metadata"]["kernel_provisioner"][
        "config"]
    capsys.readouterr()
    assert main(["sessions", "keep"]) == 0
    assert capsys.readouterr().out.strip() == "no sessions of rk-keep"
    assert main(["sessions", "plain"]) == 0
    assert "not persistent" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no kernelspec named rk-nope"):
        main(["sessions", "nope"])
    with pytest.raises(SystemExit, match="has no session rkp-x"):
        main(["sessions", "keep", "--end", "rkp-x"])
    from rk_jupyter.provisioning.provisioner import RemoteKernelProvisioner
    from rk_jupyter.provisioning.settings import LaunchSettings
    assert RemoteKernelProvisioner(persistent=True).launch_settings().persistent is True
    with pytest.raises(Exception, match="true or false"):
        LaunchSettings.from_config({"persistent": "yes"})


def test_add_writes_the_limits_it_is_given(prefix: Path) -> None:
    """--memory-limit and --output-limit reach the kernelspec (they were once accepted and
    dropped), typed as the provisioner's traits are; defaults are left out."""
    assert main(["add", "lim", "--local", "--memory-limit", "2G", "--output-limit", "5000",
                 "--prefix", str(prefix)]) == 0
    assert main(["add", "plain", "--local", "--prefix", str(prefix)]) == 0
    specs = KernelSpecManager()
    config = specs.get_kernel_spec("rk-lim").metadata["kernel_provisioner"]["config"]
    assert config["memory_limit"] == "2G" and config["output_limit"] == 5000
    plain = specs.get_kernel_spec("rk-plain").metadata["kernel_provisioner"]["config"]
    assert "memory_limit" not in plain and "output_limit" not in plain


def test_list_shows_host_engine_and_location(prefix: Path, capsys) -> None:
    main(["add", "here", "--local", "--prefix", str(prefix)])
    main(["add", "far", "--host", "bob@far.example.org", "--proxy-jump", "gate",
          "--prefix", str(prefix)])
    capsys.readouterr()
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    print(out)
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split() == ["NAME", "TRANSPORT", "HOST", "ENGINE", "LOCATION"]
    assert "bob@far.example.org via gate" in lines["far"]
    assert lines["far"].split()[1] == "ssh" and "mathics" in lines["far"]
    assert str(prefix / "share/jupyter/kernels/rk-far") in lines["far"]
    assert "this machine" in lines["here"]


def test_remove(prefix: Path, capsys) -> None:
    main(["add", "gone", "--host", "example.org", "--prefix", str(prefix)])
    assert main(["remove", "gone"]) == 0
    assert "removed" in capsys.readouterr().out
    assert not (prefix / "share/jupyter/kernels/rk-gone").exists()
    with pytest.raises(SystemExit, match="no kernelspec named rk-gone"):
        main(["remove", "gone"])


@pytest.mark.parametrize("argv, message", [
    (["x", "--local", "--host", "h"], "--local and --host exclude each other"),
    (["x"], "say where the engine runs"),
    (["x", "--host", "h:99999"], "port must be a number from 1 to 65535"),
    (["x", "--host", "h:ssh"], "port must be a number from 1 to 65535"),
    (["x", "--host", "a b"], "is not [user@]host[:port]"),
    (["x", "--host", "h", "--kernel-path", "/k"], "--kernel-path names a WolframKernel"),
    (["x", "--local", "--identity", "/k"], "only apply to a remote host"),
    (["x", "--local", "--remote-python", "python3"], "only apply to a remote host"),
    (["x", "--host", "h", "--identity", "/no/such/key"], "--identity '/no/such/key' does not"),
    (["x", "--host", "h", "--known-hosts", "/no/such"], "--known-hosts '/no/such' does not"),
    (["x", "--host", "h", "--proxy-jump", "j:0"], "--proxy-jump 'j:0': the port must"),
    (["bad name", "--local"], "invalid name"),
])
def test_bad_arguments_are_refused_clearly(prefix: Path, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["add", *argv, "--prefix", str(prefix)])
    assert message in str(exit_info.value)
    assert str(exit_info.value).startswith("rk-jupyter add: ")
    assert not (prefix / "share/jupyter/kernels").exists()


def test_bad_choices_are_refused_by_argparse(prefix: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["add", "x", "--host", "h", "--engine", "octave"])
    assert "invalid choice: 'octave'" in capsys.readouterr().err


# -- one settings schema -------------------------------------------------------------------------


def test_add_options_come_from_the_settings_schema() -> None:
    """Every setting with a flag is an option of add, with the schema's choices and, for the
    settings every kernelspec records, its default: no second list of either."""
    from rk_jupyter.cli import build_parser
    from rk_jupyter.provisioning.settings import (
        AGENT_DEPLOY,
        COMPRESSIONS,
        ENGINES,
        HOST_KEY_POLICIES,
        default_of,
        key_of,
        settings_fields,
    )

    add = build_parser()._subparsers._group_actions[0].choices["add"]
    actions = {a.option_strings[0]: a for a in add._actions if a.option_strings}
    flagged = [f for f in settings_fields() if key_of(f).flag]
    assert {key_of(f).flag for f in flagged} <= set(actions)
    for f in flagged:
        action = actions[key_of(f).flag]
        assert action.dest == f.name
        assert tuple(action.choices or ()) == key_of(f).choices
        assert action.default == (None if key_of(f).ssh else default_of(f))
    assert actions["--engine"].choices == ENGINES
    assert actions["--compression"].choices == COMPRESSIONS
    assert actions["--host-key-policy"].choices == HOST_KEY_POLICIES
    assert actions["--agent-deploy"].choices == AGENT_DEPLOY


def test_provisioner_traits_and_connect_options_come_from_the_schema() -> None:
    from rk_jupyter.magics.target import connect_options
    from rk_jupyter.provisioning.provisioner import TRAIT_NAMES
    from rk_jupyter.provisioning.settings import default_of, key_of, settings_fields

    traits = RemoteKernelProvisioner.class_traits(config=True)
    options = connect_options()
    for f in settings_fields():
        trait = traits[TRAIT_NAMES.get(f.name, f.name)]
        assert trait.default() == default_of(f) and trait.help == key_of(f).full_help
        assert options["--" + f.name.replace("_", "-")][0] == f.name
    assert options["--identity"][0] == "identity_file"  # add's name works too
    assert RemoteKernelProvisioner(transport="ssh", host="h").launch_settings().transport == "ssh"


@pytest.mark.parametrize("config, code, words", [
    ({"engine": "octave"}, "settings.choice", ["unknown engine 'octave'", "mathics, wolfram"]),
    ({"compression": "lzma"}, "settings.choice", ["compression 'lzma'", "brotli, brotli-max"]),
    ({"transport": "ssh", "host": "h", "host_key_policy": "yolo"}, "settings.choice",
     ["host_key_policy 'yolo'", "strict, accept-new"]),
    ({"transport": "ssh", "host": "h", "agent_deploy": "x"}, "settings.choice",
     ["agent_deploy 'x'", "auto, zipapp, installed"]),
    ({"transport": "carrier-pigeon"}, "settings.choice", ["transport", "local, ssh"]),
    ({"transport": "ssh"}, "settings.no-host", ["names no host", "--host"]),
    ({"port": "22"}, "settings.type", ["port '22'", "a whole number"]),
    ({"port": 70000}, "settings.port", ["port 70000"]),
    ({"keepalive": -1}, "settings.negative", ["keepalive -1"]),
    ({"hostname": "h"}, "settings.unknown-key", ["unknown key 'hostname'", "host_key_policy"]),
])
def test_bad_settings_are_refused_with_a_code(config: dict, code: str, words: list[str]) -> None:
    from rk_jupyter.provisioning.errors import SettingsError, TransportError
    from rk_jupyter.provisioning.settings import LaunchSettings

    with pytest.raises(SettingsError) as error:
        LaunchSettings.from_config(config)
    assert error.value.code == code
    assert isinstance(error.value, TransportError)  # what pre_launch's callers catch
    assert all(word in str(error.value) for word in words), str(error.value)
    assert error.value.fix  # every refusal says what to do


def test_settings_round_trip_as_plain_data() -> None:
    """What the provisioner writes into RK_SETTINGS reads back to equal settings."""
    from rk_jupyter.provisioning.settings import LaunchSettings

    settings = LaunchSettings.from_config({"transport": "ssh", "host": "h", "port": 2222,
                                           "connect_timeout": 3, "engine_options": {"a": 1}})
    assert settings.connect_timeout == 3.0 and isinstance(settings.connect_timeout, float)
    assert LaunchSettings.from_json(json.dumps(settings.as_dict())) == settings
    with pytest.raises(AttributeError):
        settings.host = "other"  # type: ignore[misc]  # frozen


# -- imports ---------------------------------------------------------------------------------------


def test_importing_the_cli_loads_neither_the_agent_nor_the_kernel_nor_paramiko() -> None:
    code = ("import json, sys, rk_jupyter.cli, rk_jupyter.provisioning.settings; "
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    loaded = json.loads(done.stdout)
    assert "rk_jupyter.cli" in loaded  # the probe ran
    for module in ("rk_jupyter.agent.server", "rk_jupyter.agent.session", "rk_jupyter.kernel",
                   "paramiko"):
        assert not [m for m in loaded if m == module or m.startswith(module + ".")], module


# -- doctor for %rkernel doctor: python -m rk_jupyter.cli doctor ... --mime ------------------------


def cli_doctor(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, dict]:
    """Run ``python -m rk_jupyter.cli doctor ARGS`` as the kernel will: exit status and the one
    JSON object it prints."""
    done = subprocess.run([sys.executable, "-m", "rk_jupyter.cli", "doctor", *args],
                          input=stdin, capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})})
    assert done.stdout.count("\n") == 1, done.stdout + done.stderr  # one line: one object
    return done.returncode, json.loads(done.stdout)


def test_doctor_mime_for_a_kernelspec(rk_local: str) -> None:
    status, bundle = cli_doctor("local", "--mime")
    assert status == 0 and set(bundle) == {"text/plain", "text/html"}
    assert bundle["text/plain"].startswith("rk_jupyter doctor: local")
    assert "all 14 steps passed in " in bundle["text/plain"]
    assert bundle["text/html"].startswith("<table class='rk-doctor'>")
    assert "1+1 = 2" in bundle["text/html"]


def test_doctor_mime_for_settings_on_stdin(rk_local: str) -> None:
    from rk_jupyter.provisioning.settings import LaunchSettings

    settings = json.dumps(LaunchSettings(compression="zlib").as_dict())
    status, bundle = cli_doctor("--settings-stdin", "--mime", stdin=settings,
                                env={"RK_KERNELSPEC": "rk-mine"})
    text = bundle["text/plain"]
    assert status == 0 and text.startswith("rk_jupyter doctor: rk-mine"), text
    assert "compression zlib" in text and "✓ engine" in text
    # Without RK_KERNELSPEC: "this kernel"; settings that are not valid fail the first step,
    # with the setting's own words and fix, before anything is started.
    status, bundle = cli_doctor("--settings-stdin", "--mime", stdin='{"engine": "octave"}',
                                env={"RK_KERNELSPEC": ""})
    text = bundle["text/plain"]
    assert status == 1 and text.startswith("rk_jupyter doctor: this kernel")
    assert "✗ kernelspec" in text and "unknown engine 'octave'" in text
    assert "use one of mathics, wolfram" in text and "failed at kernelspec" in text


def test_installed_kernelspec_is_readable_by_every_user_whatever_the_umask(
        jupyter_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``add --prefix`` under umask 077 (a hardened root's): the spec, and the directories the
    install made for it, have the modes of Jupyter's own installs, so another user's Jupyter
    lists it (a 0700 kernel directory is silently skipped)."""
    root = Path(tempfile.mkdtemp(prefix="rkj-modes-"))
    try:
        root.chmod(0o755)  # the test's own directory: any user may enter it
        prefix = root / "pfx"
        monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
        old = os.umask(0o077)
        try:
            assert main(["add", "hpc", "--host", "hpc.example.org", "--prefix", str(prefix)]) == 0
            assert main(["add", "here", "--local", "--prefix", str(prefix)]) == 0
        finally:
            os.umask(old)
        kernels = prefix / "share" / "jupyter" / "kernels"
        for directory in (prefix, prefix / "share", prefix / "share" / "jupyter", kernels,
                          kernels / "rk-hpc", kernels / "rk-here"):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o755, directory
        for spec in ("rk-hpc", "rk-here"):
            files = sorted((kernels / spec).iterdir())
            assert [f.name for f in files] == ["kernel.json", "logo-32x32.png",
                                               "logo-64x64.png", "logo-svg.svg"]
            for path in files:
                assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
        if os.geteuid() == 0 and shutil.which("setpriv"):
            # As another user: the directory lists and kernel.json reads (what Jupyter does).
            nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
            for spec in ("rk-hpc", "rk-here"):
                res = subprocess.run([*nobody, "cat", str(kernels / spec / "kernel.json")],
                                     capture_output=True, text=True, timeout=30, check=False)
                assert res.returncode == 0, res.stderr
                assert json.loads(res.stdout)["metadata"]["kernel_provisioner"]
            res = subprocess.run([*nobody, "ls", str(kernels)], capture_output=True, text=True,
                                 timeout=30, check=False)
            assert sorted(res.stdout.split()) == ["rk-here", "rk-hpc"], res.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)
