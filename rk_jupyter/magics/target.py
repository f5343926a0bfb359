"""What ``%rkernel connect`` connects to: a kernelspec's provisioner config, or ``--host``.

The config is turned into transport settings by ``RemoteKernelProvisioner`` itself, so the
magics start exactly the agent that Jupyter would start for the same kernelspec.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from traitlets import TraitError, TraitType

from .. import kernelspec
from ..provisioning.provisioner import RemoteKernelProvisioner
from ..provisioning.transports import TransportError
from .connection import RKernelError

CONNECT_USAGE = (
    "usage: %rkernel connect NAME [--OPTION VALUE ...]  (NAME: an rk- kernelspec, e.g. local)\n"
    "       %rkernel connect --host [USER@]HOST[:PORT] [--OPTION VALUE ...]"
)
# The kernelspec key that is not named like its provisioner trait.
_KERNELSPEC_KEYS = {"transport_name": "transport"}
# rk-jupyter add's names for options that are named otherwise here.
_ALIASES = {"--identity": "--identity-file"}


def connect_options() -> dict[str, tuple[str, TraitType | None]]:
    """``--option`` → (config key, trait that parses its value): one for every config trait of
    the provisioner, plus ``--kernel-path`` (an engine option, as in ``rk-jupyter add``)."""
    options: dict[str, tuple[str, TraitType | None]] = {}
    for name, trait in RemoteKernelProvisioner.class_own_traits(config=True).items():
        key = _KERNELSPEC_KEYS.get(name, name)
        options["--" + key.replace("_", "-")] = (key, trait)
    options["--kernel-path"] = ("kernel_path", None)
    return options


def find_kernelspec(name: str) -> dict[str, Any]:
    """The installed rk- kernelspec called ``name`` or ``rk-name``."""
    rows = kernelspec.installed()
    for row in rows:
        if name in (row["name"], row["kernelspec"]):
            return row
    available = ", ".join(row["kernelspec"] for row in rows) or "none"
    raise RKernelError(
        f"no rk- kernelspec named {name!r}; available: {available} "
        "(add one with: rk-jupyter add NAME --local)"
    )


def connect_config(args: list[str]) -> tuple[str, dict[str, Any]]:
    """(label, provisioner config) for the words after ``%rkernel connect``.

    Options override the kernelspec's config; ``--host`` without a NAME means transport ssh.
    Raises UsageError on bad usage and RKernelError for an unknown kernelspec.
    """
    options = connect_options()
    names: list[str] = []
    given: dict[str, Any] = {}
    engine_options: dict[str, str] = {}
    words = iter(args)
    for word in words:
        if not word.startswith("--"):
            names.append(word)
            continue
        option, _, text = word.partition("=")
        option = _ALIASES.get(option, option)
        if option not in options:
            raise UsageError(f"unknown option {option}; options: {', '.join(sorted(options))}"
                             f"\n{CONNECT_USAGE}")
        text = text or next(words, "")
        if not text:
            raise UsageError(f"option {option} needs a value\n{CONNECT_USAGE}")
        key, trait = options[option]
        if trait is None:
            engine_options[key] = text
            continue
        try:
            given[key] = trait.from_string(text)
        except Exception as exc:  # what the trait type's parser raises (ValueError, ...)
            raise UsageError(f"{option} {text!r}: {exc}") from None
    if len(names) > 1 or not (names or "host" in given):
        raise UsageError(CONNECT_USAGE)
    if names:
        row = find_kernelspec(names[0])
        label, config = row["kernelspec"], dict(row["config"])
    else:
        label, config = f"ssh {given['host']}", {"transport": "ssh"}
    if "host" in given:
        given.update(_destination(given.pop("host")))
    config.update(given)
    if engine_options:
        config["engine_options"] = {**config.get("engine_options", {}), **engine_options}
    return label, config


def _destination(text: str) -> dict[str, Any]:
    """``--host [user@]host[:port]`` as config keys, split as ``rk-jupyter add`` splits it."""
    from ..provisioning.ssh.target import parse_destination  # imports paramiko

    try:
        dest = parse_destination(text)
    except ValueError as exc:
        raise UsageError(f"--host {exc}") from None
    keys: dict[str, Any] = {"host": dest.host}
    if dest.user:
        keys["user"] = dest.user
    if dest.port:
        keys["port"] = dest.port
    return keys


def transport_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings dict the provisioner hands to ``create_transport`` for ``config``."""
    try:
        return RemoteKernelProvisioner(**config)._settings()
    except TraitError as exc:
        raise RKernelError(f"invalid kernelspec config: {exc}") from None
    except TransportError as exc:
        raise RKernelError(str(exc)) from None
