"""The ``phi3lab`` command. Each module in this package adds one subcommand via ``register``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from .. import __version__
from ..errors import Phi3LabError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phi3lab", description="Fine-tune Phi-3-mini: the phi3lab course tools.")
    parser.add_argument("--version", action="version", version=f"phi3lab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except Phi3LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
