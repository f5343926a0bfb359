"""The agent's listener: authenticated links from kernels, each carrying sessions."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from typing import Any

from ..link.connection import Link
from ..link.frames import FrameError, LinkError, LinkTimeout
from ..link.handshake import HandshakeError
from ..link.packets import packet, packet_name
from .session import Session

log = logging.getLogger("rk_jupyter.agent")

HANDSHAKE_TIMEOUT = 10.0


def require_loopback(host: str) -> None:
    """The agent is reachable only through the SSH forward: refuse any other address."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ValueError(f"the agent listens on loopback only, not on {host!r}")


class Connection:
    """One kernel-side link: channel 0 controls, channels ≥ 1 are sessions."""

    def __init__(self, link: Link, peer: str, server: AgentServer) -> None:
        self.link = link
        self.peer = peer
        self.server = server
        self.sessions: dict[int, Session] = {}
        self._lock = threading.Lock()

    def serve(self) -> None:
        """Read until the peer leaves or misbehaves, then end this connection's sessions."""
        try:
            while True:
                try:
                    channel, expr = self.link.recv(timeout=None)
                except LinkTimeout:
                    continue
                if channel == 0:
                    self._control(expr)
                else:
                    session = self.sessions.get(channel)
                    if session is None:
                        log.warning("%s: packet for unknown channel %d", self.peer, channel)
                    else:
                        session.handle(expr)
        except FrameError as exc:
            log.error("%s: closing the link: %s", self.peer, exc)
        except LinkError as exc:
            log.info("%s: link ended: %s", self.peer, exc)
        finally:
            self.link.close()
            for session in list(self.sessions.values()):
                session.close()

    def _control(self, expr: Any) -> None:
        name = packet_name(expr)
        if name == "RKPing":
            self.link.send(0, packet("RKPong", *expr.args))
        elif name == "RKOpenSession" and expr.args and isinstance(expr.args[0], dict):
            self._open(expr.args[0])
        else:
            log.warning("%s: ignoring unexpected control message %r", self.peer, name or expr)

    def _open(self, request: dict) -> None:
        channel = request.get("channel")
        engine = request.get("engine", "mathics")
        options = request.get("options") or {}
        if not isinstance(channel, int) or not 0 < channel <= 0xFFFF or channel in self.sessions:
            self.link.send(0, packet("RKError", f"invalid or busy channel {channel!r}"))
            return
        if not isinstance(options, dict) or not isinstance(engine, str):
            self.link.send(channel, packet("RKError", "malformed RKOpenSession"))
            return
        log.info("%s: opening session %d (%s) for %s", self.peer, channel, engine,
                 request.get("kernel", "?"))
        session = Session(channel, engine, options, self.link.send, self._closed)
        with self._lock:
            self.sessions[channel] = session
        session.start()

    def _closed(self, session: Session) -> None:
        with self._lock:
            self.sessions.pop(session.channel, None)


class AgentServer:
    """Accepts links on a loopback port; every link must hold the per-launch token."""

    def __init__(self, token: bytes, host: str = "127.0.0.1", port: int = 0) -> None:
        require_loopback(host)
        self.token = token
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections: list[Connection] = []
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, addr = self.sock.accept()
            except OSError:
                break
            threading.Thread(
                target=self._handle, args=(sock, f"{addr[0]}:{addr[1]}"), daemon=True
            ).start()

    def _handle(self, sock: socket.socket, peer: str) -> None:
        try:
            link = Link.accept(sock, self.token, HANDSHAKE_TIMEOUT)
        except HandshakeError as exc:
            log.warning("refused link from %s: %s", peer, exc)
            sock.close()
            return
        except (LinkError, OSError) as exc:
            log.warning("link from %s failed during the handshake: %s", peer, exc)
            sock.close()
            return
        log.info("link from %s accepted (codec %s, kernel rk_jupyter %s)",
                 peer, link.codec, link.negotiated.peer_version)
        connection = Connection(link, peer, self)
        self.connections.append(connection)
        try:
            connection.serve()
        finally:
            self.connections.remove(connection)

    def shutdown(self) -> None:
        """Stop accepting, close every link and end every engine."""
        self._stopped.set()
        try:
            self.sock.close()
        except OSError:
            pass
        for connection in list(self.connections):
            connection.link.close()
            for session in list(connection.sessions.values()):
                session.close()
