"""The container's server beside the embedded one: time to ready, then images/s on the same folder.

Brings up docker-compose.yml's ``cpu`` profile server (``triton-cpu``, the image
``docker/build-image.sh`` builds) on free host ports and times ``up`` to the first 200 from its
``/ready``; starts the embedded server (``facialattr serve``'s) on the same repository (the
checkout's model_repository/, which the compose file mounts: so no ``--model-repository``); then scores
the first ``--limit`` images of ``--images`` with the same client in this process, alternating
embedded and container ``--rounds`` times, each round with the 1-minute load average at its end.
Run it on a quiet machine, with a Docker engine, from a checkout::

    python benchmarks/container.py --images DIR --limit 2000

Both servers stay up through the rounds (only the one being scored is busy); both go at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from facialattr import defaults
from facialattr.serving.endpoint import answers_ready

ROOT = Path(__file__).resolve().parents[1]
# What docker-compose.yml mounts into the container; the embedded server serves the same one.
REPOSITORY = ROOT / defaults.MODEL_REPOSITORY
SERVERS = ("embedded", "container")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((defaults.HOST, 0))
        return s.getsockname()[1]


def start_container(project: str, *, timeout_s: float = 180) -> tuple[str, float, dict]:
    """``up -d triton-cpu`` on free ports; returns its gRPC URL, seconds to ready, and the compose environment."""
    grpc, metrics, supervisor = (_free_port() for _ in range(3))
    env = {**os.environ, "FACIALATTR_GRPC_PORT": str(grpc), "FACIALATTR_METRICS_PORT": str(metrics),
           "FACIALATTR_SUPERVISOR_PORT": str(supervisor)}
    started = time.monotonic()
    subprocess.run(["docker", "compose", "-p", project, "--profile", "cpu", "up", "-d", "triton-cpu"],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    while not answers_ready(f"http://{defaults.HOST}:{supervisor}/ready"):
        if time.monotonic() - started > timeout_s:
            raise SystemExit(f"the container was not ready within {timeout_s:.0f} s")
        time.sleep(0.1)
    return f"{defaults.HOST}:{grpc}", time.monotonic() - started, env


def score_round(paths: list[Path], url: str, server: str) -> dict:
    from facialattr.client.batching import score_files
    from facialattr.client.scorer import Scorer
    from facialattr.client.settings import ScorerSettings

    with Scorer.from_settings(ScorerSettings(urls=url)) as scorer:
        started = time.perf_counter()
        results = list(score_files(paths, scorer))
        wall_s = time.perf_counter() - started
    return {"server": server, "images": len(results), "scored": sum(r.ok for r in results),
            "images_per_s": len(results) / wall_s, "load_1min": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="folder of images (searched recursively)")
    parser.add_argument("--limit", type=int, default=2000, help="images per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the rounds here")
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from facialattr.imagefiles import is_image_name
    from facialattr.serving.embedded import start_on_free_ports

    paths = sorted(p for p in args.images.rglob("*") if p.is_file() and is_image_name(p.name))[: args.limit]
    if not paths:
        raise SystemExit(f"no images under {args.images}")
    print(f"load before: {os.getloadavg()[0]:.2f}; {len(paths)} images per round", flush=True)
    project = f"facialattr-bench-{os.getpid()}"
    container_url, ready_s, env = start_container(project)
    print(f"container ready {ready_s:.1f} s after `up` (load {os.getloadavg()[0]:.2f})", flush=True)
    embedded = start_on_free_ports(REPOSITORY)
    rounds: list[dict] = []
    try:
        urls = {"embedded": embedded.config.grpc_url, "container": container_url}
        for _ in range(args.rounds):
            for server in SERVERS:
                rounds.append(score_round(paths, urls[server], server))
                r = rounds[-1]
                print(f"{server:9s} {r['images_per_s']:7.1f} images/s  ({r['scored']}/{r['images']} scored, "
                      f"load {r['load_1min']:.2f})", flush=True)
    finally:
        embedded.stop()
        subprocess.run(["docker", "compose", "-p", project, "--profile", "cpu", "down"], cwd=ROOT, env=env,
                       capture_output=True)
    medians = {s: statistics.median(r["images_per_s"] for r in rounds if r["server"] == s) for s in SERVERS}
    ratios = [c["images_per_s"] / e["images_per_s"] for e, c in zip(rounds[::2], rounds[1::2], strict=True)]
    print(f"median images/s: embedded {medians['embedded']:.1f}, container {medians['container']:.1f}; "
          f"container/embedded per round {', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})")
    if args.json:
        args.json.write_text(json.dumps({"ready_s": ready_s, "rounds": rounds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
