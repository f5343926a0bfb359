"""Shared fixtures: an isolated Jupyter environment with the rk-local kernelspec installed."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

pytest_plugins = ["conftest_sshbed", "conftest_slurmbed"]


@pytest.fixture(scope="session")
def jupyter_env(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Jupyter paths of our own, so tests neither see nor change the user's kernelspecs."""
    root = tmp_path_factory.mktemp("jupyter")
    os.environ["JUPYTER_PATH"] = str(root / "share" / "jupyter")
    os.environ["JUPYTER_RUNTIME_DIR"] = str(root / "runtime")
    os.environ["JUPYTER_DATA_DIR"] = str(root / "data")
    return str(root)


@pytest.fixture(scope="session")
def rk_local(jupyter_env: str) -> str:
    """Kernelspec rk-local, installed with the CLI as a user would."""
    from rk_jupyter.cli import main

    assert main(["add", "local", "--local", "--engine", "mathics", "--prefix", jupyter_env]) == 0
    return "rk-local"
