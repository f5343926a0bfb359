"""The client layer: everything that talks to an agent over the link, for any front end.

The Jupyter kernel, the IPython magics, the launch side (provisioner, doctor), the tests and
the benchmarks use this package; it imports only ``rk_jupyter.link`` and ``rk_jupyter.errors``.
"""

from .agent import AgentClient, AgentError, Endpoint, LinkDown

__all__ = ["AgentClient", "AgentError", "Endpoint", "LinkDown"]
