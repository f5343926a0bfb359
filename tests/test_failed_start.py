"""A kernel whose start failed does not break its Jupyter server's shutdown.

jupyter_client keeps a failed start's id among the MultiKernelManager's pending kernels, and
jupyter_server's ``shutdown_all`` (run on SIGTERM) then raised "404: Kernel does not exist" for
it: the server did not stop (under JupyterHub: not until the spawner's next signal, 20 s on).
The provisioner takes its failed start off that list.  tests/test_jupyterhub.py checks the
same end to end (a single-user server stops within 5 s of one SIGTERM).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

from rk_jupyter.cli import main
from rk_jupyter.provisioning.transports import TransportError


def _closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_shutdown_all_after_a_failed_start(jupyter_env: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    # Nothing listens there: the SSH connection is refused at once.
    assert main(["add", "refused", "--host", f"127.0.0.1:{_closed_loopback_port()}",
                 "--prefix", str(tmp_path)]) == 0

    async def scenario() -> None:
        manager = AsyncMappingKernelManager(root_dir=str(tmp_path))
        with pytest.raises(TransportError, match="refused the connection"):
            await manager.start_kernel(kernel_name="rk-refused")
        assert manager.list_kernel_ids() == []
        assert list(manager._pending_kernels) == []  # noqa: SLF001  (where the id lingered)
        await asyncio.wait_for(manager.shutdown_all(), 10)  # raised HTTPError 404 before

    asyncio.run(scenario())
