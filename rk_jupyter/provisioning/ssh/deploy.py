"""Getting the agent onto a remote host that has only Python: a zip application over SFTP.

The zipapp holds ``rk_jupyter/__init__.py``, ``errors.py``, ``logfiles.py``, ``safepath.py``,
``rk_jupyter/link`` and ``rk_jupyter/agent`` (engines, the Mathics worker, ``agent/wl/*.wl``) and a
``__main__`` that runs the agent.  It is cached on the remote as
``~/.cache/rk_jupyter/<content-hash>/agent.pyz``: the directory name is a hash of the files, and
the file appears there only by an atomic rename after a complete upload, so "present" means "this
exact version", and a new version gets a new directory.

``launch_command`` is the one shell command that starts the agent: with an installed
rk_jupyter of the same version (mode "auto"), else with the cached zipapp, else it prints
DEPLOY_MARKER and exits, and the caller uploads and tries again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import secrets
import shlex
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import paramiko

from ... import __version__
from ...link.launcher import MIN_PYTHON
from ...safepath import BOOTSTRAP, DROP_CWD
from ..errors import SettingsError, TransportError
from ..settings import AGENT_DEPLOY as MODES

CACHE_DIR = ".cache/rk_jupyter"  # relative to the remote home (SFTP and the shell start there)
DEPLOY_MARKER = "RKJ-AGENT-DEPLOY"
NO_PYTHON_MARKER = "RKJ-NO-PYTHON"
NOT_INSTALLED_MARKER = "RKJ-NOT-INSTALLED"
LOG_DIR = f"{CACHE_DIR}/logs"  # the agents' own logs on the remote: agent-<pid>.log
LOG_DAYS = 14  # older agent logs are removed when an agent starts
_PACKAGE = Path(__file__).resolve().parents[2]  # the rk_jupyter package directory
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # fixed, so that equal content gives equal archives

OLD_PYTHON_TEXT = "rk_jupyter's agent needs Python"  # how the zipapp refuses an old one
# Must run on any Python, so that an old interpreter says why instead of a SyntaxError.
_MAIN = f"""\
import sys
if sys.version_info < {MIN_PYTHON!r}:
    sys.stderr.write("rk_jupyter's agent needs Python %d.%d or newer; %s is %s\\n"
                     % ({MIN_PYTHON[0]}, {MIN_PYTHON[1]}, sys.executable, sys.version.split()[0]))
    sys.exit(3)
from rk_jupyter.agent.main import main
sys.exit(main())
"""


@dataclass(frozen=True)
class Zipapp:
    data: bytes
    digest: str  # hex content hash of the packed files (names and bytes)

    @property
    def remote_path(self) -> str:
        return f"{CACHE_DIR}/{self.digest}/agent.pyz"

    @property
    def sha256(self) -> str:
        """Hash of the archive's bytes: what the launch command checks before running it."""
        return hashlib.sha256(self.data).hexdigest()


REFUSED_PATH_TEXT = "rk_jupyter: refusing to run the agent"
# Runs the cached zipapp as ``python agent.pyz`` would, once it has checked (on any Python 3)
# that what is run is what was deployed: the cache directories and the file are the user's
# and nobody else can write them (so the check is not raced), and the archive's bytes have the
# hash the launcher expects.  A wrong hash (a damaged copy) removes the file and asks for a
# new copy.  argv: SHA256 ZIPAPP AGENT_ARGS… (ps shows "agent.pyz --host …" as before)
_RUN_CHECKED = f"""import hashlib, os, runpy, stat, sys
{DROP_CWD}
want, z = sys.argv[1], sys.argv[2]
top = os.path.abspath({CACHE_DIR!r})
p = os.path.abspath(z)
q = os.path.dirname(p)
for path in (top, q, p):
    s = os.lstat(path)
    if s.st_uid != os.getuid() or s.st_mode & 0o022 or stat.S_ISLNK(s.st_mode):
        sys.stderr.write("{REFUSED_PATH_TEXT} from %s: it must be yours and writable by "
                         "you alone (chmod go-w %s)\\n" % (path, path))
        sys.exit(4)
with open(p, "rb") as f:
    if hashlib.sha256(f.read()).hexdigest() != want:
        os.unlink(p)
        print({DEPLOY_MARKER!r})
        sys.exit(0)
sys.argv = [p] + sys.argv[3:]
runpy.run_path(p, run_name="__main__")
"""


def agent_files(package: Path = _PACKAGE) -> dict[str, bytes]:
    """What the agent needs from rk_jupyter, by archive name: stdlib-only code and data."""
    wanted = [package / "__init__.py", package / "errors.py", package / "logfiles.py",
              package / "safepath.py"]
    for sub in ("link", "agent"):
        wanted += (p for p in (package / sub).rglob("*") if p.suffix in (".py", ".wl"))
    return {
        "rk_jupyter/" + p.relative_to(package).as_posix(): p.read_bytes()
        for p in sorted(wanted)
        if "__pycache__" not in p.parts and p.is_file()
    }


