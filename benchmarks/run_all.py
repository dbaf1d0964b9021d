"""Everything in benchmarks/RESULTS.md, from one run on this machine, on the same images.

    python benchmarks/run_all.py --images /path/to/img_align_celeba --out benchmarks/results/

Serves ``--model-repository`` (default model_repository/) with the embedded Triton
under several candidate settings, picks the shipped ones, sweeps batch size x
concurrency, runs Locust, and measures the baselines (ONNX Runtime in-process, a
Keras predict loop, one process per image). ``--standin`` measures the
untrained same-architecture stand-in instead (before the trained model exists).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from facialattr import defaults, repository
from facialattr.app.flags import add_model_repository, model_repository
from facialattr.benchmarks import baselines, images, locust_run, paired, plots, report, standin
from facialattr.benchmarks.load import LoadSpec, run_load
from facialattr.benchmarks.sweep import ServingSettings, choose, run_sweep, serve_with, trial

log = logging.getLogger("facialattr.benchmarks.run_all")

P99_BUDGET_MS = 100.0
USERS = 16
CANDIDATES = [
    ServingSettings(instances=1, intra_op_threads=2, max_queue_delay_us=0),
    ServingSettings(instances=1, intra_op_threads=2, max_queue_delay_us=2000),
    ServingSettings(instances=1, intra_op_threads=2, max_queue_delay_us=8000),
    ServingSettings(instances=1, intra_op_threads=1, max_queue_delay_us=2000),
    ServingSettings(instances=2, intra_op_threads=1, max_queue_delay_us=2000),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options of ``python benchmarks/run_all.py`` (see ``--help``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, help="folder of face JPEGs (CelebA aligned); required unless --render-only")
    p.add_argument("--limit", type=int, default=2000, help="images used (default: %(default)s)")
    add_model_repository(p)
    p.add_argument("--keras-model", type=Path, help="the same model as .keras, for the Keras baselines")
    p.add_argument("--standin", type=int, nargs="*", metavar="SIZE",
                   help="measure the untrained stand-in at these input sizes (first = main; default 128 160)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--results-md", type=Path, default=Path("benchmarks/RESULTS.md"))
    p.add_argument("--duration-s", type=float, default=5.0, help="measured seconds per load point")
    p.add_argument("--locust-s", type=int, default=20, help="seconds of the Locust run (0 skips it)")
    p.add_argument("--per-image-sample", type=int, default=5, help="images timed one process each")
    p.add_argument("--quick", action="store_true", help="a smoke run: two candidates, small sweep, short loads")
    p.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md and plots from OUT/results.json")
    return p.parse_args(argv)


def resolve_models(args: argparse.Namespace) -> tuple[Path, Path | None, list[int]]:
    """(repository, Keras file or None, further stand-in sizes): the stand-in when ``--standin``, else the given model."""
    if args.standin is None:
        return model_repository(args), args.keras_model, []
    sizes = args.standin or [128, 160]
    main = standin.build_standin(size=sizes[0])
    return main.repository, main.keras_path, sizes[1:]


def recorded_path(path: Path) -> str:
    """``path`` as results.json records it: relative to the working directory when inside it, else by its name."""
    if not path.is_absolute():
        return str(path)
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else path.name


def recorded_command(argv: list[str], *, images: Path) -> str:
    """The run's command as results.json records it: the images folder by its name (as ``images.folder``),
    any other absolute path by :func:`recorded_path`, so no path of the measuring machine is committed."""
    shown = []
    for previous, token in zip([None, *argv], argv, strict=False):
        option, equals, value = token.partition("=") if token.startswith("--") and "=" in token else ("", "", token)
        if option == "--images" or previous == "--images":
            value = images.name
        elif value.startswith("/"):
            value = recorded_path(Path(value))
        shown.append(shlex.quote(option + equals + value))
    return " ".join(["python benchmarks/run_all.py", *shown])


def ort_best(results: list[baselines.Throughput]) -> baselines.Throughput:
    """The fastest ONNX Runtime measurement (highest images/s)."""
    return max(results, key=lambda r: r.images_per_s)


def measure_serving(repo: Path, frames, files, args, *, onnx_path: Path, paired_batch: int) -> dict[str, Any]:
    """Trial of candidate settings, then sweep, paired ratios, bulk and Locust under the chosen one."""
    quick = args.quick
    candidates = CANDIDATES[1:3] if quick else CANDIDATES
    bulk_spec = LoadSpec(batch_size=min(32, len(frames)), concurrency=2, duration_s=args.duration_s)
    users_spec = LoadSpec(batch_size=1, concurrency=USERS, duration_s=args.duration_s)
    trials = trial(repo, frames, candidates, bulk=bulk_spec, users=users_spec, passes=1 if quick else 2)
    best = choose(trials, p99_budget_ms=P99_BUDGET_MS)
    out: dict[str, Any] = {
        "trial": [t.to_dict() for t in trials], "chosen": best.settings.to_dict(),
        "chosen_reason": reason(best, trials),
        "trial_specs": {"bulk": f"batches of {bulk_spec.batch_size} from {bulk_spec.concurrency} clients",
                        "users": f"{USERS} concurrent clients sending one face each"},
    }
    batch_sizes = [1, 16] if quick else [1, 8, 32, 64]
    concurrencies = [1, USERS] if quick else [1, 4, USERS]
    with serve_with(repo, best.settings) as server:
        url = server.config.grpc_url
        out["sweep"] = [p.to_dict() for p in run_sweep(url, frames, batch_sizes=batch_sizes, server_pid=server.pid,
                                                        concurrencies=concurrencies, duration_s=args.duration_s)]
        # Triton's side of the ratio is its best bulk point of the sweep: with several one-thread instances
        # it needs as many requests in flight to use every core.
        best = max((p for p in out["sweep"] if p["batch_size"] >= 8), key=lambda p: p["images_per_s"],
                   default={"batch_size": paired_batch, "concurrency": 2})
        out["paired"] = paired.paired_rounds(onnx_path, url, frames, batch_size=paired_batch, users=USERS,
                                             bulk_batch_size=best["batch_size"], bulk_concurrency=best["concurrency"],
                                             threads=2, server_pid=server.pid, rounds=2 if quick else 3,
                                             duration_s=args.duration_s)
        out["bulk"] = baselines.bulk_scoring(url, files, server_pid=server.pid).to_dict()
        if args.locust_s:
            run = locust_run.run_locust(url, users=USERS, run_time_s=args.locust_s, csv_prefix=args.out / "locust",
                                        html=args.out / "locust.html", user_classes=("CctvUser",))
            shown = run.command.replace(url, defaults.GRPC_URL).replace(str(args.out), "out")
            out["locust"] = {"command": shown, "rows": run.rows}
    return out


def reason(best, trials) -> str:
    """One sentence saying why ``best`` was chosen among ``trials``."""
    u = best.users
    within = [t for t in trials if t.users.p99_ms <= P99_BUDGET_MS and t.users.errors == 0]
    if not within:
        return (f"no candidate kept {USERS}-user p99 within {P99_BUDGET_MS:g} ms on this machine; this one had "
                f"the lowest p99 ({u.p99_ms:.0f} ms at {u.images_per_s:.0f} images/s).")
    return (f"the highest throughput for {USERS} concurrent single-face users within the {P99_BUDGET_MS:g} ms p99 "
            f"budget ({u.images_per_s:.0f} images/s, p99 {u.p99_ms:.0f} ms, formed batches of "
            f"{u.mean_formed_batch:.1f}); bulk throughput of the candidates ranged "
            f"({min(t.bulk.images_per_s for t in trials):.0f}-{max(t.bulk.images_per_s for t in trials):.0f} images/s).")


def other_size(size: int, settings: dict[str, Any], folder: Path, limit: int, duration_s: float) -> dict[str, Any]:
    """ONNX Runtime and Triton bulk throughput (images/s) of the stand-in at ``size`` pixels, with the chosen settings."""
    extra = standin.build_standin(size=size)
    entry = repository.load_model(extra.repository)
    frames = images.prepare_files(images.list_images(folder, limit=min(limit, 512)), entry.contract.preprocessing)
    best = ort_best(baselines.ort_in_process(extra.onnx_path, frames, [8, 32, 64], threads=2, duration_s=duration_s))
    chosen = ServingSettings(**{k: settings[k] for k in ("instances", "intra_op_threads", "max_queue_delay_us")})
    with serve_with(extra.repository, chosen) as server:
        url = server.config.grpc_url
        bulk = run_load(url, frames, LoadSpec(batch_size=64, concurrency=2, duration_s=duration_s), server_pid=server.pid)
        users = run_load(url, frames, LoadSpec(batch_size=1, concurrency=USERS, duration_s=duration_s),
                         server_pid=server.pid)
    return {"size": size, "ort_best": best.images_per_s, "triton_bulk": bulk.images_per_s, "users": users.to_dict(),
            "ort_best_per_cpu_s": best.images_per_cpu_s, "triton_bulk_per_cpu_s": bulk.images_per_cpu_s}


def _verdict(value: float | None, threshold: float) -> bool | None:
    return None if value is None else value >= threshold


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its wall-clock ratio and, where it applies, its images-per-CPU-second ratio."""
    pr = data["paired"]
    rounds = pr["rounds"]
    n, b = len(rounds), pr["batch_size"]
    bb, bc = pr.get("bulk_batch_size", b), pr.get("bulk_concurrency", 2)

    def each(key: str) -> str:
        return ", ".join("–" if r[key] is None else f"{r[key]:.2f}" for r in rounds)

    def ratio_text(value: float | None, key: str) -> str:
        return "–" if value is None else f"{value:.2f} (median of {n} alternating rounds: {each(key)})"

    result = [{
        "name": f"embedded Triton (batches of {bb}, {bc} clients) / in-process ONNX Runtime (batches of {b}), pre-decoded",
        "wall": ratio_text(pr["median_bulk_over_ort"], "bulk_over_ort"),
        "cpu": ratio_text(pr["median_bulk_over_ort_cpu"], "bulk_over_ort_cpu"),
        "target": "≥ 0.90", "passed_wall": pr["median_bulk_over_ort"] >= 0.9,
        "passed_cpu": _verdict(pr["median_bulk_over_ort_cpu"], 0.9),
    }]
    keras = next((x for x in data["baselines"] if x["name"].startswith("Keras")), None)
    if keras:
        bulk = data["bulk"]
        wall = bulk["images_per_s"] / keras["images_per_s"]
        cpu = (bulk["images_per_cpu_s"] / keras["images_per_cpu_s"]
               if bulk.get("images_per_cpu_s") and keras.get("images_per_cpu_s") else None)
        result.append({"name": "bulk scoring from JPEGs via Triton / Keras predict over tf.data (same JPEGs)",
                       "wall": f"{wall:.1f}x ({bulk['images_per_s']:.0f} vs {keras['images_per_s']:.1f} images/s)",
                       "cpu": "–" if cpu is None else f"{cpu:.1f}x ({bulk['images_per_cpu_s']:.0f} vs "
                                                      f"{keras['images_per_cpu_s']:.1f} images per CPU-s)",
                       "target": "≥ 3x", "passed_wall": wall >= 3, "passed_cpu": _verdict(cpu, 3)})
    result.append({
        "name": f"{USERS} concurrent single-face users (dynamic batching) / offline batches of {bb} from {bc} clients, "
                "same server",
        "wall": ratio_text(pr["median_users_over_bulk"], "users_over_bulk"),
        "cpu": ratio_text(pr["median_users_over_bulk_cpu"], "users_over_bulk_cpu"),
        "target": "≥ 0.80", "passed_wall": pr["median_users_over_bulk"] >= 0.8,
        "passed_cpu": _verdict(pr["median_users_over_bulk_cpu"], 0.8),
    })
    p99s = ", ".join(f"{r['users']['p99_ms']:.0f}" for r in rounds)
    result.append({"name": f"p99 latency at {USERS} concurrent single-face users",
                   "wall": f"{pr['median_users_p99_ms']:.0f} ms (median of {n} rounds: {p99s} ms)", "cpu": "–",
                   "target": f"≤ {P99_BUDGET_MS:g} ms", "passed_wall": pr["median_users_p99_ms"] <= P99_BUDGET_MS,
                   "passed_cpu": None})
    return result


