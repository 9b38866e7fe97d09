"""The `tamis` command. Subcommands live in `pipeline/commands/<name>.py`, each with `add_parser`."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import pipeline.commands as commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tamis", description="Curate pretraining text on Ray.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"pipeline.commands.{mod.name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from pipeline.spec import SpecError
    try:
        return int(args.func(args) or 0)
    except SpecError as e:
        print(f"tamis: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tamis: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
