"""``rk-jupyter``: add, list and remove Wolfram Language kernelspecs."""

from __future__ import annotations

import argparse
import re
import sys

from . import kernelspec

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _add(args: argparse.Namespace) -> int:
    if not _NAME.match(args.name):
        raise SystemExit(
            f"rk-jupyter add: invalid name {args.name!r}: use letters, digits, '.', '_', '-'"
        )
    if not args.local:
        raise SystemExit(
            "rk-jupyter add: say where the engine runs: --local (this machine); "
            "remote hosts (--host) come with the ssh transport"
        )
    config: dict = {"transport": "local", "engine": args.engine, "compression": args.compression}
    if args.kernel_path:
        config["engine_options"] = {"kernel_path": args.kernel_path}
    engine_label = "Mathics3" if args.engine == "mathics" else "Wolfram"
    display = args.display_name or f"Wolfram Language ({engine_label}, {args.name})"
    where = kernelspec.install(args.name, display, config, user=args.user,
                               prefix=args.prefix or (sys.prefix if args.sys_prefix else None))
    print(f"installed kernelspec {kernelspec.spec_name(args.name)} ({display}) in {where}")
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = kernelspec.installed()
    if not rows:
        print("no rk- kernelspecs; add one with: rk-jupyter add local --local --engine mathics")
        return 0
    for row in rows:
        cfg = row["config"]
        host = cfg.get("host") or "this machine"
        print(f"{row['name']:<16} {cfg.get('transport', 'local'):<6} {host:<24} "
              f"{cfg.get('engine', 'mathics'):<8} {row['resource_dir']}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    try:
        where = kernelspec.remove(args.name)
    except KeyError:
        raise SystemExit(f"rk-jupyter remove: no kernelspec named rk-{args.name}") from None
    print(f"removed {where}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rk-jupyter", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="install kernelspec rk-NAME")
    add.add_argument("name")
    add.add_argument("--local", action="store_true", help="run the agent on this machine")
    add.add_argument("--engine", choices=("mathics", "wolfram"), default="mathics")
    add.add_argument("--kernel-path", help="WolframKernel executable (engine wolfram)")
    add.add_argument("--compression", choices=("brotli", "zlib", "none"), default="brotli")
    add.add_argument("--display-name")
    where = add.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="in the user's Jupyter data dir")
    where.add_argument("--sys-prefix", action="store_true", help="in sys.prefix (venv/conda)")
    where.add_argument("--prefix", help="under this prefix")
    add.set_defaults(func=_add)
    sub.add_parser("list", help="show rk- kernelspecs").set_defaults(func=_list)
    remove = sub.add_parser("remove", help="remove kernelspec rk-NAME")
    remove.add_argument("name")
    remove.set_defaults(func=_remove)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
