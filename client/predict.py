"""``facialattr predict``: the top-10 attributes of a few images, printed at the terminal.

The same path as ``facialattr score`` (the server's contract, :class:`Scorer`, the
pipelined decode of :func:`score_files`, the lift ranking of :func:`top_attributes`),
without a results file: a readable table per image, or ``--json`` for programs.
A missing file or a non-image is an error entry naming it and the run goes on;
a server that never answers ends the run within ``--connect-timeout`` seconds, as for ``score``.

Module level stays light (argparse, json): ``facialattr --help`` imports it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from facialattr.client.ranking import RankedAttribute
    from facialattr.client.scorer import Scorer

log = logging.getLogger(__name__)

TOP_K = 10
# A handful of photos at the terminal: a server that never answered is reported as `score` reports it
# (client/endpoints.py's connect timeout, 1 s when refused), one that answered and then went away is waited for briefly.
DEFAULT_GIVE_UP_S = 30.0


@dataclass(frozen=True)
class Prediction:
    """One input: its ranked attributes, or the error that kept it from being scored."""

    path: str
    attributes: list[RankedAttribute] | None = None
    error: str | None = None
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        """True when the image was scored (``attributes`` holds its top-k)."""
        return self.attributes is not None

    def as_dict(self) -> dict:
        """The JSON shape ``predict --json`` prints: status, and the ranked attributes or the error."""
        if not self.ok:
            return {"path": self.path, "status": "error", "error": self.error, "error_kind": self.error_kind}
        return {"path": self.path, "status": "ok", "top": [
            {"rank": i, "attribute": a.name, "probability": round(a.probability, 6), "present": a.present,
             "lift": round(a.score, 4)}
            for i, a in enumerate(self.attributes, start=1)]}


def predict(paths: Sequence[str | Path], scorer: Scorer, *, k: int = TOP_K, decode_workers: int = 2) -> list[Prediction]:
    """Score ``paths`` (files, or folders non-recursively) on ``scorer``; one :class:`Prediction` per input, in order.

    Raises :class:`~facialattr.client.scorer.ServerUnavailableError` when the server stays unreachable.
    """
    from facialattr.client.batching import EngineConfig, score_files
    from facialattr.client.paths import iter_inputs
    from facialattr.client.ranking import top_attributes

    engine = EngineConfig(decode_workers=decode_workers)
    out = []
    for result in score_files(iter_inputs(paths), scorer, config=engine):
        if result.ok:
            out.append(Prediction(result.path, attributes=top_attributes(result.probabilities, scorer.contract, k=k)))
        else:
            out.append(Prediction(result.path, error=result.error, error_kind=result.error_kind))
    return out


def format_table(predictions: Sequence[Prediction]) -> str:
    """One block per image: rank, attribute, probability, present flag (at the shipped threshold), lift."""
    blocks = []
    for p in predictions:
        if not p.ok:
            blocks.append(f"{p.path}\n  error ({p.error_kind}): {p.error}")
            continue
        width = max([len("attribute")] + [len(a.name) for a in p.attributes])
        lines = [p.path, f"  {'rank':>4}  {'attribute':<{width}}  probability  present  lift"]
        lines += [f"  {i:>4}  {a.name:<{width}}  {a.probability:>11.3f}  {'yes' if a.present else 'no':<7}  {a.score:+.2f}"
                  for i, a in enumerate(p.attributes, start=1)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_json(predictions: Sequence[Prediction]) -> str:
    """The predictions as an indented JSON list, one object per input (see :meth:`Prediction.as_dict`)."""
    return json.dumps([p.as_dict() for p in predictions], indent=2, ensure_ascii=False)


def register(subparsers) -> None:
    """Add the ``facialattr predict`` subcommand to the CLI's subparsers."""
    from facialattr.client.commands import DEFAULT_URL
    from facialattr.client.endpoints import DEFAULT_CONNECT_TIMEOUT_S, REFUSED_GRACE_S

    p = subparsers.add_parser(
        "predict", help="print the top-10 attributes of a few images (no results file)",
        description="Each image's top-10 attributes ranked by lift over the prior, with probability and present flag "
                    "at the model's shipped threshold. Exit status 0 when every image was scored, 3 when some failed, "
                    "4 when no image was found, 1 when the server is unreachable.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="IMAGE", help="image files (a folder: its images, not recursive)")
    p.add_argument("--json", action="store_true", help="print JSON (a list, one object per image) instead of tables")
    p.add_argument("--url", action="append", dest="urls", metavar="HOST:PORT",
                   help=f"Triton gRPC endpoint; repeat for several (default: {DEFAULT_URL})")
    p.add_argument("--server-decode", action="store_true",
                   help="send the files' bytes; the server decodes, crops and resizes (docs/SERVER_DECODE.md)")
    p.add_argument("--top", type=int, default=TOP_K, metavar="K", help="attributes per image (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=30.0, dest="timeout_s", metavar="SECONDS",
                   help="deadline of one inference request (default: %(default)s)")
    p.add_argument("--connect-timeout", type=float, default=None, dest="connect_timeout_s", metavar="SECONDS",
                   help=f"give up this soon when no server has answered at all (default: {DEFAULT_CONNECT_TIMEOUT_S}, "
                        f"or {REFUSED_GRACE_S} when the connection is refused; pass it to wait for a starting server)")
    p.add_argument("--give-up-after", type=float, default=DEFAULT_GIVE_UP_S, dest="give_up_after_s", metavar="SECONDS",
                   help="stop when a server that answered stays unreachable this long (default: %(default)s)")
    p.set_defaults(func=_predict, default_url=DEFAULT_URL)


def _predict(args: argparse.Namespace) -> int:
    from facialattr.client.scorer import RetryPolicy, Scorer, ServerUnavailableError
    from facialattr.errors import EXIT_FATAL, EXIT_NO_INPUTS, EXIT_OK, EXIT_SOME_INPUTS_FAILED, InputError

    timeouts = [args.timeout_s, args.give_up_after_s] + ([] if args.connect_timeout_s is None else [args.connect_timeout_s])
    if args.top < 1 or min(timeouts) <= 0:
        raise InputError("--top must be at least 1; --timeout, --connect-timeout and --give-up-after must be positive")
    urls = args.urls or [args.default_url]
    try:
        with Scorer(urls, timeout_s=args.timeout_s, retry=RetryPolicy(give_up_after_s=args.give_up_after_s),
                    connect_timeout_s=args.connect_timeout_s, answered_wait_s=args.give_up_after_s,
                    server_decode=args.server_decode) as scorer:
            predictions = predict(args.paths, scorer, k=args.top)
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
