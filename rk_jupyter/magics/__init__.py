"""IPython magics: ``%load_ext rk_jupyter``, ``%rkernel connect NAME``, then ``%%rkernel`` cells.

The IPython process itself starts the agent (through the kernelspec's transport) and talks to
it; no second Jupyter kernel is involved.  ``%%rkernel -o var`` brings the result back as
Python data (see the EvaluatePacket rule in ``rk_jupyter.link.packets``).
"""
