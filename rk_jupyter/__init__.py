"""rk_jupyter: remote Wolfram Language kernels for Jupyter.

This top-level module must stay importable with the standard library alone: the agent
(``rk_jupyter.agent``) and the link (``rk_jupyter.link``) are copied to remote hosts that
have nothing but Python (and, ideally, brotli).
"""

from typing import Any

__version__ = "0.4.0"


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext rk_jupyter``: the ``%rkernel`` magics, imported only now (they need IPython
    and Jupyter, which this module must not)."""
    from .magics.magics import RKernelMagics

    ipython.register_magics(RKernelMagics)
