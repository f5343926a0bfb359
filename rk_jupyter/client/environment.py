"""The ``RK_*`` environment: what the launch side tells the kernel process it starts.

Why one object: the provisioner writes these variables and the kernel reads them; with both
ends in one dataclass, a variable cannot be renamed at one end only, and no module reads an
``RK_*`` literal of its own.  The token travels here (never in argv) and is removed from the
process environment as soon as it is read.

A client that ignores provisioners (VS Code, Positron) runs ``kernel.json``'s argv itself:
``KERNELSPEC_FLAG`` there names the kernelspec's directory, from whose settings the kernel
process then launches its engine itself (``provisioning.selflaunch``) and sets these same
variables — or ``RK_START_ERROR``, why it could not.
"""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import RKError
from .agent import Endpoint

#: The argv option (``--rk-kernelspec=DIR``) by which a kernel process finds its kernelspec
#: when no provisioner launched it; ``rk-jupyter add`` writes it, ``kernel/__main__`` reads it.
KERNELSPEC_FLAG = "--rk-kernelspec"
#: ``KernelEnvironment.launched_by``: who launched the engine.
BY_PROVISIONER, BY_KERNEL = "provisioner", "kernel"
#: Why a kernel that launched itself has no engine: the launch's RKError as JSON
#: (``RKError.as_dict``), so that its code survives.
START_ERROR = "RK_START_ERROR"
NOT_LAUNCHED = "kernel.not-launched"

#: A logging level (INFO, DEBUG) for the kernel process's rk_jupyter records on its stderr
#: (Jupyter's terminal): its link's reconnects, reopened sessions and their causes.  Set by
#: the user, not the launch (``kernel/__main__``).
LOG_LEVEL_ENV = "RK_KERNEL_LOG_LEVEL"

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
    "launched_by": "RK_LAUNCHED_BY",
}


class NotLaunched(RKError):
    """No engine was launched for this kernel process: the cause its own launch gave
    (``RK_START_ERROR``), or neither a provisioner nor a kernelspec option said where."""

    code = NOT_LAUNCHED


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
    launched_by: str = BY_PROVISIONER

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
            "launched_by": self.launched_by,
        }
        return {VARIABLES[key]: value for key, value in values.items()}

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> KernelEnvironment:
        """Read (and, for the token, remove) the variables; NotLaunched if nobody set them
        (no ``RK_AGENT_PORT``), ValueError if one is malformed."""
        env = os.environ if environ is None else environ
        get = env.get
        if VARIABLES["port"] not in env:
            if get(START_ERROR):
                said = json.loads(env[START_ERROR])
                raise NotLaunched(said["cause"], said.get("fix", ""), code=said["code"])
            raise NotLaunched(
                "no provisioner launched this kernel, and its argv names no kernelspec "
                f"({KERNELSPEC_FLAG}) to launch its engine from",
                "install the kernelspec again with rk-jupyter add (kernelspecs made before "
                "rk_jupyter 0.4 lack the option that VS Code and Positron need)")
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
            launched_by=get(VARIABLES["launched_by"], BY_PROVISIONER),
        )
