"""What an agent and whoever starts it agree on: the ready line, the token's variable, the
stop line, and how long an engine may take to start.

Why here: the agent (``rk_jupyter.agent.main``) and every launcher (the local and ssh
transports, the launch path) need these facts, and a launcher must not import the agent's
server and session to learn three strings.  Standard library only (it travels with the agent).
"""

from __future__ import annotations

#: The one line the agent prints on stdout once it listens, followed by a JSON object
#: (port, pid, protocol, version, python, codecs).
READY_PREFIX = "RKJ-AGENT-READY "
#: The environment variable a local launcher passes the token in (never argv).
TOKEN_ENV = "RK_AGENT_TOKEN"
#: The line a launcher writes on the agent's stdin for a clean shutdown (before closing it).
STOP_LINE = b"stop"
#: The oldest Python the agent runs on.
MIN_PYTHON = (3, 10)
#: Seconds the agent gives an engine to start (a cold Wolfram kernel with a licence check is
#: slow); an engine option ``start_timeout`` overrides it.
ENGINE_START_TIMEOUT = 120.0
#: Seconds a launcher waits for the engine's ready answer: the agent's own bound plus a margin,
#: so that the agent's explanation of a late engine arrives before the launcher gives up.
ENGINE_START_WAIT = ENGINE_START_TIMEOUT + 30.0
#: Seconds for a link's TCP connect and token handshake.
LINK_TIMEOUT = 15.0
#: Seconds a persistent kernelspec's agent whose launcher is gone (the Jupyter server
#: stopped or died) stays up with no session kept and no link open before it exits (its
#: ``--orphan-linger``): a restart on the next server closes a session and opens the next a
#: moment later.
ORPHAN_LINGER = 30.0

#: Characters of a result's text (and of one Print) above which an engine shows a short form
#: (the kernelspec's output_limit changes it; the Wolfram helper's $maxText is the same).
OUTPUT_LIMIT = 100_000
