"""``rk-jupyter``: add, list and remove Wolfram Language kernelspecs.

    rk-jupyter add NAME --local [--engine mathics|wolfram] ...
    rk-jupyter add NAME --host [user@]host[:port] [--engine ...] [--remote-python PATH]
                       [--identity FILE] [--proxy-jump HOST] [--known-hosts FILE] ...
                       [--slurm="--partition=P --time=MINUTES ..."]
    rk-jupyter list
    rk-jupyter remove NAME
    rk-jupyter doctor NAME [--json | --mime] [--quick]
    rk-jupyter doctor --settings-stdin [--mime] [--quick] [NAME]
    rk-jupyter sessions NAME [--end ID]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

from . import kernelspec
from .errors import RKError
from .provisioning.errors import SettingsError
from .provisioning.settings import (
    LaunchSettings,
    default_of,
    key_of,
    parse_destination,
    settings_fields,
    value_type,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: The settings ``add`` offers an option for (the schema's ``flag``) that only mean something
#: for a remote host.
_SSH_OPTIONS = tuple(f.name for f in settings_fields() if key_of(f).flag and key_of(f).ssh)
#: The environment variable that names the kernelspec of the kernel that runs the doctor.
KERNELSPEC_ENV = "RK_KERNELSPEC"


def _fail(message: str) -> SystemExit:
    return SystemExit(f"rk-jupyter add: {message}")


def _existing_file(path: str, what: str) -> str:
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(full):
        raise _fail(f"{what} {path!r} does not exist")
    return full


def _ssh_config(args: argparse.Namespace) -> dict[str, Any]:
    """The provisioner config of a remote kernelspec, from validated arguments."""
    try:
        dest = parse_destination(args.host)
    except ValueError as exc:
        raise _fail(f"--host {exc}") from None
    config: dict[str, Any] = {"transport": "ssh", "host": dest.host}
    if dest.user:
        config["user"] = dest.user
    if dest.port:
        config["port"] = dest.port
    if args.remote_python:
        config["remote_python"] = args.remote_python
    if args.identity_file:
        config["identity_file"] = _existing_file(args.identity_file, "--identity")
    if args.proxy_jump:
        for hop in args.proxy_jump.split(","):
            try:
                parse_destination(hop)
            except ValueError as exc:
                raise _fail(f"--proxy-jump {exc}") from None
        config["proxy_jump"] = args.proxy_jump
    if args.known_hosts:
        if args.host_key_policy == "accept-new":
            config["known_hosts"] = os.path.abspath(os.path.expanduser(args.known_hosts))
        else:
            config["known_hosts"] = _existing_file(args.known_hosts, "--known-hosts")
    if args.ssh_config:
        config["ssh_config"] = _existing_file(args.ssh_config, "--ssh-config")
    if args.host_key_policy:
        config["host_key_policy"] = args.host_key_policy
    if args.agent_deploy:
        config["agent_deploy"] = args.agent_deploy
    if args.ssh_client:
        config["ssh_client"] = args.ssh_client
    if args.slurm:
        config["slurm"] = args.slurm
    return config


def default_display_name(name: str, local: bool, engine: str) -> str:
    """"Wolfram Language (NAME)"; a local Mathics3 spec says so, since it is not the user's
    Wolfram kernel but the licence-free default."""
    if local and engine == "mathics":
        return f"Wolfram Language (Mathics3, {name})"
    return f"Wolfram Language ({name})"


def _add(args: argparse.Namespace) -> int:
    if not _NAME.match(args.name):
        raise _fail(f"invalid name {args.name!r}: use letters, digits, '.', '_', '-'")
    if args.local and args.host:
        raise _fail("--local and --host exclude each other: the engine runs either on this "
                    "machine or on a remote host")
    if not args.local and not args.host:
        raise _fail("say where the engine runs: --local (this machine) or "
                    "--host [user@]host[:port]")
    if args.kernel_path and args.engine != "wolfram":
        raise _fail("--kernel-path names a WolframKernel: it needs --engine wolfram")
    if args.local:
        flags = {f.name: key_of(f).flag for f in settings_fields()}
        given = [flags[o] for o in _SSH_OPTIONS if getattr(args, o)]
        if given:
            raise _fail(f"{', '.join(given)} only apply to a remote host (--host), "
                        "not to --local")
        config: dict[str, Any] = {"transport": "local"}
    else:
        config = _ssh_config(args)
    config.update({"engine": args.engine, "compression": args.compression})
    for f in settings_fields():  # the other settings add has an option for, when given
        key = key_of(f)
        if key.flag and not key.ssh and f.name not in config \
                and getattr(args, f.name) != default_of(f):
            config[f.name] = getattr(args, f.name)
    if args.kernel_path:
        config["engine_options"] = {"kernel_path": args.kernel_path}
    try:  # what the provisioner would refuse at every start, refused now
        LaunchSettings.from_config(config)
    except SettingsError as exc:
        raise _fail(str(exc)) from None
    display = args.display_name or default_display_name(args.name, args.local, args.engine)
    where = kernelspec.install(args.name, display, config, user=args.user,
                               prefix=args.prefix or (sys.prefix if args.sys_prefix else None))
    print(f"installed kernelspec {kernelspec.spec_name(args.name)} ({display}) in {where}")
    return 0


def describe_host(config: dict[str, Any]) -> str:
    """``user@host:port via jump`` of a kernelspec config, as ``list`` shows it."""
    if config.get("transport", "local") != "ssh":
        return "this machine"
    host = str(config.get("host", "?"))
    if config.get("user"):
        host = f"{config['user']}@{host}"
    if config.get("port"):
        host = f"{host}:{config['port']}"
    if config.get("proxy_jump"):
        host = f"{host} via {config['proxy_jump']}"
    return host


def _list(args: argparse.Namespace) -> int:
    rows = kernelspec.installed()
    if not rows:
        print("no rk- kernelspecs; add one with: rk-jupyter add NAME --local, or "
              "rk-jupyter add NAME --host [user@]host[:port]")
        return 0
    table = [("NAME", "TRANSPORT", "HOST", "ENGINE", "LOCATION")]
    for row in rows:
        cfg = row["config"]
        table.append((row["name"], cfg.get("transport", "local"), describe_host(cfg),
                      cfg.get("engine", "mathics"), row["resource_dir"]))
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for r in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=False))
              + "  " + r[4])
    return 0


def _remove(args: argparse.Namespace) -> int:
    try:
        where = kernelspec.remove(args.name)
    except KeyError:
        raise SystemExit(f"rk-jupyter remove: no kernelspec named rk-{args.name}") from None
    print(f"removed {where}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    """Each step's line as it ends (a slow step shows where it is), one JSON list, or one
    MIME bundle (``--mime``: what ``%rkernel doctor`` displays; the kernel runs this command
    in a subprocess, so that the kernel process never imports the doctor or paramiko)."""
    from . import doctor  # paramiko and the ssh modules: only for this command

    if args.settings_stdin:
        name = args.name or os.environ.get(KERNELSPEC_ENV) or "this kernel"
        try:
            given: Any = json.loads(sys.stdin.read())
        except ValueError as exc:
            given = f"the launch settings on stdin are not JSON: {exc}"
        checkup = doctor.Checkup(name, given, quick=args.quick)
    elif args.name:
        name, checkup = args.name, doctor.Checkup(args.name, quick=args.quick)
    else:
        raise SystemExit("rk-jupyter doctor: name a kernelspec (rk-jupyter doctor NAME), or "
                         "give launch settings with --settings-stdin")
    if args.mime:
        steps = checkup.run()
        title = f"rk_jupyter doctor: {name}"
        print(json.dumps({"text/plain": doctor.render_text(title, steps),
                          "text/html": doctor.render_html(title, steps)}, ensure_ascii=False))
    elif args.json:
        steps = checkup.run()
        print(json.dumps([step.as_dict() for step in steps], indent=2, ensure_ascii=False))
    else:
        print(f"rk-jupyter doctor {name}", flush=True)
        steps = checkup.run(lambda step: print(doctor.format_step(step), flush=True))
        print(doctor.summary(steps))
    return 0 if doctor.passed(steps) else 1


def _sessions(args: argparse.Namespace) -> int:
    """List a persistent kernelspec's sessions, or end one (``--end ID``)."""
    from .provisioning import sessions  # the launch side: only for this command

    rows = [row for row in kernelspec.installed() if args.name in (row["name"],
                                                                    row["kernelspec"])]
    if not rows:
        raise SystemExit(f"rk-jupyter sessions: no kernelspec named rk-{args.name} (see "
                         "rk-jupyter list)")
    try:
        settings = LaunchSettings.from_config(rows[0]["config"])
        if args.end:
            if not sessions.end(settings, args.end):
                raise SystemExit(f"rk-jupyter sessions: rk-{args.name}'s agent has no session "
                                 f"{args.end} (rk-jupyter sessions {args.name} lists them)")
            print(f"ended session {args.end}")
            return 0
        found = sessions.sessions(settings)
    except SettingsError as exc:
        raise SystemExit(f"rk-jupyter sessions: {exc}") from None
    except RKError as exc:
        raise SystemExit(f"rk-jupyter sessions: {exc} [{exc.code}]") from None
    if not found:
        print(f"no sessions of rk-{args.name}" + ("" if settings.persistent else
              " (the kernelspec is not persistent: rk-jupyter add NAME --persistent ...)"))
        return 0
    table = sessions.table(found)
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for r in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=False))
              + "  " + r[4])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rk-jupyter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="install kernelspec rk-NAME")
    add.add_argument("name")
    place = add.add_argument_group("where the engine runs (one of)")
    place.add_argument("--local", action="store_true", help="on this machine")
    place.add_argument("--host", metavar="[USER@]HOST[:PORT]",
                       help="on a remote host, over SSH (HOST may be an ~/.ssh/config alias)")
    add.add_argument("--kernel-path", help="WolframKernel executable (engine wolfram)")
    add.add_argument("--display-name", help='default: "Wolfram Language (NAME)", or '
                     '"Wolfram Language (Mathics3, NAME)" for --local --engine mathics')
    ssh = add.add_argument_group("remote hosts (--host)")
    _settings_options(add, ssh)
    where = add.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="in the user's Jupyter data dir")
    where.add_argument("--sys-prefix", action="store_true", help="in sys.prefix (venv/conda)")
    where.add_argument("--prefix", help="under this prefix")
    add.set_defaults(func=_add)
    sub.add_parser("list", help="show rk- kernelspecs").set_defaults(func=_list)
    remove = sub.add_parser("remove", help="remove kernelspec rk-NAME")
    remove.add_argument("name")
    remove.set_defaults(func=_remove)
    check = sub.add_parser("doctor", help="check every step from here to kernelspec rk-NAME's "
                           "engine; exit status 0 only if all pass")
    check.add_argument("name", nargs="?", help="the kernelspec (with --settings-stdin: the "
                       f"name to show; default ${KERNELSPEC_ENV}, else \"this kernel\")")
    output = check.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true",
                        help="print a JSON list of {step, ok, status, seconds, detail, fix}")
    output.add_argument("--mime", action="store_true",
                        help="print one JSON object, a MIME bundle with text/plain and "
                        "text/html (what %%rkernel doctor displays)")
    check.add_argument("--settings-stdin", action="store_true",
                       help="check the launch settings read as a JSON object from stdin (a "
                       "kernel's RK_SETTINGS) instead of a kernelspec's")
    check.add_argument("--quick", action="store_true",
                       help="leave out the seven engine checks that follow the throughput "
                       "step (input, package, throw, messages, interrupt, graphics, print): "
                       "they are then absent from the report; the chain up to a working "
                       "engine (1+1) is checked as always")
    check.set_defaults(func=_doctor)
    listing = sub.add_parser("sessions", help="list the sessions of persistent kernelspec "
                             "rk-NAME that wait for their notebooks, or end one")
    listing.add_argument("name")
    listing.add_argument("--end", metavar="ID", help="end this session and its engine")
    listing.set_defaults(func=_sessions)
    return parser


