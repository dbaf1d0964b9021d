"""RESULTS.md from one run_all.py result (results.json), plus machine and model descriptions."""

from __future__ import annotations

import os
import platform
import re
import shlex
from pathlib import Path
from typing import Any

from facialattr import defaults
from facialattr.benchmarks.standin import is_standin

SOAK_BEGIN, SOAK_END = "<!-- soak:begin -->", "<!-- soak:end -->"


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores, memory (GiB), OS, Python and the measuring packages' versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        memory_gib = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        memory_gib = None
    versions = {}
    for module in ("onnxruntime", "tritonclient", "tensorflow", "keras", "locust"):
        try:
            from importlib.metadata import version

            versions[module] = version(module if module != "tensorflow" else "tensorflow-cpu")
        except Exception:  # noqa: BLE001 - a missing package is simply not listed
            continue
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "memory_gib": memory_gib,
            "os": platform.platform(terse=True), "python": platform.python_version(), "versions": versions}


def model_info(served) -> dict[str, Any]:
    """Input size, max batch and summary of a served model (a :class:`facialattr.triton_config.ServedModel`)."""
    contract = served.contract
    return {"size_hw": list(contract.preprocessing.size_hw), "max_batch_size": served.config.max_batch_size,
            "stand_in": is_standin(contract), "summary": dict(contract.summary)}


