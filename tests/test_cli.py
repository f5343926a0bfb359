"""``rk-jupyter add/list/remove``: the kernelspecs it writes, and the arguments it refuses."""

from __future__ import annotations

import json
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
