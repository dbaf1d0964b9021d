"""The ``facialattr`` command: thin subcommands over the library.

Each part registers its subcommands from a ``commands`` module that imports
nothing heavy at module level, so ``facialattr serve --help`` never loads TensorFlow.
Run as the ``facialattr`` console script, ``python -m facialattr.app`` or ``python -m facialattr.app.cli``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from facialattr import __version__
from facialattr.errors import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_OK, FacialAttrError
from facialattr.extras import check_extra

# Modules with a ``register(subparsers)`` function; each added subparser sets ``func``.
COMMAND_MODULES = (
    "facialattr.serving.commands",
    "facialattr.client.commands",
    "facialattr.client.predict",
    "facialattr.client.cctv.commands",
    "facialattr.training.commands",
    "facialattr.export.commands",
    "facialattr.benchmarks.commands",
    "facialattr.app.demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``facialattr`` parser with every subcommand whose part is installed (a missing part is skipped)."""
    parser = argparse.ArgumentParser(prog="facialattr", description="Batch scoring of the 40 CelebA facial attributes behind NVIDIA Triton.")
    parser.add_argument("--version", action="version", version=f"facialattr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that part is not present in this install
                continue
            raise
        module.register(subparsers)
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
    # SIGTERM takes the same path as Ctrl-C, so servers and files are closed cleanly.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        check_extra(args.command, args)
        return int(args.func(args) or EXIT_OK)
    except FacialAttrError as exc:
        logging.getLogger("facialattr").error("%s", exc)
        return EXIT_FATAL
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _raise_keyboard_interrupt(signum, frame):
    # The exception can land in a finalizer (a weakref callback, __del__), where Python prints and
    # drops it and the run goes on; with the default action back, a second SIGTERM always ends it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
