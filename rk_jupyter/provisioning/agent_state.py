"""Where a persistent agent listens, and its token: a 0600 file in Jupyter's private runtime
directory, written by the server that started the agent and read by the next one (local:
``transports.local.AdoptedAgent``; ssh: ``ssh.pool.AgentState``), so that it adopts the agent
instead of starting a second.  One writer and one reader for both transports."""

from __future__ import annotations

import json
import os
from typing import Any

from ..logfiles import open_private


def write(path: str, pid: int, port: int, token: bytes) -> None:
    """Replace ``path`` with the agent's pid, port and token (created 0600); OSError if it
    cannot be written."""
    try:
        os.unlink(path)  # an earlier agent's (open_private appends)
    except OSError:
        pass
    with open_private(path, "a") as file:
        json.dump({"pid": pid, "port": port, "token": token.decode()}, file)


def read(path: str) -> dict[str, Any] | None:
    """``{"pid", "port", "token" (bytes)}`` from ``path``; None if it is absent or malformed."""
    try:
        with open(path) as file:
            state = json.load(file)
        return {"pid": int(state["pid"]), "port": int(state["port"]),
                "token": str(state["token"]).encode()}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