def content_hash(files: dict[str, bytes]) -> str:
    """A hash of names and contents (not of the zip bytes, which depend on zlib)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:20]


def build_zipapp(files: dict[str, bytes]) -> Zipapp:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            archive.writestr(zipfile.ZipInfo(name, _ZIP_DATE), files[name],
                             compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr(zipfile.ZipInfo("__main__.py", _ZIP_DATE), _MAIN,
                         compress_type=zipfile.ZIP_DEFLATED)
    return Zipapp(buffer.getvalue(), content_hash({**files, "__main__.py": _MAIN.encode()}))


@functools.cache
def agent_zipapp() -> Zipapp:
    """This installation's agent zipapp (built once per process)."""
    return build_zipapp(agent_files())


def launch_command(python: str, mode: str, app: Zipapp, agent_args: list[str]) -> str:
    """The shell command that starts the agent (see the module docstring).

    It prints a marker instead when the interpreter is missing, or the agent is not there.
    """
    if mode not in MODES:
        raise SettingsError(f"unknown agent_deploy {mode!r}", f"use one of {', '.join(MODES)}",
                            code="settings.choice")
    # "$@": --log-file for the agent's own log (the shell's $$ is the agent's pid after
    # exec), left out where the directory cannot be made (read-only or full home): the log
    # then goes to stderr only, which comes back over the channel anyway.
    args = shlex.join(agent_args) + ' "$@"'
    # -c puts the working directory first on sys.path: the probe drops it as BOOTSTRAP does
    # (the zipapp's sys.path[0] is the zipapp itself).
    probe = (f'import sys; {DROP_CWD}; '
             f'import rk_jupyter; sys.exit(rk_jupyter.__version__ != "{__version__}")')
    # -P where the remote's Python has it (3.11+), the same bootstrap as safepath's on 3.10.
    installed = ('if "$PY" -P -c "" 2>/dev/null; then exec "$PY" -P -m rk_jupyter.agent '
                 f'{args}; fi; exec "$PY" {shlex.join(["-c", BOOTSTRAP, "rk_jupyter.agent"])}')
    steps = [
        "cd",
        f"PY={shlex.quote(python)}",
        f'command -v "$PY" >/dev/null 2>&1 || {{ echo {NO_PYTHON_MARKER}; exit 0; }}',
        f"L={shlex.quote(LOG_DIR)}",
        # The cache and its logs are the user's alone (0700, whatever the login umask).
        'set --; if (umask 077 && mkdir -p "$L") 2>/dev/null '
        f'&& chmod 700 {shlex.quote(CACHE_DIR)} "$L" && [ -w "$L" ]; then '
        f'find "$L" -name "agent-*.log" -mtime +{LOG_DAYS} -exec rm -f {{}} + 2>/dev/null; '
        'set -- --log-file "$PWD/$L/agent-$$.log" --log-stderr; fi',
    ]
    if mode != "zipapp":
        steps.append(f'if "$PY" -c {shlex.quote(probe)} >/dev/null 2>&1; '
                     f'then {installed} {args}; fi')
    if mode == "installed":
        steps.append(f"echo {NOT_INSTALLED_MARKER}")
    else:
        steps.append(f"Z={shlex.quote(app.remote_path)}")
        steps.append(f'if [ -f "$Z" ]; then chmod 700 "${{Z%/*}}" 2>/dev/null; '
                     f'exec "$PY" -c {shlex.quote(_RUN_CHECKED)} {app.sha256} "$Z" {args}; fi')
        steps.append(f"echo {DEPLOY_MARKER}")
    return "sh -c " + shlex.quote("; ".join(steps))


def copy_probe(app: Zipapp) -> str:
    """A shell command that writes as many bytes as the zipapp where it is copied to, and
    fails with the shell's own words (no space, read-only) when ``upload`` would."""
    directory = shlex.quote(app.remote_path.rsplit("/", 1)[0])
    return "sh -c " + shlex.quote(
        f'cd; umask 077; D={directory}; mkdir -p "$D" && head -c {len(app.data)} /dev/zero '
        '> "$D/.rkj-space-probe"; r=$?; rm -f "$D/.rkj-space-probe"; exit $r')


def upload(sftp: paramiko.SFTPClient, data: bytes, path: str) -> bool:
    """Copy ``data`` to ``path`` (relative to the home directory) unless a file of that size
    is there; True if it was copied (the paramiko backend's copy).

    The file is written under a temporary name and renamed, so that a reader (or a
    concurrent upload from another Jupyter) never sees half a file.
    """
    try:
        if sftp.stat(path).st_size == len(data):
            return False
    except FileNotFoundError:
        pass
    try:
        directory = ""
        for part in path.split("/")[:-1]:
            directory = f"{directory}/{part}" if directory else part
            try:
                if not stat.S_ISDIR(sftp.stat(directory).st_mode or 0):
                    raise TransportError(f"~/{directory} on the remote is not a directory")
            except FileNotFoundError:
                sftp.mkdir(directory, 0o700)
        temporary = f"{path}.{secrets.token_hex(4)}.part"
        with sftp.open(temporary, "wb") as handle:
            handle.set_pipelined(True)
            handle.write(data)
        # Pipelined writes report no error (a full disk's): check what arrived.
        written = sftp.stat(temporary).st_size
        if written != len(data):
            with contextlib.suppress(OSError):
                sftp.remove(temporary)
            raise OSError(f"only {written} of {len(data)} bytes were written")
        sftp.chmod(temporary, 0o600)
        sftp.posix_rename(temporary, path)
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise TransportError(f"cannot copy the agent to ~/{path} on the remote over SFTP: "
                             f"{exc}") from None
    return True
