"""The client layer: everything that talks to an agent over the link, for any front end.

The Jupyter kernel, the IPython magics, the launch side (provisioner, doctor), the tests and
the benchmarks use this package; it imports only ``rk_jupyter.link`` and ``rk_jupyter.errors``.

- ``agent``: ``AgentClient``, one session on an agent (reconnects, resends, heartbeats);
- ``evaluate``: the one evaluation loop (``run``, ``Evaluator``) over an ``Output``;
- ``status``: what ``%rkernel status``/``ping``/``log`` show;
- ``environment``: ``KernelEnvironment``, the ``RK_*`` variables a kernel process is given.
"""

from .agent import AgentClient, AgentError, Endpoint, LinkDown, SessionLost
from .evaluate import Collected, EvaluationError, Evaluator, Output, run

__all__ = ["AgentClient", "AgentError", "Collected", "Endpoint", "EvaluationError",
           "Evaluator", "LinkDown", "Output", "SessionLost", "run"]
