"""Find a Wolfram kernel executable and the WSTP library that talks to it.

The kernel comes from the ``kernel_path`` option (the executable, or an installation directory)
or, without it, from the usual installation places and PATH.  The library is looked for inside
the kernel's own installation, so that both always come from the same version: WSTP's
DeveloperKit (``SystemFiles/Links/WSTP/DeveloperKit/<SystemID>/CompilerAdditions`` or
``SystemAdditions``) or ``SystemFiles/Libraries/<SystemID>``.  Versions before WSTP (9 and older)
ship only MathLink (``libML64i4.so``...), whose functions are named ML* instead of WS* and whose
kernel flag is ``-mathlink`` instead of ``-wstp``.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..base import EngineError

SYSTEM_IDS = {
    ("Linux", "x86_64"): "Linux-x86-64",
    ("Linux", "amd64"): "Linux-x86-64",
    ("Linux", "aarch64"): "Linux-ARM64",
    ("Linux", "arm64"): "Linux-ARM64",
    ("Darwin", "x86_64"): "MacOSX-x86-64",
    ("Darwin", "arm64"): "MacOSX-ARM64",
    ("Windows", "amd64"): "Windows-x86-64",
    ("Windows", "x86_64"): "Windows-x86-64",
}

# Executable names, most specific first (``wolfram``/``math`` are launchers of the same kernel).
KERNEL_NAMES = {
    "Linux": ("WolframKernel", "MathKernel", "wolfram", "math"),
    "Darwin": ("WolframKernel", "MathKernel"),
    "Windows": ("WolframKernel.exe", "MathKernel.exe", "wolfram.exe", "math.exe"),
}

# (API prefix, library file names), the WSTP library first, MathLink only for old versions.
LIBRARY_NAMES = {
    "Linux": (("WS", ("libWSTP64i4.so",)), ("ML", ("libML64i4.so",))),
    "Darwin": (
        ("WS", ("wstp.framework/wstp", "libWSTP64i4.dylib")),
        ("ML", ("mathlink.framework/mathlink", "libML64i4.dylib")),
    ),
    "Windows": (("WS", ("wstp64i4.dll",)), ("ML", ("ml64i4.dll",))),
}

# Installation directories (<product>/<version> holds SystemFiles), newest version wins.
INSTALL_GLOBS = {
    "Linux": (
        "/usr/local/Wolfram/*/*",
        "/opt/Wolfram/*/*",
        "/opt/Mathematica/*",
        "/usr/local/Mathematica/*",
        "~/Wolfram/*/*",
    ),
    "Darwin": (
        "/Applications/*.app/Contents",
        "/Applications/Wolfram Engine.app/Contents/Resources/Wolfram Player.app/Contents",
        "~/Applications/*.app/Contents",
    ),
    "Windows": (
        "C:/Program Files/Wolfram Research/*/*",
        "C:/Program Files/Wolfram Research/*",
    ),
}

EXAMPLE_KERNELS = {
    "Linux": "/usr/local/Wolfram/Wolfram/14.3/Executables/WolframKernel",
    "Darwin": "/Applications/Wolfram.app/Contents/MacOS/WolframKernel",
    "Windows": r"C:\Program Files\Wolfram Research\Wolfram\14.3\WolframKernel.exe",
}


@dataclass(frozen=True)
class Installation:
    """A kernel and the library to drive it."""

    kernel: Path
    library: Path
    api: str  # "WS" (WSTP) or "ML" (MathLink, versions 9 and older)
    system_id: str

    @property
    def link_flag(self) -> str:
        """The kernel's command-line switch for running under a link."""
        return "-wstp" if self.api == "WS" else "-mathlink"


def system_id(system: str | None = None, machine: str | None = None) -> str:
    """Wolfram's $SystemID for this host (it names directories inside an installation)."""
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    try:
        return SYSTEM_IDS[(system, machine)]
    except KeyError:
        raise EngineError(
            f"Wolfram kernels are not made for this platform ({system} {machine}); "
            f"supported: {', '.join(sorted(set(SYSTEM_IDS.values())))}"
        ) from None


def fix_hint(system: str) -> str:
    """The sentence that tells the user how to name the kernel explicitly."""
    example = EXAMPLE_KERNELS.get(system, EXAMPLE_KERNELS["Linux"])
    return (
        "Fix: give the kernel executable explicitly, e.g. "
        f"`rk-jupyter add NAME --engine wolfram --kernel-path {example}`"
    )


