"""The ssh transport's parts: target resolution, host keys, connections, deployment, forwards.

Each module has one job; ``rk_jupyter.provisioning.transports.ssh`` puts them together.
Nothing here is imported by the agent: paramiko lives on the Jupyter side only.
"""
