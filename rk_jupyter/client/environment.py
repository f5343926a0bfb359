"""The ``RK_*`` environment: what the launch side tells the kernel process it starts.

Why one object: the provisioner writes these variables and the kernel reads them; with both
ends in one dataclass, a variable cannot be renamed at one end only, and no module reads an
``RK_*`` literal of its own.  The token travels here (never in argv) and is removed from the
process environment as soon as it is read.
"""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from .agent import Endpoint

#: Each field's variable.  ``token`` is popped on read.
VARIABLES = {
    "host": "RK_AGENT_HOST",
    "port": "RK_AGENT_PORT",
    "token": "RK_AGENT_TOKEN",
    "transport": "RK_TRANSPORT",
    "description": "RK_ENDPOINT",
    "engine": "RK_ENGINE",
    "engine_options": "RK_ENGINE_OPTIONS",
    "codec": "RK_COMPRESSION",
    "kernel_id": "RK_KERNEL_ID",
    "session": "RK_SESSION",
    "reconnect_grace": "RK_RECONNECT_GRACE",
    "transport_state": "RK_TRANSPORT_STATE",
    "settings": "RK_SETTINGS",
    "kernelspec": "RK_KERNELSPEC",
    "launch_log": "RK_LAUNCH_LOG",
}


@dataclass(frozen=True)
class KernelEnvironment:
    """Everything a kernel process is told at launch.

    ``endpoint`` is where its agent listens and the session it attaches to; ``settings`` the
    launch settings as plain data (for ``%rkernel doctor``, which checks the chain they
    describe); ``transport_state`` a JSON file with the state of the way to the agent;
    ``launch_log`` this launch's log on the Jupyter side.
    """

    endpoint: Endpoint
    kernel_id: str = ""
    reconnect_grace: float = 0.0
    transport_state: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    kernelspec: str = ""
    launch_log: str = ""

    def to_env(self) -> dict[str, str]:
        """The variables to add to the kernel process's environment."""
        ep = self.endpoint
        values = {
            "host": ep.host, "port": str(ep.port), "token": ep.token.decode(),
            "transport": ep.transport, "description": ep.description, "engine": ep.engine,
            "engine_options": json.dumps(ep.engine_options), "codec": ep.codec,
            "kernel_id": self.kernel_id, "session": ep.session,
            "reconnect_grace": str(self.reconnect_grace),
            "transport_state": self.transport_state, "settings": json.dumps(self.settings),
            "kernelspec": self.kernelspec, "launch_log": self.launch_log,
        }
        return {VARIABLES[key]: value for key, value in values.items()}

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> KernelEnvironment:
        """Read (and, for the token, remove) the variables; KeyError if no provisioner set
        them (no ``RK_AGENT_PORT``), ValueError if one is malformed."""
        env = os.environ if environ is None else environ
        get = env.get
        session = get(VARIABLES["session"], "")
        endpoint = Endpoint(
            host=get(VARIABLES["host"], "127.0.0.1"),
            port=int(env[VARIABLES["port"]]),
            token=env.pop(VARIABLES["token"], "").encode(),
            transport=get(VARIABLES["transport"], "local"),
            description=get(VARIABLES["description"], ""),
            codec=get(VARIABLES["codec"], "brotli"),
            engine=get(VARIABLES["engine"], "mathics"),
            engine_options=json.loads(get(VARIABLES["engine_options"], "{}")),
            session=session,
            attach=bool(session),
        )
        return cls(
            endpoint=endpoint,
            kernel_id=get(VARIABLES["kernel_id"], ""),
            reconnect_grace=float(get(VARIABLES["reconnect_grace"], "0") or 0),
            transport_state=get(VARIABLES["transport_state"], ""),
            settings=json.loads(get(VARIABLES["settings"], "{}") or "{}"),
            kernelspec=get(VARIABLES["kernelspec"], ""),
            launch_log=get(VARIABLES["launch_log"], ""),
        )
