"""The versioned handshake that opens every link.

Agent (server)                          Kernel (client)
  PREAMBLE + Hello{protocol, codecs, nonce, agent}  →
                                        ←  PREAMBLE + Auth{protocol, codec, nonce, mac}
  Welcome{codec, mac}  or  Refused{reason}          →

``mac`` values are HMAC-SHA256 over both nonces under the per-launch token, so neither side
ever sends the token and each proves it holds it: the agent refuses a peer without the token,
and the kernel refuses an "agent" that is some other program listening on the port.  After
Welcome both directions switch to the agreed compression codec.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import time
from dataclasses import dataclass

from .. import __version__
from .compression import MAX_QUALITY, available_codecs, choose_codec, split_preference
from .frames import FrameReader, FrameWriter, LinkError, LinkTimeout, SocketReader

PREAMBLE = b"RKJL"
#: 2: MEDIUM frames carry the delta filter's form (delta.py).
#: 3: receivers acknowledge bulk bytes on ACK_CHANNEL (the sender measures the path by them).
PROTOCOL_VERSION = 3
HANDSHAKE_MAX_FRAME = 64 * 1024


class HandshakeError(LinkError):
    """The handshake failed; the message names the cause (wrong token, version mismatch, ...)."""


@dataclass
class Negotiated:
    codec: str
    peer_version: str
    peer_protocol: int
    #: MEDIUM brotli quality both sides' writers use, None for the default (``brotli-max``
    #: asks for MAX_QUALITY; the field is optional).
    medium_quality: int | None = None
    #: "local" (agent on this machine: bulk is never compressed) or "remote"; the kernel
    #: says which (optional field, "remote" when absent).
    path: str = "remote"

    @property
    def name(self) -> str:
        """The codec as configured: "brotli-max" when the kernel asked for it."""
        return "brotli-max" if self.codec == "brotli" and self.medium_quality else self.codec


#: How much of a value the peer chose may appear in a message (and so in a log line).
SHOWN_MAX = 40


def shown(value: object, limit: int = SHOWN_MAX) -> str:
    """``repr`` of a peer's value cut to SHOWN_MAX characters: a refused peer decides what it
    sends, and must not decide how long the agent's log lines are (an int's repr is bounded
    first, as a 4,300-digit one is otherwise formatted in full)."""
    if type(value) is int and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit] + f"…({len(text)} chars)"


def _mac(token: bytes, label: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(token, label + first + second, hashlib.sha256).digest()


# The handshake reads without read-ahead: bytes after its last message belong to the Link's
# own FrameReader, which takes over the socket.


def _read_preamble(sock: socket.socket, deadline: float, who: str) -> None:
    got = SocketReader(sock, readahead=False).read_exact(len(PREAMBLE), deadline)
    if got != PREAMBLE:
        raise HandshakeError(
            f"the {who} is not an rk_jupyter link (it sent {got!r}); "
            "is something else listening on that port?"
        )


def _recv_dict(sock: socket.socket, deadline: float) -> dict:
    """The peer's next message, whole within the handshake's deadline (a peer that starts a
    frame and stalls must not hold the handshake for the frame layer's 30 s)."""
    reader = FrameReader(sock, "none", HANDSHAKE_MAX_FRAME, readahead=False, body_timeout=0.0)
    channel, message = reader.recv(max(deadline - time.monotonic(), 0.001))
    if channel != 0 or not isinstance(message, dict):
        raise HandshakeError("malformed handshake message")
    return message


def _protocol(message: dict) -> int | None:
    """The message's protocol version, or None when it is not an integer: every value is
    checked for its type before it is compared (a decoded array cannot be compared)."""
    protocol = message.get("protocol")
    return protocol if type(protocol) is int else None


def server_handshake(sock: socket.socket, token: bytes, timeout: float = 10.0) -> Negotiated:
    """Run the agent's side on a freshly accepted socket.

    Returns what was agreed; raises HandshakeError (after telling the peer why, where that
    is safe) when the peer lacks the token, speaks another protocol version or times out.
    """
    deadline = time.monotonic() + timeout
    writer = FrameWriter(sock, "none")
    nonce = os.urandom(32)
    sock.sendall(PREAMBLE)
    writer.send(
        0,
        {
            "protocol": PROTOCOL_VERSION,
            "codecs": available_codecs(),
            "nonce": nonce,
            "agent": __version__,
        },
    )
    try:
        _read_preamble(sock, deadline, "peer")
        auth = _recv_dict(sock, deadline)
    except LinkTimeout:
        raise HandshakeError("peer did not complete the handshake in time") from None
    protocol = _protocol(auth)
    if protocol != PROTOCOL_VERSION:
        reason = (
            f"protocol version mismatch: agent speaks {PROTOCOL_VERSION}, kernel speaks "
            f"{shown(auth.get('protocol'))}; install the same rk_jupyter version on both sides"
        )
        writer.send(0, {"refused": reason})
        raise HandshakeError(reason)
    peer_nonce = auth.get("nonce")
    mac = auth.get("mac")
    if not (isinstance(peer_nonce, bytes) and len(peer_nonce) == 32 and isinstance(mac, bytes)):
        raise HandshakeError("malformed handshake message")
    if not hmac.compare_digest(mac, _mac(token, b"rkj-kernel", nonce, peer_nonce)):
        writer.send(0, {"refused": "authentication failed: the peer does not hold the token"})
        raise HandshakeError("authentication failed: the peer does not hold the token")
    codec = auth.get("codec")
    if not isinstance(codec, str) or codec not in available_codecs():
        codec = "none"
    quality = auth.get("medium_quality")
    if not (codec == "brotli" and type(quality) is int and 0 <= quality <= MAX_QUALITY):
        quality = None
    writer.send(0, {"codec": codec, "mac": _mac(token, b"rkj-agent", peer_nonce, nonce)})
    path = "local" if auth.get("path") == "local" else "remote"
    return Negotiated(codec, shown(auth.get("kernel", "?")), protocol, quality, path)


def client_handshake(
    sock: socket.socket, token: bytes, codec: str = "brotli", timeout: float = 10.0,
    path: str = "remote",
) -> Negotiated:
    """Run the kernel's side on a connected socket; raise HandshakeError naming the cause.
    ``codec`` is a preference: "brotli", "brotli-max", "zlib" or "none"; ``path`` says
    whether the agent is on this machine ("local") or reached over a network ("remote")."""
    codec, quality = split_preference(codec)
    deadline = time.monotonic() + timeout
    try:
        _read_preamble(sock, deadline, "agent")
        hello = _recv_dict(sock, deadline)
    except LinkTimeout:
        raise HandshakeError(
            "the agent did not greet within the timeout; is the port forwarded to the agent?"
        ) from None
    protocol = _protocol(hello)
    if protocol != PROTOCOL_VERSION:
        raise HandshakeError(
            f"protocol version mismatch: agent speaks {shown(hello.get('protocol'))} "
            f"(rk_jupyter {shown(hello.get('agent'))}), kernel speaks {PROTOCOL_VERSION} "
            f"(rk_jupyter {__version__}); install the same rk_jupyter version on both sides"
        )
    server_nonce = hello.get("nonce")
    offered = hello.get("codecs")
    if not (isinstance(server_nonce, bytes) and isinstance(offered, list)
            and all(isinstance(name, str) for name in offered)):
        raise HandshakeError("malformed handshake message from the agent")
    chosen = choose_codec(codec, offered)
    if chosen != "brotli":
        quality = None
    nonce = os.urandom(32)
    sock.sendall(PREAMBLE)
    auth = {
        "protocol": PROTOCOL_VERSION,
        "codec": chosen,
        "nonce": nonce,
        "mac": _mac(token, b"rkj-kernel", server_nonce, nonce),
        "kernel": __version__,
    }
    if quality is not None:
        auth["medium_quality"] = quality
    if path == "local":
        auth["path"] = path
    FrameWriter(sock, "none").send(0, auth)
    try:
        welcome = _recv_dict(sock, deadline)
    except LinkTimeout:
        raise HandshakeError("the agent did not answer the handshake in time") from None
    except LinkError as exc:
        raise HandshakeError(f"the agent closed the link during the handshake: {exc}") from None
    if "refused" in welcome:
        raise HandshakeError(f"the agent refused the link: {shown(welcome['refused'], 400)}")
    mac = welcome.get("mac")
    if not isinstance(mac, bytes) or not hmac.compare_digest(
        mac, _mac(token, b"rkj-agent", nonce, server_nonce)
    ):
        raise HandshakeError("the agent could not prove it holds the token; refusing it")
    agreed = welcome.get("codec", "none")
    if not isinstance(agreed, str) or agreed != chosen:
        raise HandshakeError(f"the agent answered with codec {shown(agreed)}, not the {chosen!r} "
                             "agreed on; refusing it (install the same rk_jupyter version on "
                             "both sides)")
    return Negotiated(agreed, shown(hello.get("agent")), protocol,
                      quality if agreed == "brotli" else None, path)
