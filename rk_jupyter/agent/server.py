"""The agent's listener: authenticated links from kernels, each carrying sessions."""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import threading
import time
from collections import OrderedDict, deque
from typing import Any

from ..link.connection import Link
from ..link.frames import FrameError, LinkError, LinkTimeout
from ..link.handshake import HandshakeError
from ..link.packets import (
    BAD_REQUEST_ERROR,
    NO_SESSION_ERROR,
    SESSION_EXISTS_ERROR,
    error_packet,
    packet,
    packet_name,
)
from .session import Session

log = logging.getLogger("rk_jupyter.agent")

HANDSHAKE_TIMEOUT = 10.0
#: Connections still in their handshake, at most (and at most a quarter of the process's
#: descriptors): a new one beyond this ends the oldest, so that peers without the token hold
#: a bounded number of the agent's descriptors and threads for a bounded time, and a
#: kernel's own handshake (done in milliseconds) still gets through.
PENDING_MAX = 64
#: Refused handshakes are logged at most once per this many seconds, with a count.
REFUSED_LOG_INTERVAL = 10.0
#: accept() errors that pass (out of descriptors, memory, or a peer gone before its accept):
#: the loop waits, doubling from the first to the last figure, and goes on.
ACCEPT_BACKOFF = (0.01, 1.0)
_TRANSIENT = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED,
              errno.EPROTO, errno.EPERM, errno.EAGAIN, errno.EINTR}


def require_loopback(host: str) -> None:
    """The agent is reachable only through the SSH forward: refuse any other address."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ValueError(f"the agent listens on loopback only, not on {host!r}")


LOG_LINES_MAX = 10_000  # RKLog answers at most this many lines (one frame, bounded)


def log_tail(lines: int) -> tuple[list[str], str]:
    """The last ``lines`` lines of the agent's log file and its path, for ``%rkernel log``.

    The file is the one main configured (``--log-file``), found on the logger rather than
    passed around; ``([], "")`` when the agent logs to stderr only.
    """
    path = next((h.baseFilename for h in log.handlers if isinstance(h, logging.FileHandler)),
                "")
    if not path or lines == 0:
        return [], path
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            tail = deque(handle, maxlen=min(lines, LOG_LINES_MAX))
    except OSError as exc:
        return [f"(cannot read {path}: {exc.strerror or exc})"], path
    return [line.rstrip("\n") for line in tail], path


def _open_files_limit() -> int:
    try:
        import resource
    except ImportError:  # not a Unix host
        return 4 * PENDING_MAX
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 4 * PENDING_MAX


class RefusalLog:
    """Logs refused handshakes: the first at once, then one line per ``interval`` with the
    count and the last reason, so a peer refused in a loop cannot fill the disk.  The
    reasons' peer-chosen parts are bounded by the handshake (``handshake.shown``)."""

    def __init__(self, interval: float = REFUSED_LOG_INTERVAL) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last = -interval
        self._count = 0
        self._latest = ""

    def refused(self, peer: str, reason: str) -> None:
        """One refused peer (called from handshake threads)."""
        with self._lock:
            self._count += 1
            self._latest = f"{peer}: {reason}"
            now = time.monotonic()
            if now - self._last < self.interval:
                return
            count, latest, self._count, self._last = self._count, self._latest, 0, now
        self._write(count, latest)

    def flush(self) -> None:
        """Log what is counted but not yet written (at shutdown)."""
        with self._lock:
            count, latest, self._count = self._count, self._latest, 0
        if count:
            self._write(count, latest)

    @staticmethod
    def _write(count: int, latest: str) -> None:
        if count == 1:
            log.warning("refused link from %s", latest)
        else:
            log.warning("refused %d links in the last period; the latest from %s",
                        count, latest)