def _f(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:  # None or NaN
        return "–"
    if 0 < abs(value) < 1:
        return f"{value:.3f}"
    return f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _sweep_rows(points: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for p in points:
        s = p.get("server") or {}
        rows.append([str(p["batch_size"]), str(p["concurrency"]), _f(p["images_per_s"]),
                     _f(p.get("images_per_cpu_s")), _f(p["p50_ms"]),
                     _f(p["p95_ms"]), _f(p["p99_ms"]), _f(s.get("mean_queue_ms")), _f(s.get("mean_compute_ms")),
                     _f(s.get("mean_formed_batch")), str(p["errors"])])
    return rows


SWEEP_HEADER = ["client batch", "clients", "images/s", "images per CPU-s", "p50 ms", "p95 ms", "p99 ms", "server queue ms",
                "server compute ms", "formed batch (mean)", "errors"]


def _shown_command(data: dict[str, Any]) -> str:
    """The run's command with its images folder as ``"$IMAGES"``: the folder's path on the measuring machine
    means nothing to a reader."""
    folder = data["images"]["folder"]
    shown = {folder: '"$IMAGES"', f"--images={folder}": '--images="$IMAGES"'}
    return " ".join(shown.get(token, shlex.quote(token)) for token in shlex.split(data["command"]))


def _header(data: dict[str, Any]) -> list[str]:
    m, model = data["machine"], data["model"]
    h, w = model["size_hw"]
    kind = ("**STAND-IN**: an untrained MobileNetV2 of the shipped architecture (speed does not depend on the "
            "weights); rerun the command below once the trained model is in the repository"
            if model["stand_in"] else "the shipped model")
    lines = [
        "# Benchmarks", "",
        f"Measured {data['finished']} on this machine: {m['cpu']}, {m['logical_cores']} logical cores, "
        f"{m['memory_gib']} GiB RAM, {m['os']}, Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ". No GPU.", "",
        _load_line(data),
        f"Model: {kind}; input {h}x{w}, max batch {model['max_batch_size']}, repository `{data['model_repository']}`.",
        f"Images: the first {data['images']['count']} JPEGs of `$IMAGES`, here "
        f"`{Path(data['images']['folder']).name}/` (CelebA aligned faces, not committed), decoded once for the "
        "serving measurements; the bulk and Keras runs decode them again.", "",
        "Reproduce (about 10 minutes; other heavy jobs on the machine change absolute numbers, so compare ratios "
        "within one run), with the project's environment active (`. .venv/bin/activate`):", "", "```",
        _shown_command(data), "```", "",
        "`IMAGES` is a folder of face JPEGs, e.g. `IMAGES=/path/to/celeba/img_align_celeba` for CelebA in its "
        "native layout; `--keras-model`, when given, is the `model.keras` of the served model's training run "
        "(`facialattr train`; runs are not committed).", "",
        "All serving numbers are closed-loop: each client sends a request and waits for the answer before the "
        "next. Latency is per request, measured in the client; *server queue/compute* are Triton's own "
        "statistics (`get_inference_statistics`) for the same window; *formed batch* is the mean batch the "
        "dynamic batcher executed (from `batch_stats`).", "",
    ]
    return lines


def _load_line(data: dict[str, Any]) -> str:
    if "load_average_start" not in data:
        return ""
    start, end = data["load_average_start"], data["load_average_end"]
    return (f"The machine was shared: load average (1/5/15 min) {start[0]:.1f}/{start[1]:.1f}/{start[2]:.1f} "
            f"when the run began, {end[0]:.1f}/{end[1]:.1f}/{end[2]:.1f} when it ended, on "
            f"{data['machine']['logical_cores']} cores (other people's training and tests). Absolute numbers "
            "are lower than on an idle machine; the ratios below are measured side by side.\n")


def verdict(passed: bool | None) -> str:
    """"pass", "FAIL", or "n/a" when a target does not apply (``passed`` is None)."""
    return "n/a" if passed is None else ("pass" if passed else "FAIL")


def _targets(data: dict[str, Any]) -> list[str]:
    rows = [[t["name"], t["wall"], t["cpu"], t["target"],
             f"**{verdict(t['passed_wall'])}** / {verdict(t['passed_cpu'])}"] for t in data["targets"]]
    return ["## Targets (one run)", "",
            "Each throughput ratio twice: from images per second (wall clock), and from images per CPU-second "
            "(CPU time of everything involved: client, server and its stubs, or the Keras process). On a "
            "machine shared with other jobs the first depends on the neighbours' load from one window to the "
            "next; the second depends much less on it and predicts the idle-machine ratio when every way keeps "
            "both cores busy.", "",
            *_table(["target", "measured (images/s)", "measured (images per CPU-s)", "required",
                     "result (wall / CPU)"], rows), *_share_note(data)]


def _share_note(data: dict[str, Any]) -> list[str]:
    busy = [cores_busy(r["users"]["images_per_s"], r["users"]["images_per_cpu_s"]) for r in data["paired"]["rounds"]]
    busy = [b for b in busy if b]
    if not busy:
        return []
    cores = data["machine"]["logical_cores"]
    return [f"Latency has no per-CPU form. During the {data['paired']['users']}-user windows the server, its stubs "
            f"and the load generator together got {min(busy):.2f}-{max(busy):.2f} of the {cores} cores; a request "
            "waits for CPU the neighbours hold, so the p99 measured here belongs to this shared machine, not "
            "to an idle one.", ""]


def _pair(per_s: float | None, per_cpu_s: float | None) -> str:
    return f"{_f(per_s)} ({_f(per_cpu_s)})"


def cores_busy(per_s: float | None, per_cpu_s: float | None) -> float | None:
    """CPU seconds per second: how much of the machine the measured processes got."""
    return per_s / per_cpu_s if per_s and per_cpu_s else None


def _paired(data: dict[str, Any]) -> list[str]:
    pr = data["paired"]
    rows = [[str(i + 1), _pair(r["ort_images_per_s"], r["ort_images_per_cpu_s"]),
             _pair(r["bulk"]["images_per_s"], r["bulk"]["images_per_cpu_s"]),
             _pair(r["users"]["images_per_s"], r["users"]["images_per_cpu_s"]),
             _f(cores_busy(r["users"]["images_per_s"], r["users"]["images_per_cpu_s"]), 2),
             _f(r["users"]["p50_ms"]), _f(r["users"]["p99_ms"]), _f((r["users"].get("server") or {}).get("mean_formed_batch")),
             _f(r["bulk_over_ort"], 2), _f(r["users_over_bulk"], 2)] for i, r in enumerate(pr["rounds"])]
    return [
        "### The rounds behind the ratios", "",
        f"Under the shipped settings, {pr['duration_s']:g} s windows alternate: ONNX Runtime in-process at batch "
        f"{pr['batch_size']} (the server idle), Triton with batches of {pr.get('bulk_batch_size', pr['batch_size'])} "
        f"from {pr.get('bulk_concurrency', 2)} clients (its best bulk point of the sweep), then "
        f"{pr['users']} clients sending one face each. Other jobs on the machine change all three together, so "
        "the ratios hold better than the absolute numbers.", "",
        "Throughput cells read *images/s (images per CPU-second)*.", "",
        *_table(["round", "ORT in-process", "Triton bulk", f"{pr['users']} users", "users: cores busy",
                 "users p50 ms", "users p99 ms", "users formed batch", "bulk / ORT", "users / bulk"], rows),
    ]


def _baselines(data: dict[str, Any]) -> list[str]:
    rows = []
    for b in data["baselines"]:
        label = b["name"] + (" *(extrapolated)*" if b["extrapolated"] else "")
        rows.append([label, _f(b["images_per_s"]), _f(b.get("images_per_cpu_s")),
                     _f(cores_busy(b["images_per_s"], b.get("images_per_cpu_s")), 2), f"{b['images']:,}", _f(b["seconds"]),
                     b.get("note", "")])
    return [
        "## Ways to score the same images", "",
        "Same images, same model architecture and input size, one after another in one run. "
        "Rows that say *decode included* start from the JPEG files; the others use pre-decoded uint8 batches.", "",
        *_table(["way", "images/s", "images per CPU-s", "cores busy", "images", "seconds", "note"], rows),
        "*Cores busy* is CPU seconds per second of the processes doing the work (out of 2): below 2, they were "
        "waiting, on the neighbours or on themselves. A way that cannot keep both cores busy on an idle machine "
        "either (a pipeline stall, one process per image) is better judged by images/s than per CPU-second.", "",
        f"![ways to score]({data['plot_dir']}/baselines.png)", "",
    ]


def _trial(data: dict[str, Any]) -> list[str]:
    rows = []
    for t in data["trial"]:
        u, b = t["users"], t["bulk"]
        chosen = " **(shipped)**" if t["settings"] == data["chosen"] else ""
        rows.append([t["settings"]["label"] + chosen, _f(b["images_per_s"]), _f(u["images_per_s"]),
                     _f(u.get("images_per_cpu_s")),
                     _f(u["p50_ms"]), _f(u["p99_ms"]), _f((u.get("server") or {}).get("mean_formed_batch"))])
    c = data["chosen"]
    return [
        "## Choosing the shipped Triton settings", "",
        f"Each candidate served the same model; *bulk* = {data['trial_specs']['bulk']}, *users* = "
        f"{data['trial_specs']['users']}.", "",
        *_table(["setting", "bulk images/s", "users images/s", "users images per CPU-s", "users p50 ms", "users p99 ms", "users formed batch"],
                rows),
        f"![settings trial]({data['plot_dir']}/settings_trial.png)", "",
        "What the knobs do on a CPU: *instances x threads* splits the cores: two one-thread instances let one "
        "batch compute while the next one forms, but each batch runs at half speed; one two-thread instance "
        "finishes each batch sooner. *Delay* (`max_queue_delay_microseconds`) holds a request back hoping for "
        "company: with closed-loop users, requests arriving while a batch computes are merged anyway, so a "
        "longer delay buys larger batches only at low load and costs latency at every load.", "",
        f"Chosen: **{c['label']}** — {data['chosen_reason']}", "",
        "Recommended `facialattr.triton_config.ModelConfig` defaults for this kind of machine: "
        f"`instance_group=(InstanceGroup(count={c['instances']}),)`, "
        f"`intra_op_thread_count={c['intra_op_threads']}`, "
        f"`DynamicBatching(max_queue_delay_microseconds={c['max_queue_delay_us']})`.", "",
    ]


def _sweep(data: dict[str, Any]) -> list[str]:
    return [
        f"## Batch size x concurrency sweep ({data['chosen']['label']})", "",
        *_table(SWEEP_HEADER, _sweep_rows(data["sweep"])),
        f"![throughput against latency]({data['plot_dir']}/sweep.png)", "",
    ]


def _other_sizes(data: dict[str, Any]) -> list[str]:
    if not data.get("other_sizes"):
        return []
    rows = []
    for o in data["other_sizes"]:
        ort_cpu, bulk_cpu = o.get("ort_best_per_cpu_s"), o.get("triton_bulk_per_cpu_s")
        rows.append([f"{o['size']}x{o['size']}", _pair(o["ort_best"], ort_cpu), _pair(o["triton_bulk"], bulk_cpu),
                     _f(o["triton_bulk"] / o["ort_best"], 2),
                     _f(bulk_cpu / ort_cpu, 2) if ort_cpu and bulk_cpu else "–",
                     _f(o["users"]["images_per_s"]), _f(o["users"]["p99_ms"])])
    return ["## Other input sizes (same settings, stand-in models)", "",
            "One window each (not alternated), so the wall-clock ratio is at the mercy of the neighbours; "
            "cells read *images/s (images per CPU-second)*.", "",
            *_table(["input", "ORT in-process best", "Triton bulk (batch 64 x 2)", "ratio (wall)", "ratio (CPU)",
                     "16 users images/s", "16 users p99 ms"], rows)]


def _locust(data: dict[str, Any]) -> list[str]:
    loc = data.get("locust")
    if not loc:
        return []
    rows = [[r["Name"], r["Request Count"], r["Failure Count"], _f(float(r["Requests/s"])), r["50%"], r["95%"], r["99%"]]
            for r in loc["rows"]]
    return ["## Locust (gRPC users)", "",
            f"`{loc['command']}`", "",
            *_table(["request", "requests", "failures", "requests/s", "p50 ms", "p95 ms", "p99 ms"], rows),
            "Locust rounds percentiles and its own gevent loop shares the CPU with the server, so its latencies "
            "read a little higher than the sweep's. Its HTML report lands next to the results "
            "(`locust.html`, regenerated, not committed).", ""]


GPU_SECTION = [
    "## GPU: not measured yet", "",
    "No GPU was lent to the runs behind these figures, so nothing here was measured on one. The GPU run is "
    "prepared: `benchmarks/gpu_run.py` (one command) measures the exported ONNX graph "
    "run in torch on CUDA (parity with ONNX Runtime CPU first: 1e-5 in FP32, 1e-3 in FP16; then images/s at batch "
    "64, 256 and 1024, eager and CUDA-graph replay), JPEG decoding with `torchvision.io.decode_jpeg` on the GPU "
    "followed by the project's crop and area resize on the GPU (bit-exact with the CPU path on the same decoded "
    "pixels; the largest difference after nvJPEG is reported), and bytes -> GPU decode -> FP16 network -> "
    "probabilities end to end, each the median of 5 repeats with the GPU, driver, torch and CUDA versions. "
    "`bash benchmarks/gpu_carry.sh IMAGE_DIR` builds what travels (2,000 JPEGs and the simplejpeg wheel for the "
    "GPU machine's Python) and prints the command to run there; `gpu_run.py --dry-run` runs the same steps on "
    "the CPU, as the test suite does.", "",
    "In production the official Triton container (`docker-compose.yml`) serves the same `model.onnx` with its "
    "ONNX Runtime backend (CUDA execution provider), and `facialattr export --tensorrt-fp16` switches it to the "
    f"TensorRT execution provider in FP16; `facialattr bench --url HOST:{defaults.GRPC_PORT}` and `benchmarks/locustfile.py` "
    "measure it there.", "",
]


MEANING = [
    "## What the numbers mean", "",
    "- *ONNX Runtime in-process* is the ceiling: the same session options the server uses, no network, no copies. "
    "Triton on the same CPU can only approach it; the gap is gRPC serialisation and the Python backend's "
    "shared-memory hop.",
    "- *Bulk* is what `facialattr score` does with a folder: the client decodes JPEGs while earlier batches are "
    "in the server, so decode and inference overlap; on 2 cores they compete for the same CPU.",
    "- *Concurrent single-face users* is the CCTV case. Each user has one request in flight, so the dynamic batcher "
    "can only merge what is waiting; the server statistics show how large the batches it formed were.",
    "- The one-process-per-image row is dominated by starting Python and TensorFlow and loading the model; it "
    "was timed on a few images and multiplied out, as labelled.",
    "- Everything shares the cores with the load generator and with whatever else runs on the machine. On a "
    "busy shared machine absolute numbers can move by a factor of two between windows a minute apart (see the "
    "rounds above); the targets therefore use ratios of alternating windows, in images/s and per CPU-second.",
    "- *Cores busy* and the load average say how much of the machine the run actually got; rerun on an idle "
    "machine for absolute throughput and latency.", "",
]


# Sections written by hand or by their own scripts, between <!-- NAME:begin --> and <!-- NAME:end -->,
# kept by a rewrite of RESULTS.md (in this order, after the Locust section), with a placeholder until run.
KEPT_SECTIONS = {
    "soak": "## Soak\n\nNot run yet: `python benchmarks/soak.py` fills this section.",
    "server-decode": "## Client decode vs server decode\n\nNot run yet: `python benchmarks/server_decode.py`.",
    "container": "## The container beside the embedded server\n\nNot run yet: `python benchmarks/container.py`.",
}


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def kept_section(existing: str, name: str) -> str:
    """Section ``name`` (markers included) from an existing RESULTS.md text, or its placeholder."""
    begin, end = _markers(name)
    match = re.search(re.escape(begin) + r".*?" + re.escape(end), existing, flags=re.S)
    return match.group(0) if match else f"{begin}\n{KEPT_SECTIONS[name]}\n{end}"


def replace_kept_section(results_md: Path, name: str, section_body: str) -> None:
    """Put ``section_body`` between the markers of section ``name`` in ``results_md`` (appended when absent)."""
    begin, end = _markers(name)
    text = results_md.read_text() if results_md.exists() else ""
    block = f"{begin}\n{section_body.strip()}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    results_md.write_text(text)


def soak_section(existing: str) -> str:
    """The soak section between its markers in an existing RESULTS.md, or a placeholder."""
    return kept_section(existing, "soak")


def replace_soak_section(results_md: Path, section_body: str) -> None:
    """Put ``section_body`` between the soak markers of ``results_md`` (appended when absent); other text is kept."""
    replace_kept_section(results_md, "soak", section_body)


def write_results_md(data: dict[str, Any], path: Path) -> Path:
    """Render RESULTS.md from a run's ``data`` into ``path``, keeping its existing soak section; returns ``path``."""
    existing = path.read_text() if path.exists() else ""
    parts = (_header(data) + _targets(data) + _paired(data) + _baselines(data) + _trial(data) + _sweep(data) + _other_sizes(data)
             + _locust(data) + [part for name in KEPT_SECTIONS for part in (kept_section(existing, name), "")]
             + GPU_SECTION + MEANING)
    path.write_text("\n".join(parts).rstrip() + "\n")
    return path
