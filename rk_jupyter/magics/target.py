"""What ``%rkernel connect`` connects to: a kernelspec's provisioner config, or ``--host``.

The options are the launch settings' keys (``rk_jupyter.provisioning.settings``) and the
config becomes the same validated ``LaunchSettings`` a kernel start builds, so the magics
start exactly the agent that Jupyter would start for the same kernelspec.
"""

from __future__ import annotations

from dataclasses import Field
from typing import Any

from IPython.core.error import UsageError

from .. import kernelspec
from ..provisioning.errors import SettingsError
from ..provisioning.settings import (
    LaunchSettings,
    parse_destination,
    parse_text,
    settings_fields,
)
from .connection import RKernelError

CONNECT_USAGE = (
    "usage: %rkernel connect NAME [--OPTION VALUE ...]  (NAME: an rk- kernelspec, e.g. local)\n"
    "       %rkernel connect --host [USER@]HOST[:PORT] [--OPTION VALUE ...]"
)
def connect_options() -> dict[str, tuple[str, Field | None]]:
    """``--option`` → (config key, settings field that parses its value): one for every
    launch setting (also under ``rk-jupyter add``'s name where it differs, e.g.
    ``--identity``), plus ``--kernel-path`` (an engine option, as in ``rk-jupyter add``)."""
    options: dict[str, tuple[str, Field | None]] = {}
    for f in settings_fields():
        options["--" + f.name.replace("_", "-")] = (f.name, f)
        flag = f.metadata["key"].flag
        if flag:
            options[flag] = (f.name, f)
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
        if option not in options:
            raise UsageError(f"unknown option {option}; options: {', '.join(sorted(options))}"
                             f"\n{CONNECT_USAGE}")
        text = text or next(words, "")
        if not text:
            raise UsageError(f"option {option} needs a value\n{CONNECT_USAGE}")
        key, setting = options[option]
        if setting is None:
            engine_options[key] = text
            continue
        try:
            given[key] = parse_text(setting, text)
        except ValueError as exc:
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


def transport_settings(config: dict[str, Any]) -> LaunchSettings:
    """The validated launch settings of ``config``, as a kernel start would build them;
    RKernelError (with the setting's code) names a bad key and the values it allows."""
    try:
        return LaunchSettings.from_config(config)
    except SettingsError as exc:
        raise RKernelError(exc.cause, exc.fix, code=exc.code) from None
