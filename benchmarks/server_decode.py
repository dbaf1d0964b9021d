"""Client decode vs server decode on the same folder: images/s, CPU-ms per image on each side, bytes sent.

Starts a private embedded Triton on ``--model-repository`` (the pixel model and its bytes twin),
then scores the first ``--limit`` images of ``--images`` with :func:`score_files` in
alternating rounds: client decoding (pixels sent), then server decoding (file bytes sent),
``--rounds`` times, so a neighbour's load hits both alike. Each round reports images/s,
client CPU-ms per image (this process), server CPU-ms per image (the tritonserver process
tree, Python-backend stubs included, read from /proc), bytes sent per image (tensor
payload), and the 1-minute load average at its end beside each figure::

    nice -n 19 python benchmarks/server_decode.py --images DIR --limit 500
    nice -n 19 python benchmarks/server_decode.py --images DIR --limit 500 --inference onnx

``--inference onnx`` serves a copy of the repository whose bytes twin runs the network in its
own ONNX Runtime session instead of a BLS call to the pixel model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from facialattr import encoded, repository
from facialattr.app.flags import add_model_repository, model_repository

log = logging.getLogger(__name__)

MODES = ("client", "server")


def run_round(paths: list[Path], url: str, *, mode: str, server_pid: int, workers: int) -> dict:
    """Score ``paths`` once in ``mode``; returns the round's figures."""
    from facialattr.benchmarks.cpu import tree_cpu_s
    from facialattr.client.batching import EngineConfig, score_files
    from facialattr.client.scorer import Scorer
    from facialattr.client.settings import ScorerSettings

    with Scorer.from_settings(ScorerSettings(urls=url, server_decode=mode == "server")) as scorer:
        h, w = scorer.contract.preprocessing.size_hw
        server_before, client_before, started = tree_cpu_s(server_pid), time.process_time(), time.perf_counter()
        results = list(score_files(paths, scorer, config=EngineConfig(decode_workers=workers)))
        wall_s = time.perf_counter() - started
        client_s, server_s = time.process_time() - client_before, tree_cpu_s(server_pid) - server_before
    scored = [r for r in results if r.ok]
    # The tensor payload: prepared pixels, or each file with the 4-byte length of a BYTES element.
    sent = len(scored) * h * w * 3 if mode == "client" else sum(p.stat().st_size + 4 for p in paths)
    n = len(results)
    return {"mode": mode, "images": n, "scored": len(scored), "images_per_s": n / wall_s,
            "client_cpu_ms_per_image": 1000 * client_s / n, "server_cpu_ms_per_image": 1000 * server_s / n,
            "bytes_sent_per_image": sent / n, "load_1min": os.getloadavg()[0]}


def served_copy(source: Path, inference: str, dest: Path) -> Path:
    """``source`` as is for "bls"; for another mode a copy whose bytes twin is rewritten to use it."""
    if inference == encoded.DEFAULT_INFERENCE:
        return source
    shutil.copytree(source, dest, symlinks=True)
    twin = repository.load_encoded_model(dest)
    config = encoded.EncodedModelConfig(
        pixel_model=twin.encoded_config.pixel_model, max_batch_size=twin.encoded_config.max_batch_size,
        instance_count=twin.encoded_config.instance_count, inference=inference)
    repository.write_encoded_model(dest, twin.contract, config=config)
    return dest


def summarise(rounds: list[dict]) -> list[str]:
    """One line per mode: medians over its rounds, with the load average range beside them."""
    lines = []
    for mode in MODES:
        mine = [r for r in rounds if r["mode"] == mode]
        med = {k: statistics.median(r[k] for r in mine) for k in mine[0] if isinstance(mine[0][k], float)}
        loads = [r["load_1min"] for r in mine]
        lines.append(f"{mode} decode: {med['images_per_s']:.1f} images/s, client {med['client_cpu_ms_per_image']:.2f} "
                     f"CPU-ms/image, server {med['server_cpu_ms_per_image']:.2f} CPU-ms/image, "
                     f"{med['bytes_sent_per_image']:.0f} bytes sent/image (median of {len(mine)} rounds; "
                     f"load {min(loads):.2f}-{max(loads):.2f})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="folder of face images (first --limit in name order)")
    parser.add_argument("--limit", type=int, default=500, help="images per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode, alternating (default: %(default)s)")
    add_model_repository(parser, old_spelling="--repository", what="model repository with the bytes twin")
    parser.add_argument("--inference", choices=encoded.INFERENCE_MODES, default=encoded.DEFAULT_INFERENCE,
                        help="how the bytes twin runs the network (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="client decode threads (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="also write the rounds as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from facialattr.benchmarks.images import list_images
    from facialattr.serving.embedded import start_on_free_ports

    paths = list_images(args.images, limit=args.limit)
    with tempfile.TemporaryDirectory(prefix="facialattr-server-decode-") as tmp:
        server = start_on_free_ports(served_copy(model_repository(args), args.inference, Path(tmp) / "repo"))
        try:
            # One unmeasured pass each: model sessions, stubs and the page cache warm.
            for mode in MODES:
                run_round(paths[:64], server.config.grpc_url, mode=mode, server_pid=server.pid, workers=args.workers)
            rounds = []
            for i in range(args.rounds):
                for mode in MODES if i % 2 == 0 else MODES[::-1]:
                    rounds.append(run_round(paths, server.config.grpc_url, mode=mode, server_pid=server.pid,
                                            workers=args.workers))
                    log.info("%s", json.dumps(rounds[-1]))
        finally:
            server.stop()
    print(f"{len(paths)} images from {args.images}, bytes twin inference {args.inference!r}, {os.cpu_count()} CPUs")
    for line in summarise(rounds):
        print(line)
    if args.out:
        args.out.write_text(json.dumps({"inference": args.inference, "rounds": rounds}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
