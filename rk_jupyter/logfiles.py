"""Log files only their owner can read, of bounded size, pruned after a retention period.

Every log rk_jupyter writes (the launch log ``rk-<kernel_id>.log``, the agent's own log on
either side, the ssh channel's copy of a remote agent's output) holds kernel ids, session
names, pids, ports and every connection attempt: it is created 0600 in a 0700 directory, and
it is capped, because a peer that is refused still decides how often it is refused.

Stdlib only: the agent uses it too, and it is packed into the agent's zipapp (deploy.py).
"""

from __future__ import annotations

import glob
import logging.handlers
import os
import stat
import time
from typing import IO, Any

#: A log file is rotated when it reaches this size; one previous file (``.1``) is kept.
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 1
#: Per-kernel logs older than this are removed when a new kernel starts.
RETENTION_DAYS = 14

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) \
    | getattr(os, "O_CLOEXEC", 0)


def private_dir(path: str) -> str:
    """Create ``path`` (and parents) 0700, or tighten it to 0700 when it is ours and looser.

    Called by whoever chooses a log directory, before the first log is opened there.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def open_private(path: str, mode: str = "a", **kwargs: Any) -> IO[Any]:
    """Open ``path`` for appending, created 0600 (an existing file is set to 0600 too).

    A symlink in its place is refused (O_NOFOLLOW): the directory may not be the caller's
    alone, and a planted link would send the log elsewhere.  ``mode`` is "a" or "ab";
    ``kwargs`` go to ``open`` (encoding, errors).
    """
    fd = os.open(path, _FLAGS, 0o600)
    try:
        os.fchmod(fd, 0o600)
        return open(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def rotate_if_large(path: str, max_bytes: int = LOG_MAX_BYTES) -> None:
    """Move ``path`` to ``path.1`` when it has reached ``max_bytes``; for files a process
    appends to without a logging handler (checked before each open)."""
    try:
        if os.stat(path).st_size >= max_bytes:
            os.replace(path, path + ".1")
    except OSError:
        pass


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose files are created 0600 (see ``open_private``)."""

    def __init__(self, path: str, max_bytes: int = LOG_MAX_BYTES,
                 backups: int = LOG_BACKUPS) -> None:
        super().__init__(path, mode="a", maxBytes=max_bytes, backupCount=backups,
                         encoding="utf-8", delay=False)

    def _open(self) -> IO[str]:
        return open_private(self.baseFilename, "a", encoding=self.encoding,
                            errors=self.errors)


def prune(directory: str, pattern: str, days: float = RETENTION_DAYS) -> int:
    """Remove this user's files in ``directory`` matching ``pattern`` (a glob, e.g.
    ``rk-*.log*``) not written for ``days`` days; return how many.  Best effort."""
    cutoff = time.time() - days * 86400
    removed = 0
    for path in glob.glob(os.path.join(glob.escape(directory), pattern)):
        try:
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() \
                    and info.st_mtime < cutoff:
                os.unlink(path)
                removed += 1
        except OSError:
            pass
    return removed
