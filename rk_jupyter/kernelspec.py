"""Writing, listing and removing ``rk-`` kernelspecs."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager

from .safepath import module_argv

PREFIX = "rk-"
LOGOS = ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg")


def spec_name(name: str) -> str:
    return PREFIX + name


def build_spec(name: str, display_name: str, config: dict[str, Any]) -> dict[str, Any]:
    """kernel.json for ``name``, from the template in ``kernelspecs/``.

    The kernel process runs without its working directory on ``sys.path`` (``safepath``),
    and the metadata declares CurveZMQ support (``supported_encryption``), so that
    jupyter_client's ``transport_encryption`` "auto" encrypts its channels and "required"
    accepts it (an rk kernel is an ipykernel, which speaks it).
    """
    template = resources.files("rk_jupyter.kernelspecs").joinpath("kernel.json").read_text()
    spec = json.loads(template)
    python, option, module, *args = spec["argv"]  # {python} -m MODULE ARGS…
    assert (python, option) == ("{python}", "-m"), spec["argv"]
    spec["argv"] = module_argv(sys.executable, module, *args)  # cwd not on sys.path
    spec["metadata"]["supported_encryption"] = ["curve"]
    spec["display_name"] = display_name
    spec["metadata"]["kernel_provisioner"]["config"] = config
    return spec


def install(
    name: str, display_name: str, config: dict[str, Any], user: bool = False,
    prefix: str | None = None,
) -> str:
    """Install (or replace) kernelspec ``rk-<name>``; return the directory it landed in."""
    spec = build_spec(name, display_name, config)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
        assets = resources.files("rk_jupyter.kernelspecs")
        for logo in LOGOS:
            with resources.as_file(assets.joinpath(logo)) as src:
                shutil.copy(src, Path(tmp) / logo)
        return KernelSpecManager().install_kernel_spec(
            tmp, spec_name(name), user=user, prefix=prefix
        )


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
                     "resource_dir": info["resource_dir"], "config": prov.get("config", {})})
    return rows


def remove(name: str) -> str:
    """Remove kernelspec ``rk-<name>``; raise KeyError when there is none."""
    ksm = KernelSpecManager()
    kname = spec_name(name)
    if kname not in ksm.find_kernel_specs():
        raise KeyError(kname)
    return ksm.remove_kernel_spec(kname)
