"""The link: WXF expressions, MathLink-style packets, frames, compression and the handshake.

Standard library (+ optional brotli, optional numpy) only, so that it can travel with the agent.
"""
