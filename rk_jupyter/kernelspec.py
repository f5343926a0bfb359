"""Writing, listing and removing ``rk-`` kernelspecs."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager

from .client.environment import KERNELSPEC_FLAG
from .safepath import module_argv

PREFIX = "rk-"
LOGOS = ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg")
#: Modes of an installed kernelspec, as Jupyter's own installs have them (umask 022): every
#: user's Jupyter must read a system-wide spec, whatever root's umask was.
DIR_MODE, FILE_MODE = 0o755, 0o644


def spec_name(name: str) -> str:
    return PREFIX + name


def build_spec(name: str, display_name: str, config: dict[str, Any],
               spec_dir: str) -> dict[str, Any]:
    """kernel.json for ``name``, to be installed in ``spec_dir``, from the template in
    ``kernelspecs/``.

    The kernel process runs without its working directory on ``sys.path`` (``safepath``);
    its argv names ``spec_dir`` (``KERNELSPEC_FLAG``), so that a client which ignores the
    provisioner and runs the argv itself (VS Code, Positron) gets a kernel that launches its
    engine from these same settings.  The metadata declares CurveZMQ support
    (``supported_encryption``), so that jupyter_client's ``transport_encryption`` "auto"
    encrypts its channels and "required" accepts it (an rk kernel is an ipykernel).
    """
    template = resources.files("rk_jupyter.kernelspecs").joinpath("kernel.json").read_text()
    spec = json.loads(template)
    python, option, module, *args = spec["argv"]  # {python} -m MODULE ARGS…
    assert (python, option) == ("{python}", "-m"), spec["argv"]
    spec["argv"] = module_argv(sys.executable, module, *args,  # cwd not on sys.path
                               f"{KERNELSPEC_FLAG}={os.path.abspath(spec_dir)}")
    spec["metadata"]["supported_encryption"] = ["curve"]
    spec["display_name"] = display_name
    spec["metadata"]["kernel_provisioner"]["config"] = config
    return spec


def install(
    name: str, display_name: str, config: dict[str, Any], user: bool = False,
    prefix: str | None = None,
) -> str:
    """Install (or replace) kernelspec ``rk-<name>``; return the directory it landed in.

    Whatever the umask, the spec's directory is 0755 and its files 0644, as Jupyter's own
    installs are: a spec added by root with ``--sys-prefix``/``--prefix`` is listed for every
    user (the hub guide relies on it).
    """
    ksm = KernelSpecManager()
    destination = ksm._get_destination_dir(spec_name(name), user=user, prefix=prefix)
    spec = build_spec(name, display_name, config, destination)
    # A system-wide install's new parents (kernels/, share/jupyter/) must be readable too; a
    # user's own tree (~/.local/share) keeps their umask's modes.
    new_dirs = [] if user else _missing_dirs(destination)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
        assets = resources.files("rk_jupyter.kernelspecs")
        for logo in LOGOS:
            with resources.as_file(assets.joinpath(logo)) as src:
                shutil.copy(src, Path(tmp) / logo)
        # install_kernel_spec copies the modes: TemporaryDirectory's 0700, files per umask.
        os.chmod(tmp, DIR_MODE)
        for entry in Path(tmp).iterdir():
            entry.chmod(FILE_MODE)
        where = ksm.install_kernel_spec(tmp, spec_name(name), user=user, prefix=prefix)
    for made in new_dirs:
        os.chmod(made, DIR_MODE)
    return where


def _missing_dirs(destination: str) -> list[str]:
    """The ancestors of ``destination`` that do not exist yet (the install will make them)."""
    missing = []
    parent = os.path.dirname(os.path.abspath(destination))
    while not os.path.exists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    return missing


def installed() -> list[dict[str, Any]]:
    """Every rk- kernelspec Jupyter can see, with its location and provisioner config."""
    rows = []
    for kname, info in sorted(KernelSpecManager().get_all_specs().items()):
        if not kname.startswith(PREFIX):
            continue
        spec = info["spec"]
        prov = spec.get("metadata", {}).get("kernel_provisioner", {})
        if prov.get("provisioner_name") != "rk-ssh-provisioner":
            continue
        rows.append({"name": kname[len(PREFIX):], "kernelspec": kname,
                     "display_name": spec.get("display_name", ""),
                     "resource_dir": info["resource_dir"], "config": prov.get("config", {}),
                     "self_launch": self_launch_dir(spec.get("argv", []))})
    return rows


def self_launch_dir(argv: list[str]) -> str:
    """The kernelspec directory a kernel with this argv launches its engine from when no
    provisioner did ('' for a kernelspec made before that option existed)."""
    prefix = KERNELSPEC_FLAG + "="
    return next((item[len(prefix):] for item in argv if item.startswith(prefix)), "")


def remove(name: str) -> str:
    """Remove kernelspec ``rk-<name>``; raise KeyError when there is none."""
    ksm = KernelSpecManager()
    kname = spec_name(name)
    if kname not in ksm.find_kernel_specs():
        raise KeyError(kname)
    return ksm.remove_kernel_spec(kname)