def locate(
    kernel_path: str | None = None,
    *,
    system: str | None = None,
    machine: str | None = None,
    install_globs: tuple[str, ...] | None = None,
    search_path: bool = True,
) -> Installation:
    """The kernel to start and its WSTP library; EngineError names what was looked at.

    ``system``/``machine``/``install_globs``/``search_path`` default to this host (tests use
    them to describe other hosts).
    """
    system = system or platform.system()
    sid = system_id(system, machine)
    if kernel_path:
        kernel = _explicit_kernel(Path(kernel_path).expanduser(), system, sid)
    else:
        kernel = _default_kernel(system, sid, install_globs, search_path)
    root = installation_root(kernel)
    if root is None:
        raise EngineError(
            f"{kernel} is not inside a Wolfram installation (no SystemFiles directory above it), "
            f"so its WSTP library cannot be found. {fix_hint(system)}"
        )
    looked: list[Path] = []
    for api, names in LIBRARY_NAMES.get(system, LIBRARY_NAMES["Linux"]):
        for candidate in library_candidates(root, sid, names):
            looked.append(candidate)
            if candidate.is_file():
                return Installation(kernel, candidate, api, sid)
    raise EngineError(
        f"the WSTP library of the kernel {kernel} was not found; looked for: "
        + ", ".join(str(p) for p in looked)
        + f". The installation at {root} may be incomplete (reinstall it with its WSTP/"
        f"DeveloperKit component), or the kernel path is not the one you meant. {fix_hint(system)}"
    )


def library_candidates(root: Path, sid: str, names: tuple[str, ...]) -> list[Path]:
    """Where an installation keeps its WSTP (or MathLink) shared library, in search order."""
    kits = [
        root / "SystemFiles" / "Links" / kit / "DeveloperKit" / sid / sub
        for kit in ("WSTP", "MathLink")
        for sub in ("CompilerAdditions", "SystemAdditions")
    ]
    dirs = [*kits, root / "SystemFiles" / "Libraries" / sid]
    return [d / name for name in names for d in dirs]


def installation_root(kernel: Path) -> Path | None:
    """The directory holding SystemFiles above ``kernel`` (symbolic links followed)."""
    real = kernel.resolve()
    for parent in list(real.parents)[:6]:
        if (parent / "SystemFiles").is_dir():
            return parent
    return None


def _explicit_kernel(path: Path, system: str, sid: str) -> Path:
    if not path.exists():
        raise EngineError(
            f"the Wolfram kernel path {path} does not exist on this host. {fix_hint(system)}"
        )
    if path.is_dir():
        found = _kernel_in(path, system, sid)
        if found is None:
            raise EngineError(
                f"no Wolfram kernel executable in the directory {path}: looked for "
                f"{', '.join(KERNEL_NAMES[system])} in "
                + ", ".join(str(d) for d in _kernel_dirs(path, sid))
                + f". {fix_hint(system)}"
            )
        return found
    if not _executable(path, system):
        raise EngineError(
            f"the Wolfram kernel path {path} is not an executable file (check its permissions, "
            f"or give the WolframKernel executable itself). {fix_hint(system)}"
        )
    return path


def _default_kernel(
    system: str, sid: str, install_globs: tuple[str, ...] | None, search_path: bool
) -> Path:
    patterns = INSTALL_GLOBS.get(system, ()) if install_globs is None else install_globs
    roots = sorted(
        {Path(p) for pattern in patterns for p in glob.glob(os.path.expanduser(pattern))},
        key=_version_key,
        reverse=True,
    )
    for root in roots:
        found = _kernel_in(root, system, sid)
        if found is not None:
            return found
    if search_path:
        for name in KERNEL_NAMES[system]:
            found_on_path = shutil.which(name)
            if found_on_path:
                return Path(found_on_path)
    where = ", ".join(patterns) + (" and PATH" if search_path else "")
    raise EngineError(
        f"no Wolfram kernel found on this host: looked in {where}. {fix_hint(system)}"
    )


def _kernel_dirs(root: Path, sid: str) -> list[Path]:
    """Where an installation directory (or a macOS app bundle) keeps its kernel."""
    bases = [root, root / "Contents"] if (root / "Contents").is_dir() else [root]
    dirs: list[Path] = []
    for base in bases:
        dirs += [
            base / "Executables",
            base / "MacOS",
            base,
            base / "SystemFiles" / "Kernel" / "Binaries" / sid,
        ]
    return dirs


def _kernel_in(root: Path, system: str, sid: str) -> Path | None:
    for directory in _kernel_dirs(root, sid):
        for name in KERNEL_NAMES[system]:
            candidate = directory / name
            if candidate.is_file() and _executable(candidate, system):
                return candidate
    return None


def _executable(path: Path, system: str) -> bool:
    if system == "Windows":
        return path.suffix.lower() == ".exe"
    return os.access(path, os.X_OK)


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key of an installation directory by the version in its name (14.3 > 13.0 > rest)."""
    name = path.parent.name if path.name == "Contents" else path.name
    match = re.search(r"(\d+(?:\.\d+)*)", name)
    return tuple(int(x) for x in match.group(1).split(".")) if match else (-1,)
