"""rk_jupyter: remote Wolfram Language kernels for Jupyter.

This top-level module must stay importable with the standard library alone: the agent
(``rk_jupyter.agent``) and the link (``rk_jupyter.link``) are copied to remote hosts that
have nothing but Python (and, ideally, brotli).
"""

__version__ = "0.1.0"
