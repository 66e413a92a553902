"""The ``medclip`` command line (``medclip --help``; ``python -m medclip`` works too)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from medclip import __version__
from medclip.commands import COMMAND_MODULES
from medclip.errors import MedclipError

log = logging.getLogger("medclip")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="medclip",
        description=(
            "Tri-modal (chest X-ray, 12-lead ECG, report) contrastive learning, zero-shot "
            "diagnosis, prototype ECG explanations and similar-case retrieval. "
            "Research use only: not for clinical decisions."
        ),
    )
    parser.add_argument("--version", action="version", version=f"medclip {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"medclip.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"medclip.commands.{name}":
                continue  # not shipped in this build
            raise
        module.register(sub)
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbosity == 0:
        logging.getLogger("medclip").setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medclip`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MedclipError as exc:
        print(f"medclip {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # includes the data layer's documented errors
        if args.verbose >= 2:
            raise
        print(f"medclip {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
