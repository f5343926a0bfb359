"""Command line of the agent: ``python -m rk_jupyter.agent``.

Prints exactly one line on stdout once it listens::

    RKJ-AGENT-READY {"port": 40123, "pid": 4242, "protocol": 2, "version": "0.2.0", ...}

The token comes from ``--token-file`` (read, then deleted), from the first line of stdin
(``--token-stdin``) or from the RK_AGENT_TOKEN environment variable — never from argv, which
every user of the host can read in ``ps``.

With ``--exit-on-stdin-eof`` stdin is the launcher's lifeline: a line ``stop`` on it, or its
end, ends the agent and every session at once.  With ``--keep-sessions-on-stdin-eof`` too (the
ssh transport), an end without ``stop`` means the SSH connection carrying stdin is gone, and
its kernels may come back over a new one: sessions kept for their kernels (keep > 0) are not
ended then; the agent stays up while any is kept (each ends after its own keep time) and exits
when none is left and no link has been open for ``--orphan-linger`` seconds (default 0; a
persistent kernelspec's launchers pass ``ORPHAN_LINGER``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

from .. import __version__
from ..link.compression import available_codecs
from ..link.handshake import PROTOCOL_VERSION
from ..link.launcher import READY_PREFIX, STOP_LINE, TOKEN_ENV
from ..logfiles import PrivateRotatingFileHandler
from .engines import ENGINE_NAMES, end_warm, warm
from .server import AgentServer

log = logging.getLogger("rk_jupyter.agent")


def read_token(args: argparse.Namespace) -> bytes:
    if args.token_file:
        with open(args.token_file, "rb") as f:
            token = f.read().strip()
        os.unlink(args.token_file)
    elif args.token_stdin:
        token = next(_stdin_lines(), b"").strip()
    else:
        token = os.environ.pop(TOKEN_ENV, "").encode()
    if len(token) < 16:
        raise SystemExit(
            "rk_jupyter agent: no token (or one shorter than 16 bytes); pass it with "
            f"--token-file, --token-stdin or ${TOKEN_ENV}"
        )
    return token


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rk_jupyter.agent", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--token-file", help="file holding the token; deleted once read")
    source.add_argument("--token-stdin", action="store_true", help="token on stdin's first line")
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="end (with every engine) on a 'stop' line on stdin or when stdin closes, i.e. "
        "when the launcher is gone",
    )
    parser.add_argument(
        "--keep-sessions-on-stdin-eof",
        action="store_true",
        help="with --exit-on-stdin-eof: when stdin closes without a 'stop' line (a lost SSH "
        "connection), end only once no session is kept for its kernel",
    )
    parser.add_argument("--orphan-linger", type=float, default=0.0, metavar="SECONDS",
                        help="with --keep-sessions-on-stdin-eof: once no session is kept, "
                        "wait this long with no link open before exiting")
    parser.add_argument("--warm", action="append", default=[], choices=ENGINE_NAMES,
                        help="prepare this engine at start so that its engines start fast "
                        "(Mathics3: a template process that new engines are forked from)")
    parser.add_argument("--log-file", help="log here instead of stderr")
    parser.add_argument("--log-stderr", action="store_true",
                        help="with --log-file, log to stderr too (an ssh launcher reads it)")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handlers: list[logging.Handler] = []
    if args.log_file:
        handlers.append(PrivateRotatingFileHandler(args.log_file))  # 0600, capped
    if args.log_stderr or not args.log_file:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s agent[%(process)d] %(message)s"))
        log.addHandler(handler)
    log.setLevel(args.log_level.upper())
    token = read_token(args)
    try:
        server = AgentServer(token, args.host, args.port)
    except (ValueError, OSError) as exc:
        print(f"rk_jupyter agent: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    orphaned = threading.Event()  # stdin closed without a stop line

    def request_stop(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.exit_on_stdin_eof:
        lost = orphaned if args.keep_sessions_on_stdin_eof else stop
        threading.Thread(target=_watch_stdin, args=(stop, lost), daemon=True).start()
    for name in args.warm:
        warm(name)
    accepting = threading.Thread(target=server.serve_forever, daemon=True)
    accepting.start()
    ready = {
        "port": server.port,
        "pid": os.getpid(),
        "protocol": PROTOCOL_VERSION,
        "version": __version__,
        "codecs": available_codecs(),
        "python": sys.version.split()[0],
    }
    sys.stdout.write(READY_PREFIX + json.dumps(ready) + "\n")
    sys.stdout.flush()
    log.info("listening on %s:%d (rk_jupyter %s)", args.host, server.port, __version__)
    unused_since: float | None = None
    while not stop.wait(0.5):
        if orphaned.is_set() and not server.kept_sessions() and not server.connections:
            unused_since = unused_since or time.monotonic()
            if time.monotonic() - unused_since >= args.orphan_linger:
                log.info("no session is kept for a kernel (any more)")
                break
        else:
            unused_since = None
        if not accepting.is_alive():  # an agent no kernel can reach must not linger
            log.error("the accept loop ended; the agent exits")
            break
    log.info("stopping: ending every session")
    server.shutdown()
    end_warm()
    return 0


def _stdin_lines() -> Iterator[bytes]:
    """stdin's lines, read from fd 0 itself, a byte at a time up to each newline (a line
    is a token or ``stop``: short).

    Why not ``sys.stdin``: the watcher is a daemon thread blocked in a read when the agent
    exits, and inside the buffered reader it holds the reader's lock, which the interpreter's
    finalization then cannot take ("Fatal Python error: _enter_buffered_busy", an abort).  A
    byte at a time also leaves nothing read ahead: the token's reader takes its line only."""
    line = bytearray()
    while True:
        byte = os.read(0, 1)
        if not byte:
            if line:
                yield bytes(line)
            return
        line += byte
        if byte == b"\n":
            yield bytes(line)
            line.clear()


def _watch_stdin(stop: threading.Event, lost: threading.Event) -> None:
    """Set ``stop`` on a stop line, ``lost`` when stdin ends without one."""
    try:
        for line in _stdin_lines():
            if line.strip() == STOP_LINE:
                log.info("stop requested by the launcher")
                stop.set()
                return
    except (OSError, ValueError):
        pass
    log.info("stdin closed without a stop: the launcher or its connection is gone")
    lost.set()
