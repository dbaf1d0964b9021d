"""CCTV throughput: frames/s and faces/s for 1, 4 and 8 simultaneous streams against the embedded Triton.

Each stream is the same labelled test video (two people walking, made from a
real face photo by facialattr.client.cctv.synthetic), read as a recorded file,
so the watcher runs as fast as it can: the figures are capacity, not a camera's
frame rate. All runs share one server, started here on the given model
repository; the batches Triton formed come from its statistics (delta per run).

    python benchmarks/cctv_streams.py                       # model_repository/, streams 1 4 8
    python benchmarks/cctv_streams.py --model-repository R --streams 1 2 --frames 40 --rescore-every 1
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from facialattr import repository
from facialattr.app.flags import add_model_repository, model_repository
from facialattr.client.cctv.detect import DEFAULT_DETECTOR, make_detector
from facialattr.client.cctv.metrics import server_batch_counts
from facialattr.client.cctv.pipeline import WatchConfig, Watcher
from facialattr.client.cctv.sources import FrameSource, parse_source
from facialattr.client.cctv.synthetic import make_scene, write_video
from facialattr.client.cctv.track import TrackerConfig
from facialattr.client.scorer import Scorer
from facialattr.client.serverstats import mean_batch
from facialattr.client.settings import ScorerSettings
from facialattr.serving.embedded import start_on_free_ports


def run_streams(video: Path, n_streams: int, *, url: str, detector_name: str, rescore_every: int,
                parallel: bool = True) -> dict:
    """Watch ``n_streams`` copies of ``video`` at once against the server at ``url``; frames/s, faces/s, batches.

    Returns a row for ``print_table``: rates per second of wall time, latency percentiles in ms, and the
    batch sizes Triton formed during the run (from its statistics). ``parallel=False`` shares one detector.
    """
    sources = [FrameSource(parse_source(f"cam{i}={video}", default_name=f"cam{i}")) for i in range(n_streams)]
    config = WatchConfig(tracker=TrackerConfig(rescore_every_frames=rescore_every), log_interval_s=3600)
    before = server_batch_counts(url)
    with Scorer.from_settings(ScorerSettings(urls=url)) as scorer:
        # A factory: one detector per camera, detected in parallel; an instance: shared, one camera after another.
        detector = (lambda: make_detector(detector_name)) if parallel else make_detector(detector_name)
        watcher = Watcher(sources, detector, scorer, config=config)
        start = time.perf_counter()
        summary = watcher.run()
        elapsed = time.perf_counter() - start
    formed = server_batch_counts(url) - before
    snap = watcher.metrics.snapshot()
    return {
        "streams": n_streams, "frames": summary.frames, "seconds": elapsed,
        "frames_per_s": summary.frames / elapsed, "faces_per_s": summary.faces / elapsed,
        "scored_per_s": summary.scored / elapsed, "requests": summary.requests,
        "request_batch": summary.scored / max(1, summary.requests), "server_batch": mean_batch(formed),
        "formed": dict(sorted(formed.items())), "p50_ms": snap.latency_p50_ms, "p95_ms": snap.latency_p95_ms,
    }


def print_table(rows: list[dict]) -> None:
    """Print ``run_streams`` rows as a Markdown table, then frames/s relative to the first row."""
    print("\n| streams | frames | frames/s | frames/s per stream | faces/s | crops scored/s | requests | crops/request | "
          "server mean batch | server batches formed (size: count) | frame latency p50 / p95 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        formed = ", ".join(f"{k}: {v}" for k, v in r["formed"].items())
        print(f"| {r['streams']} | {r['frames']} | {r['frames_per_s']:.1f} | {r['frames_per_s'] / r['streams']:.1f} | "
              f"{r['faces_per_s']:.1f} | "
              f"{r['scored_per_s']:.1f} | {r['requests']} | {r['request_batch']:.1f} | {r['server_batch']:.1f} | "
              f"{formed} | {r['p50_ms']:.0f} / {r['p95_ms']:.0f} |")
    base = rows[0]["frames_per_s"]
    print(f"\nframes/s relative to {rows[0]['streams']} stream(s): " + ", ".join(f"{r['streams']}: {r['frames_per_s'] / base:.2f}x" for r in rows))


def main() -> None:
    """Command line (see the module docstring): starts the embedded server on free ports, runs each stream count."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_repository(parser)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--frames", type=int, default=40, help="frames per stream")
    parser.add_argument("--size", default="320x240", help="frame size WxH")
    parser.add_argument("--detector", default=DEFAULT_DETECTOR)
    parser.add_argument("--rescore-every", type=int, default=5)
    parser.add_argument("--compare-sequential", action="store_true",
                        help="also run each multi-stream case with one shared detector, side by side")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    w, h = (int(v) for v in args.size.split("x"))
    repo = model_repository(args)
    entry = repository.load_model(repo)
    print(f"model served: {repo} version {entry.latest_version}, input "
          f"{entry.contract.preprocessing.size_hw}, max batch {entry.model_config.max_batch_size}, "
          f"summary {dict(entry.contract.summary)}")
    print(f"video: {args.frames} frames {w}x{h}, 2 faces per frame; detector {args.detector}; "
          f"each track re-scored every {args.rescore_every} frames")
    with tempfile.TemporaryDirectory() as tmp:
        scene = make_scene(n_frames=args.frames, size_wh=(w, h), face_width_px=max(32, h // 5),
                           step_px=max(1, (w - h // 2) // args.frames))
        video = write_video(scene, Path(tmp) / "scene.mp4")
        server = start_on_free_ports(repo)
        try:
            url = server.config.grpc_url
            run_streams(video, 1, url=url, detector_name=args.detector, rescore_every=args.rescore_every)  # warm-up
            rows, sequential = [], []
            for n in args.streams:
                rows.append(run_streams(video, n, url=url, detector_name=args.detector, rescore_every=args.rescore_every))
                if args.compare_sequential and n > 1:
                    sequential.append(run_streams(video, n, url=url, detector_name=args.detector,
                                                  rescore_every=args.rescore_every, parallel=False))
        finally:
            server.stop()
    print("\nCameras of a round detected in parallel threads (one detector each):")
    print_table(rows)
    if sequential:
        print("\nSame, one shared detector, cameras one after another:")
        print_table(sequential)
        by_n = {r["streams"]: r for r in rows}
        print("\nparallel / sequential frames/s: " + ", ".join(
            f"{r['streams']} streams: {by_n[r['streams']]['frames_per_s'] / r['frames_per_s']:.2f}x" for r in sequential))


if __name__ == "__main__":
    main()
