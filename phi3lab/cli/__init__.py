"""The ``phi3lab`` command. Each module in this package adds one subcommand via ``register``."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from .. import __version__
from ..errors import Phi3LabError, describe_file_error

# What a shell reports for a tool stopped by a closed pipe (128 + SIGPIPE), e.g. `phi3lab data validate F | head`.
EXIT_BROKEN_PIPE = 141
FILE_SYSTEM_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError,
                      UnicodeDecodeError)


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
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not in the interpreter's exit
        return code
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except Phi3LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FILE_SYSTEM_ERRORS as exc:  # one that no module turned into a Phi3LabError naming its path
        print(f"error: {describe_file_error(exc, action='use')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush into the closed pipe stays silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout replaced by something without a descriptor (tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