def draw(data: dict[str, Any], out: Path) -> None:
    """Write the run's PNG charts (sweep, baselines, settings trial) into ``out``."""
    h, w = data["model"]["size_hw"]
    ort = max(r["images_per_s"] for r in data["ort"])
    plots.throughput_latency(data["sweep"], out / "sweep.png", ceiling=ort,
                             title=f"Embedded Triton, {h}x{w}, {data['chosen']['label']}")
    rows = [(b["name"], b["images_per_s"], b["extrapolated"]) for b in data["baselines"]]
    plots.bars(rows, out / "baselines.png", title=f"Scoring {data['images']['count']} faces at {h}x{w}")
    plots.trial_chart(data["trial"], out / "settings_trial.png", p99_budget_ms=P99_BUDGET_MS,
                      title=f"Candidate Triton settings, {h}x{w}")


def main(argv: list[str] | None = None) -> int:
    """Command line (see ``--help``); returns 0 when the run completed."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.render_only:
        data = json.loads((args.out / "results.json").read_text())
        draw(data, args.out)
        report.write_results_md(data, args.results_md)
        return 0
    if args.images is None:
        raise SystemExit("run_all.py: --images DIR is required (unless --render-only)")
    args.out.mkdir(parents=True, exist_ok=True)
    repo, keras_path, extra_sizes = resolve_models(args)
    entry = repository.load_model(repo)
    contract = entry.contract
    files = images.list_images(args.images, limit=args.limit)
    frames = images.prepare_files(files, contract.preprocessing)
    data: dict[str, Any] = {
        "command": recorded_command(argv if argv is not None else sys.argv[1:], images=args.images),
        "machine": report.machine_info(), "model": report.model_info(entry.served), "model_repository": recorded_path(repo),
        "images": {"folder": args.images.name, "count": len(files)},
        "plot_dir": os.path.relpath(args.out, args.results_md.parent),
        "load_average_start": os.getloadavg(),
    }
    log.info("model: %s (%s)", repo, "stand-in" if data["model"]["stand_in"] else "shipped")
    ort_batches = [b for b in (1, 8, 32, 64) if b <= entry.model_config.max_batch_size]
    ort = baselines.ort_in_process(entry.onnx_path(), frames, ort_batches, threads=2, duration_s=args.duration_s)
    data["ort"] = [r.to_dict() for r in ort]
    data.update(measure_serving(repo, frames, files, args, onnx_path=entry.onnx_path(),
                                paired_batch=ort_best([r for r in ort if r.batch_size >= 8] or ort).batch_size))
    data["other_sizes"] = [other_size(s, data["chosen"], args.images, args.limit, args.duration_s) for s in extra_sizes]
    table = [ort_best(ort), baselines.Throughput.from_dict(data["bulk"])]
    if keras_path:
        size = contract.preprocessing.size_hw[0]
        table.append(baselines.keras_predict_loop(keras_path, files, size=size))
        table.append(baselines.per_image_process(keras_path, files, size=size, sample=args.per_image_sample,
                                                 extrapolate_to=len(files)))
    else:
        log.warning("no --keras-model: the Keras baselines are skipped")
    data["baselines"] = [b.to_dict() for b in table]
    data["targets"] = targets(data)
    data["finished"] = time.strftime("%Y-%m-%d %H:%M %Z")
    data["load_average_end"] = os.getloadavg()
    (args.out / "results.json").write_text(json.dumps(data, indent=2))
    draw(data, args.out)
    report.write_results_md(data, args.results_md)
    for t in data["targets"]:
        print(f"{report.verdict(t['passed_wall'])} / {report.verdict(t['passed_cpu'])}  {t['name']}: "
              f"{t['wall']}; per CPU-s {t['cpu']} (required {t['target']})")
    print(f"wrote {args.results_md} and {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
