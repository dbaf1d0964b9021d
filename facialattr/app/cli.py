"""The ``facialattr`` command: thin subcommands over the library.

Each command's flags and handler live in a module of this package that imports nothing heavy
at module level (so ``facialattr serve --help`` never loads TensorFlow); the work is the parts'
library calls. Flags more than one command takes are defined once (:mod:`facialattr.app.flags`),
signals are handled here only (:mod:`facialattr.app.signals`), and a command's missing extra is
reported before it starts (:mod:`facialattr.extras`).
Run as the ``facialattr`` console script, ``python -m facialattr.app`` or ``python -m facialattr.app.cli``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from facialattr import __version__
from facialattr.app.signals import sigterm_as_interrupt
from facialattr.errors import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_OK, FacialAttrError
from facialattr.extras import check_extra

# Modules with a ``register(subparsers)`` function; each added subparser sets ``func``.
COMMAND_MODULES = (
    "facialattr.app.serve",
    "facialattr.app.score",
    "facialattr.app.predict",
    "facialattr.app.watch",
    "facialattr.app.training",
    "facialattr.app.export",
    "facialattr.app.bench",
    "facialattr.app.demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``facialattr`` parser with every subcommand (each registers without importing its part)."""
    parser = argparse.ArgumentParser(prog="facialattr", description="Batch scoring of the 40 CelebA facial attributes behind NVIDIA Triton.")
    parser.add_argument("--version", action="version", version=f"facialattr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns its exit status (facialattr.errors.EXIT_*).

    A FacialAttrError is logged as one line and gives EXIT_FATAL; Ctrl-C or SIGTERM gives
    EXIT_INTERRUPTED; argparse exits with EXIT_USAGE (2) on bad arguments.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    sigterm_as_interrupt()
    try:
        check_extra(args.command, args)
        return int(args.func(args) or EXIT_OK)
    except FacialAttrError as exc:
        logging.getLogger("facialattr").error("%s", exc)
        return EXIT_FATAL
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
