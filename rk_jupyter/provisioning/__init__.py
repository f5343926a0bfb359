"""The Jupyter-side launcher: a kernel provisioner and the transports that reach an agent."""
