"""What ``pip install rk_jupyter`` (a wheel, not this checkout) gets: every module of the
source tree.  The package list in pyproject.toml is written by hand, and once left out the
Mathics3 engine, which an editable install (all the other tests) cannot notice."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_module_and_the_helper(tmp_path: Path) -> None:
    tree = tmp_path / "src"  # a copy: setuptools builds in the tree it is given
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", ".*_cache", "node_modules"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(tree), "-w",
                    str(tmp_path)], check=True, capture_output=True, timeout=600,
                   cwd=tmp_path)
    [wheel] = tmp_path.glob("rk_jupyter-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    source = {str(p.relative_to(ROOT)) for p in (ROOT / "rk_jupyter").rglob("*.py")}
    assert source - names == set()
    assert "rk_jupyter/agent/wl/RKJupyter.wl" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "rk_jupyter.papermill_engine:RKEngine" in text
    assert "rk_jupyter.provisioning.provisioner:RemoteKernelProvisioner" in text
