"""``facialattr score`` through the embedded Triton vs the in-process ceiling, side by side in one run.

    python benchmarks/score_throughput.py --images DIR [--model-repository model_repository] [--count 2000]

The ceiling is the best JPEG decoder measured here plus ONNX Runtime at its best
batch size, in one process, on the same files, model and cores. (The client itself
always decodes with simplejpeg set like TensorFlow's default decoder, because that
is bit-identical to the pixels the model was trained on; OpenCV's decoder is not.) The Triton side
is the real command (a subprocess, timed from start to exit) and the library
behind it (timed for the scoring loop only, with a breakdown of where time
goes). Runs alternate (ceiling, Triton, ceiling, ...) so a noisy shared host
hurts both sides alike; medians are reported. Prints the ratio, the time split
(decode / transfer / queue / inference) and the batch sizes the server formed
(its ``get_inference_statistics`` batch_stats).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facialattr import repository
from facialattr.app.flags import add_model_repository, model_repository
from facialattr.client.preprocess import prepare
from facialattr.contract import Preprocessing
from facialattr.onnx_runtime import cpu_session
from facialattr.serving.embedded import start_on_free_ports


def decoders() -> dict:
    """The JPEG decoders compared, by name: bytes -> RGB uint8 array (H, W, 3)."""
    import cv2
    import simplejpeg
    from PIL import Image

    return {
        "simplejpeg": lambda data: simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True),
        "opencv": lambda data: cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB),
        "pil": lambda data: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")),
    }


def measure_decoders(files: list[Path], preprocessing: Preprocessing, *, rounds: int = 3) -> dict[str, float]:
    """Read + decode + crop/resize, one thread, images/s per decoder (best of alternating rounds)."""
    rates: dict[str, float] = {}
    for _ in range(rounds):
        for name, decode in decoders().items():
            started = time.perf_counter()
            for path in files:
                prepare(decode(path.read_bytes()), preprocessing)
            rates[name] = max(rates.get(name, 0.0), len(files) / (time.perf_counter() - started))
    return rates


def best_ort_setting(onnx_path: Path, images: np.ndarray, served, batches=(1, 8, 16, 32, 64)) -> tuple[dict, float]:
    """The (spinning, batch) with the highest images/s on real prepared images."""
    results = {}
    for spinning in (False, True):
        session = cpu_session(onnx_path, threads=2, spinning=spinning)
        for batch in batches:
            x = images[:batch]
            session.run([served.config.output_name], {served.config.input_name: x})
            n, started = 0, time.perf_counter()
            while time.perf_counter() - started < 0.5:
                session.run([served.config.output_name], {served.config.input_name: x})
                n += batch
            results[(spinning, batch)] = n / (time.perf_counter() - started)
    (spinning, batch), rate = max(results.items(), key=lambda kv: kv[1])
    return {"spinning": spinning, "batch": batch}, rate


def in_process_ceiling(files: list[Path], onnx_path: Path, served, decode, *, batch: int, spinning: bool, workers: int) -> float:
    """Decode in a thread pool while ONNX Runtime runs batches in this thread; images/s."""
    session = cpu_session(onnx_path, threads=2, spinning=spinning)
    preprocessing = served.contract.preprocessing

    def load(path: Path) -> np.ndarray:
        return prepare(decode(path.read_bytes()), preprocessing)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending: list[np.ndarray] = []
        for image in pool.map(load, files):
            pending.append(image)
            if len(pending) == batch:
                session.run([served.config.output_name], {served.config.input_name: np.stack(pending)})
                pending = []
        if pending:
            session.run([served.config.output_name], {served.config.input_name: np.stack(pending)})
    return len(files) / (time.perf_counter() - started)


def run_library(folder: Path, out: Path, url: str, *, workers: int, max_in_flight: int, batch_size: int | None) -> dict:
    """``score_paths`` over ``folder`` with one Scorer: its summary, the Scorer's statistics and the server's for the run."""
    from facialattr.client import serverstats
    from facialattr.client.batching import EngineConfig
    from facialattr.client.bulk import score_paths
    from facialattr.client.scorer import Scorer
    from facialattr.client.settings import ScorerSettings

    # An own scorer (not score_paths(settings=...)): its statistics are read after the run.
    with Scorer.from_settings(ScorerSettings(urls=url, max_in_flight=max_in_flight)) as scorer:
        before = serverstats.read(url)
        summary = score_paths([folder], out=out, overwrite=True, follow_symlinks=True, progress=False,
                              engine=EngineConfig(decode_workers=workers, batch_size=batch_size), scorer=scorer)
        server = serverstats.difference(before, serverstats.read(url))
        return {"summary": summary, "stats": scorer.stats, "server": server}


def run_cli(folder: Path, out: Path, url: str, *, workers: int, max_in_flight: int, batch_size: int | None) -> tuple[float, float]:
    """(wall images/s including process start, the command's own images/s from its summary)."""
    command = [sys.executable, "-m", "facialattr.app.cli", "score", str(folder), "--out", str(out), "--url", url,
               "--follow-symlinks", "--overwrite", "--no-progress", "--workers", str(workers),
               "--max-in-flight", str(max_in_flight)] + (["--batch-size", str(batch_size)] if batch_size else [])
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"facialattr score failed ({done.returncode}):\n{done.stderr[-3000:]}")
    match = re.search(r"(\d+) inputs this run in [\d.]+ s \(([\d.]+) images/s\)", done.stderr)
    if not match:
        raise SystemExit(f"no summary in the command's output:\n{done.stderr[-2000:]}")
    return int(match.group(1)) / wall, float(match.group(2))