class Connection:
    """One kernel-side link: channel 0 controls, channels ≥ 1 are bound to sessions."""

    def __init__(self, link: Link, peer: str, server: AgentServer) -> None:
        self.link = link
        self.peer = peer
        self.server = server
        self.sessions: dict[int, Session] = {}
        self.heartbeat = 0.0
        self._lock = threading.Lock()

    def serve(self) -> None:
        """Read until the peer leaves or misbehaves, then let go of this link's sessions."""
        try:
            while True:
                try:
                    channel, expr = self.link.recv(timeout=3 * self.heartbeat or None)
                except LinkTimeout:
                    log.warning("%s: no heartbeat for %.0f s; dropping the link (its sessions "
                                "wait for their kernel)", self.peer, 3 * self.heartbeat)
                    break
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
                if session.unbind(self.link):
                    self.server.release(session)

    def _control(self, expr: Any) -> None:
        name = packet_name(expr)
        request = expr.args[0] if name and expr.args else None
        if name == "RKPing":
            self.link.send(0, packet("RKPong", *expr.args))
        elif name == "RKOpenSession" and isinstance(request, dict):
            self._open(request)
        elif name == "RKAttachSession" and isinstance(request, dict):
            self._attach(request)
        elif name == "RKCloseSession" and isinstance(request, str):
            how = expr.args[1] if len(expr.args) > 1 and isinstance(expr.args[1], dict) else {}
            self.server.close_session(request, restart=how.get("restart") is True)
        elif name == "RKSessions":
            self.link.send(0, packet("RKSessionList", self.server.summaries()))
        elif name == "RKLog" and isinstance(request, int) and request >= 0:
            self.link.send(0, packet("RKLogLines", *log_tail(request)))
        else:
            log.warning("%s: ignoring unexpected control message %r", self.peer, name or expr)

    def _channel(self, request: dict) -> int | None:
        channel = request.get("channel")
        if not isinstance(channel, int) or not 0 < channel <= 0xFFFF or channel in self.sessions:
            self.link.send(0, error_packet(f"invalid or busy channel {channel!r}",
                                           BAD_REQUEST_ERROR))
            return None
        return channel

    def _open(self, request: dict) -> None:
        channel = self._channel(request)
        if channel is None:
            return
        engine = request.get("engine", "mathics")
        options = request.get("options") or {}
        if isinstance(options, dict) and isinstance(request.get("kernel"), str):
            options = {**options, "kernel": request["kernel"]}  # Engine.close_for_restart
        name = request.get("session") or f"{self.peer}/{channel}"
        keep = request.get("keep", 0)
        label = request.get("label") or {}
        if not (isinstance(options, dict) and isinstance(engine, str) and isinstance(name, str)
                and isinstance(keep, (int, float)) and isinstance(label, dict)):
            self.link.send(channel, error_packet("malformed RKOpenSession", BAD_REQUEST_ERROR))
            return
        try:
            session = self.server.new_session(name, engine, options, float(keep), label)
        except KeyError:
            self.link.send(channel, error_packet(f"session {name!r} exists already",
                                                    SESSION_EXISTS_ERROR))
            return
        log.info("%s: opening session %s (%s) on channel %d", self.peer, name, engine, channel)
        self._bind(session, channel)
        session.start()

    def _attach(self, request: dict) -> None:
        channel = self._channel(request)
        if channel is None:
            return
        name = request.get("session")
        session = self.server.named.get(name) if isinstance(name, str) else None
        if session is None or session.closed:
            self.link.send(channel, error_packet(
                f"the agent has no session {name!r} (it ended, or its engine failed); "
                "restart the kernel", NO_SESSION_ERROR))
            return
        seen = request.get("received", 0)
        keep = request.get("keep", 0)
        if not isinstance(seen, int) or not isinstance(keep, (int, float)):
            self.link.send(channel, error_packet("malformed RKAttachSession", BAD_REQUEST_ERROR))
            return
        log.info("%s: attaching session %s on channel %d", self.peer, name, channel)
        heartbeat = request.get("heartbeat", 0)
        if isinstance(heartbeat, (int, float)) and heartbeat > 0:
            self.heartbeat = float(heartbeat)
        session.keep = float(keep)
        # owed, line, forgotten: for a kernel process that takes over the session (a
        # persistent kernel's next server), which shows what it missed (Evaluator.adopt).
        self.link.send(channel, packet(
            "RKAttached", {**(session.info or {}), "received": session.received,
                           "acknowledged": session.acknowledged(), "owed": session.owed(),
                           "line": session.line, "forgotten": session.forgotten}))
        self._bind(session, channel, seen)

    def _bind(self, session: Session, channel: int, seen: int | None = None) -> None:
        with self._lock:
            self.sessions[channel] = session
        self.server.attached(session)
        session.bind(self.link, channel, seen)

    def forget(self, session: Session) -> None:
        with self._lock:
            for channel, bound in list(self.sessions.items()):
                if bound is session:
                    del self.sessions[channel]


