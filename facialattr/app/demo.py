"""``facialattr demo``: the quick start — serve the shipped model, score a folder, show a table.

Starts the embedded Triton on the model repository (or uses the one at ``--url``, as
``make docker-quickstart`` does with the container's), scores the given folder (or
sample photos made from scikit-image's public-domain images), prints the top
attributes of the first images and leaves one row per image in the results file.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from facialattr.app import flags
from facialattr.errors import EXIT_OK

log = logging.getLogger(__name__)

SAMPLE_DIR = Path(".cache/quickstart-images")
TABLE_TOP_K = 5
# The table shows the first this many scored images and the first this many failed ones, in the
# results file's order; a last line counts the rest and names the file that holds them.
TABLE_ROWS = 20
# How long --url waits for a server that is still starting (a container just brought up).
URL_CONNECT_TIMEOUT_S = 60.0


def register(subparsers) -> None:
    """Add the ``demo`` subcommand to the ``facialattr`` parser."""
    p = subparsers.add_parser(
        "demo", help="quick start: serve the shipped model and score a folder (or sample photos)",
        description="Start the embedded Triton on the model repository, score the folder (default: sample photos "
                    "made from scikit-image's public-domain images) and show the top attributes. With --url the "
                    "Triton serving there is used instead and the server flags are unused; it is waited for up "
                    f"to {URL_CONNECT_TIMEOUT_S:.0f} s (a container just brought up).")
    p.add_argument("images", nargs="?", type=Path, help="folder of face photos (default: generated sample photos)")
    p.add_argument("--out", type=Path, default=Path("quickstart-results.csv"),
                   help="results file: .csv, .jsonl or .parquet (default: %(default)s)")
    flags.add_url(p, help_default="start the embedded server")
    flags.add_server_flags(p)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from facialattr.client.bulk import score_paths
    from facialattr.client.settings import ScorerSettings

    images = args.images
    if images is None:
        from facialattr.app.samples import make_sample_folder

        make_sample_folder(SAMPLE_DIR)
        images = SAMPLE_DIR
    if args.urls:
        from facialattr.client.scorer import Scorer

        settings = ScorerSettings(urls=args.urls, connect_timeout_s=URL_CONNECT_TIMEOUT_S)
        with Scorer.from_settings(settings) as scorer:
            print(model_status(scorer.contract.summary), flush=True)
            summary = score_paths([images], out=args.out, recursive=True, overwrite=True, scorer=scorer)
    else:
        summary = _score_with_embedded_server(args, images, score_paths)
    print(format_table(args.out), flush=True)
    for line in summary.lines():
        print(line)
    print(f"results: {args.out} (one row per image: probabilities, present flags, top-10)")
    return EXIT_OK


def _score_with_embedded_server(args: argparse.Namespace, images: Path, score_paths):
    from facialattr import repository
    from facialattr.client.settings import ScorerSettings
    from facialattr.serving.embedded import EmbeddedTriton

    entry = repository.load_model(flags.model_repository(args))
    print(model_status(entry.contract.summary), flush=True)
    with EmbeddedTriton(flags.server_config(args)) as server:
        return score_paths([images], out=args.out, settings=ScorerSettings(urls=(server.config.grpc_url,)),
                           recursive=True, overwrite=True)


def model_status(summary: dict) -> str:
    """One line naming the shipped model and its recorded val metrics (or saying it is a placeholder)."""
    if summary.get("placeholder"):
        return "MODEL: untrained PLACEHOLDER — outputs are not facial attributes (see README)."
    metrics = ", ".join(f"{k} {v}" for k, v in sorted(summary.items()) if k.startswith("val_"))
    return f"MODEL: {summary.get('recipe', 'trained MobileNetV2')} — {metrics or 'no metrics recorded'}"


def format_table(results_csv: Path, *, top_k: int = TABLE_TOP_K, max_rows: int = TABLE_ROWS) -> str:
    """A fixed-width table: image, status, top attributes with probabilities (* = present).

    Shows the first ``max_rows`` scored rows and the first ``max_rows`` failed ones in file order,
    so a folder of thousands stays readable and failures are not pushed out by successes; a last
    line says how many rows are left out and that ``results_csv`` holds them. Reads a
    ``facialattr score`` file in any of its formats; raises OSError when it cannot be read, KeyError
    when it lacks a column.
    """
    from facialattr.client.rows import read_rows

    shown: list[dict] = []
    counts = {kind: {"shown": 0, "left_out": 0} for kind in ("ok", "error")}
    for row in read_rows(results_csv):
        count = counts["ok" if row["status"] == "ok" else "error"]
        if count["shown"] < max_rows:
            shown.append(row)
            count["shown"] += 1
        else:
            count["left_out"] += 1
    name_width = max([len("image")] + [len(Path(r["path"]).name) for r in shown])
    lines = [f"{'image':<{name_width}}  {'status':<6}  top attributes (probability, * = present at its threshold)"]
    for row in shown:
        name = Path(row["path"]).name
        if row["status"] != "ok":
            lines.append(f"{name:<{name_width}}  {row['status']:<6}  {row['error']}")
            continue
        top10 = row["top10"]
        tops = [a for a in (top10.split(";") if isinstance(top10, str) else top10) if a][:top_k]
        # CSV holds "1"/"0"; JSONL and Parquet hold booleans.
        cells = [f"{a} {float(row[a]):.2f}{'*' if row[a + '_present'] in ('1', True) else ''}" for a in tops]
        lines.append(f"{name:<{name_width}}  {'ok':<6}  " + ", ".join(cells))
    ok, failed = counts["ok"]["left_out"], counts["error"]["left_out"]
    if ok + failed:
        lines.append(f"... {ok + failed} more rows ({ok} scored, {failed} failed) in {results_csv}")
    return "\n".join(lines)