def add_run_args(p: argparse.ArgumentParser) -> None:
    """The options every side-by-side scoring benchmark shares: model, images, how many, how often."""
    add_model_repository(p)
    p.add_argument("--images", type=Path, required=True, metavar="DIR",
                   help="a folder of face JPEGs, e.g. CelebA's img_align_celeba/ (the first --count in name order)")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)


def parse_args(argv=None) -> argparse.Namespace:
    """The shared run options (``add_run_args``) plus the client's workers, requests in flight and batch size."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(p)
    p.add_argument("--workers", type=int, default=2, help="decode threads on both sides")
    p.add_argument("--max-in-flight", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=None, help="client batch (default: the server's max_batch_size)")
    return p.parse_args(argv)


def pick_files(folder: Path, count: int) -> list[Path]:
    """The first ``count`` JPEGs of ``folder`` in name order; exits with a message when it holds fewer."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpg", ".jpeg")))[:count]
    if len(names) < count:
        raise SystemExit(f"{folder} has only {len(names)} JPEGs; need {count}")
    return [folder / n for n in names]


def main(argv=None) -> int:
    """Command line (see the module docstring); returns the exit status 0."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    args.model_repository = model_repository(args)
    entry = repository.load_model(args.model_repository)
    contract, onnx_path = entry.contract, entry.onnx_path()
    files = pick_files(args.images, args.count)
    print(f"model: {args.model_repository} v{entry.latest_version}, input {contract.preprocessing.size_hw}, "
          f"max_batch_size {entry.model_config.max_batch_size}; summary {dict(contract.summary)}")
    print(f"images: {len(files)} from {args.images}; cores: {os.cpu_count()}; decode workers: {args.workers}")
    rates = measure_decoders(files[:300], contract.preprocessing)
    best = max(rates, key=rates.get)
    print("decoders (read+decode+crop+resize, 1 thread, images/s): "
          + ", ".join(f"{k} {v:.0f}" for k, v in sorted(rates.items(), key=lambda kv: -kv[1])) + f" -> {best}")
    sample = np.stack([prepare(decoders()[best](p.read_bytes()), contract.preprocessing) for p in files[:64]])
    setting, rate = best_ort_setting(onnx_path, sample, entry.served)
    print(f"ONNX Runtime alone (no decode): best batch {setting['batch']}, spinning {setting['spinning']}: {rate:.0f} images/s")
    with tempfile.TemporaryDirectory(prefix="score-bench-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for path in files:
            (folder / path.name).symlink_to(path.resolve())
        results = _alternate(args, files, folder, Path(tmp), onnx_path, entry.served, decoders()[best], setting)
    _report(results, len(files))
    return 0


def _alternate(args, files, folder, tmp, onnx_path, served, decode, setting) -> dict:
    results = {"ceiling": [], "cli_wall": [], "cli": [], "library": [], "runs": []}
    server = start_on_free_ports(args.model_repository)
    try:
        url = server.config.grpc_url
        client = {"workers": args.workers, "max_in_flight": args.max_in_flight, "batch_size": args.batch_size}
        run_library(folder, tmp / "warm.csv", url, **client)  # warm-up
        # The short sweep is noisy on a shared host: the server's batch size is tried too, and the better counts.
        batches = sorted({setting["batch"], served.config.max_batch_size})
        for _ in range(args.repeats):
            rates = {b: in_process_ceiling(files, onnx_path, served, decode, batch=b, spinning=setting["spinning"],
                                           workers=args.workers) for b in batches}
            print(f"ceiling by batch: {', '.join(f'{b}: {r:.0f}' for b, r in rates.items())}", flush=True)
            results["ceiling"].append(max(rates.values()))
            wall, own = run_cli(folder, tmp / "cli.csv", url, **client)
            results["cli_wall"].append(wall)
            results["cli"].append(own)
            run = run_library(folder, tmp / "lib.csv", url, **client)
            results["library"].append(run["summary"].images_per_s)
            results["runs"].append(run)
            print(f"run {len(results['runs'])}/{args.repeats}: ceiling {results['ceiling'][-1]:.0f}, command {own:.0f} "
                  f"(wall {wall:.0f}), library {results['library'][-1]:.0f} images/s", flush=True)
    finally:
        server.stop()
    return results


def _report(results: dict, n: int) -> None:
    med = {k: statistics.median(v) for k, v in results.items() if k != "runs"}
    print("\nimages/s (median of runs: " + ", ".join(f"{k} {[round(x) for x in v]}" for k, v in results.items() if k != "runs") + ")")
    print(f"  in-process ceiling (decode + ONNX Runtime)      {med['ceiling']:8.1f}")
    print(f"  facialattr score (command, scoring loop)         {med['cli']:8.1f}   ratio {med['cli'] / med['ceiling']:.3f}")
    print(f"  facialattr score (command, wall incl. start-up)  {med['cli_wall']:8.1f}   ratio {med['cli_wall'] / med['ceiling']:.3f}")
    print(f"  score_paths() library                            {med['library']:8.1f}   ratio {med['library'] / med['ceiling']:.3f}")
    paired = sorted(c / k for c, k in zip(results["cli"], results["ceiling"], strict=True))
    print(f"  paired ratio command/ceiling per repeat: {[round(r, 3) for r in paired]}, median {statistics.median(paired):.3f}")
    run = results["runs"][len(results["runs"]) // 2]
    summary, stats, server = run["summary"], run["stats"], run["server"]
    queue_s = server.mean_queue_ms * server.requests / 1e3
    compute_s = server.mean_compute_ms * server.requests / 1e3
    transfer_s = max(0.0, stats.request_seconds - queue_s - compute_s)
    t = summary.timings
    print(f"\nwhere time goes (one library run, {n} images, {summary.elapsed_s:.2f} s wall; ms per image, summed over threads):")
    print(f"  decode+crop+resize (client workers)   {1e3 * t.decode_s / n:7.3f}")
    print(f"  transfer+serialisation (request time - server queue - compute) {1e3 * transfer_s / n:7.3f}")
    print(f"  server queue (waiting, overlaps the rest) {1e3 * queue_s / n:7.3f}")
    print(f"  server inference (compute; requests merged into one execution each count it) {1e3 * compute_s / n:7.3f}")
    print(f"  main thread waited: for decode {t.wait_decode_s:.2f} s, for the server {t.wait_infer_s:.2f} s")
    print(f"client batches sent: {dict(sorted(t.batch_sizes.items()))}; requests {stats.requests}, retries {stats.retries}")
    print(f"server formed batches (size: executions): {server.formed_batches}; mean {server.mean_formed_batch:.1f}")


if __name__ == "__main__":
    sys.exit(main())