class AgentServer:
    """Accepts links on a loopback port; every link must hold the per-launch token."""

    def __init__(self, token: bytes, host: str = "127.0.0.1", port: int = 0) -> None:
        require_loopback(host)
        self.token = token
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.connections: list[Connection] = []
        self.named: dict[str, Session] = {}
        self._expiry: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._pending: OrderedDict[socket.socket, None] = OrderedDict()
        self.pending_max = min(PENDING_MAX, max(_open_files_limit() // 4, 4))
        self.refusals = RefusalLog()

    def new_session(self, name: str, engine: str, options: dict, keep: float,
                    label: dict | None = None) -> Session:
        """A session registered under ``name``; KeyError if a live one has that name."""
        with self._lock:
            old = self.named.get(name)
            if old is not None and not old.closed:
                raise KeyError(name)
            session = Session(name, engine, options, self._session_closed, keep, label)
            self.named[name] = session
            return session

    def attached(self, session: Session) -> None:
        with self._lock:
            timer = self._expiry.pop(session.name, None)
        if timer:
            timer.cancel()

    def release(self, session: Session) -> None:
        """The session's link is gone: end it, or keep it ``keep`` seconds for an attach."""
        if session.keep <= 0:
            session.close()
            return
        log.info("session %s detached; kept %.0f s for its kernel", session.name, session.keep)
        timer = threading.Timer(session.keep, self._expire, args=(session,))
        timer.daemon = True
        with self._lock:
            self._expiry[session.name] = timer
        timer.start()

    def _expire(self, session: Session) -> None:
        with self._lock:
            self._expiry.pop(session.name, None)
        if session.bound:
            return
        log.info("session %s: nobody attached within %.0f s", session.name, session.keep)
        session.close()

    def summaries(self) -> list[dict[str, Any]]:
        """RKSessionList: every live session's ``Session.summary``, oldest first."""
        with self._lock:
            sessions = [s for s in self.named.values() if not s.closed]
        return sorted((s.summary() for s in sessions), key=lambda row: row["started"])

    def kept_sessions(self) -> int:
        """Sessions that outlive their link (keep > 0): a launcher lost with the network must
        not end them before their kernel had its chance to come back."""
        with self._lock:
            return sum(1 for s in self.named.values() if s.keep > 0 and not s.closed)

    def close_session(self, name: str, restart: bool = False) -> None:
        """RKCloseSession[name, <|"restart" -> bool|>]: the provisioner ends a kernel's
        session (``restart``: the kernel restarts, see ``Session.close``)."""
        session = self.named.get(name)
        if session is not None:
            session.close(restart)

    def _session_closed(self, session: Session) -> None:
        with self._lock:
            if self.named.get(session.name) is session:
                del self.named[session.name]
            timer = self._expiry.pop(session.name, None)
        if timer:
            timer.cancel()
        for connection in list(self.connections):
            connection.forget(session)

    def serve_forever(self) -> None:
        """The accept loop (main runs it in a thread) until ``shutdown``.

        An accept error that passes (EMFILE and the like) does not end it: it waits with
        back-off and goes on, logging once per run of errors, so that a flood that has
        ended leaves an agent that accepts again.
        """
        delay = 0.0
        while not self._stopped.is_set():
            try:
                sock, addr = self.sock.accept()
            except OSError as exc:
                if self._stopped.is_set() or self.sock.fileno() < 0 \
                        or exc.errno not in _TRANSIENT:
                    if not self._stopped.is_set():
                        log.error("the agent stops accepting links: %s", exc)
                    break
                if not delay:
                    log.warning("cannot accept links for now (%s); retrying", exc)
                delay = min(max(delay * 2, ACCEPT_BACKOFF[0]), ACCEPT_BACKOFF[1])
                self._stopped.wait(delay)
                continue
            if delay:
                log.info("accepting links again")
                delay = 0.0
            self._admit(sock)
            try:
                threading.Thread(
                    target=self._handle, args=(sock, f"{addr[0]}:{addr[1]}"), daemon=True
                ).start()
            except RuntimeError as exc:  # no thread to be had: as EMFILE, it passes
                log.warning("cannot start a thread for a link (%s)", exc)
                self._settled(sock)
                sock.close()

    def _admit(self, sock: socket.socket) -> None:
        """Count ``sock`` as pending; beyond ``pending_max``, end the oldest pending handshake
        (its thread sees the shutdown at once and closes its socket)."""
        with self._lock:
            self._pending[sock] = None
            full = len(self._pending) > self.pending_max
            oldest = next(iter(self._pending)) if full else None
            if oldest is not None:
                del self._pending[oldest]
        if oldest is not None:
            try:
                oldest.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _settled(self, sock: socket.socket) -> None:
        with self._lock:
            self._pending.pop(sock, None)

    def _handle(self, sock: socket.socket, peer: str) -> None:
        try:
            link = Link.accept(sock, self.token, HANDSHAKE_TIMEOUT)
        except HandshakeError as exc:
            self.refusals.refused(peer, str(exc))
            sock.close()
            return
        except (LinkError, OSError) as exc:
            self.refusals.refused(peer, f"failed during the handshake: {exc}")
            sock.close()
            return
        except Exception as exc:  # noqa: BLE001 - a peer must not be able to kill this thread
            log.error("link from %s closed: its handshake broke the agent (%s); please "
                      "report this", peer, type(exc).__name__)
            sock.close()
            return
        finally:
            self._settled(sock)
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
        self.refusals.flush()
        for connection in list(self.connections):
            connection.link.close()
        for session in list(self.named.values()):
            session.close()
