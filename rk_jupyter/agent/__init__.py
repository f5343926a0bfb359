"""The agent: runs next to the engine (on the remote host), accepts the link, drives engines.

Standard library + brotli (+ the engine's own packages) only: it is copied to remote hosts.
"""
