"""``facialattr predict``: the top-10 attributes of a few images, printed at the terminal.

The work is :func:`facialattr.client.predict.predict`; this module parses the flags, prints
the table (or ``--json``) and turns the outcome into the exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from facialattr.app import flags
from facialattr.client.predict import TOP_K  # light: json and dataclasses
from facialattr.errors import EXIT_FATAL, EXIT_NO_INPUTS, EXIT_OK, EXIT_SOME_INPUTS_FAILED, ServerUnavailableError

log = logging.getLogger("facialattr.predict")

# A handful of photos at the terminal: a server that answered and then went away is waited for
# briefly, not the minutes a bulk run waits (one that never answered ends within --connect-timeout).
GIVE_UP_AFTER_S = 30.0


def register(subparsers) -> None:
    """Add the ``predict`` subcommand to the ``facialattr`` parser."""
    p = subparsers.add_parser(
        "predict", help="print the top-10 attributes of a few images (no results file)",
        description="Each image's top-10 attributes ranked by lift over the prior, with probability and present flag "
                    "at the model's shipped threshold. " + flags.scoring_exit_statuses(),
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="IMAGE", help="image files (a folder: its images, not recursive)")
    p.add_argument("--json", action="store_true", help="print JSON (a list, one object per image) instead of tables")
    p.add_argument("--top", type=flags.at_least_one, default=TOP_K, metavar="K",
                   help="attributes per image (default: %(default)s)")
    flags.add_scorer_flags(p, give_up_after_s=GIVE_UP_AFTER_S,
                           give_up_help="stop when a server that answered stays unreachable this long")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``facialattr predict``: print the predictions; the exit status."""
    from facialattr.client.predict import format_json, format_table, predict

    try:
        predictions = predict(args.paths, settings=flags.scorer_settings(args), k=args.top)
    except ServerUnavailableError as exc:  # its message names the URLs and how to start a server
        log.error("%s", exc)
        return EXIT_FATAL
    if not predictions:
        log.warning("no images found under %s", ", ".join(str(p) for p in args.paths))
        return EXIT_NO_INPUTS
    print(format_json(predictions) if args.json else format_table(predictions), flush=True)
    failed = [p for p in predictions if not p.ok]
    if failed:
        print(f"{len(failed)} of {len(predictions)} inputs failed", file=sys.stderr)
        return EXIT_SOME_INPUTS_FAILED
    return EXIT_OK