def _settings_options(add: argparse.ArgumentParser, ssh: argparse._ArgumentGroup) -> None:
    """``add``'s options for the settings the schema gives a ``flag``: the schema's help,
    choices and (for the settings every kernelspec records) default."""
    for f in settings_fields():
        key = key_of(f)
        if key.flag is None:
            continue
        options: dict[str, Any] = {"dest": f.name, "metavar": key.metavar,
                                   "help": key.help.replace("%", "%%")}
        if key.choices:
            options["choices"] = key.choices
        if value_type(f) in (int, float):
            options["type"] = value_type(f)
        if value_type(f) is bool:  # a switch: given means true
            options = {k: v for k, v in options.items() if k != "metavar"}
            options["action"] = "store_true"
        if not key.ssh:  # written into every kernelspec, so with its default
            options["default"] = default_of(f)
        (ssh if key.ssh else add).add_argument(key.flag, **options)


def _dashed_values(argv: list[str]) -> None:
    """Refuse ``--slurm --partition=x``, naming the fix: argparse takes a value that starts
    with a dash for an option of its own and says only "expected one argument"."""
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "--slurm" and value.startswith("-") and " " not in value:
            raise _fail(f'write --slurm="{value} ..." with "=": srun options start with '
                        "dashes, so a separate word would be read as an option of add")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _dashed_values(argv)
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
