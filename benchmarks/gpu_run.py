"""The shipped model and the project's preprocessing on a GPU, measured in one prepared run.

Runs where the project is not installed (the lent GPU machine: its own Python and torch, no
registry), so it puts the checkout on ``sys.path`` itself. One command measures, in order:

1. parity of the exported ONNX graph run in torch (FP32, TF32 off; FP16) against ONNX Runtime CPU
   on real JPEGs prepared the client's way: at most 1e-5 and 1e-3;
2. the network's images/s at each ``--batch-sizes`` in FP32 and FP16, eager and CUDA-graph replay;
3. JPEG decoding (``torchvision.io.decode_jpeg`` on the GPU) and the project's crop + area resize
   on the GPU, images/s, with the largest pixel difference from the CPU path;
4. end to end: JPEG bytes in memory -> GPU decode -> preprocessing -> FP16 network -> probabilities
   on the host, images/s.

Every figure is the median of ``--repeats`` timed repeats after warm-up. ``--dry-run`` runs the
same code on the CPU with tiny batches (what the test suite does); a CPU figure is no GPU figure.
Results: ``gpu_results.json`` and ``gpu_results.md`` in ``--out``. The carry recipe:
``benchmarks/gpu_carry.sh``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

if __package__ in (None, ""):  # run as a file from a checkout that is not installed
    _ROOT = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(_ROOT))
    import facialattr

    facialattr.__path__.append(str(_ROOT))  # the parts' folders (client/, benchmarks/) as facialattr.<part>
    # The GPU machine has torch but not the bench extra (Locust, matplotlib), which the package's
    # __init__ requires; only gpu_torch is used from it, so the folder is mounted without that check.
    _benchmarks = types.ModuleType("facialattr.benchmarks")
    _benchmarks.__path__ = [str(_ROOT / "benchmarks")]
    sys.modules["facialattr.benchmarks"] = _benchmarks

import numpy as np

from facialattr import MODEL_NAME
from facialattr.app.flags import add_model_repository, model_repository
from facialattr.contract import ModelContract

log = logging.getLogger("facialattr.benchmarks.gpu_run")

PARITY_TOLERANCE = {"fp32": 1e-5, "fp16": 1e-3}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, required=True, help="folder of face JPEGs (CelebA-framed)")
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_results.json and .md")
    add_model_repository(p)
    p.add_argument("--model-name", default=MODEL_NAME)
    p.add_argument("--limit", type=int, default=2000, help="JPEGs to use, first in name order (default %(default)s)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--decode-batch", type=int, default=256, help="images per GPU decode call and end-to-end step")
    p.add_argument("--parity-images", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per figure; the median is reported")
    p.add_argument("--min-repeat-s", type=float, default=0.2, help="each timed repeat runs at least this long")
    p.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, tiny sizes: checks the script")
    args = p.parse_args(argv)
    if args.dry_run:
        args.limit, args.batch_sizes, args.decode_batch = min(args.limit, 8), [2, 4], 4
        args.parity_images, args.repeats, args.min_repeat_s = 8, 3, 0.0
    if args.repeats < 3:
        p.error("--repeats must be at least 3 (figures are medians of 3 or more)")
    return args


def environment(torch, device: str) -> dict:
    info = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0]}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=30).stdout.strip()
        except OSError as exc:
            info["driver"] = f"unknown ({exc})"
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        info["torchvision"] = None
    return info


def timed(fn, *, device: str, repeats: int, min_repeat_s: float, items: int) -> dict:
    """Median items/s of ``repeats`` timed repeats of ``fn`` (each at least ``min_repeat_s``) after warm-up."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn(), fn()
    sync()
    rates = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= min_repeat_s:
                break
        rates.append(items * calls / elapsed)
    return {"images_per_s": statistics.median(rates), "repeats": [round(r, 1) for r in rates]}


def cpu_reference(files: list[Path], contract: ModelContract, onnx_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The client path: decode (facialattr.client.decode) + prepare, then ONNX Runtime CPU probabilities."""
    from facialattr.client.decode import decode_bytes
    from facialattr.onnx_runtime import cpu_session
    from facialattr.preprocessing import prepare

    pixels = np.stack([prepare(decode_bytes(f.read_bytes(), path=f), contract.preprocessing) for f in files])
    return pixels, cpu_session(onnx_path).run(None, {"images": pixels})[0]


def build_models(torch, onnx_path: Path, device: str) -> dict:
    from facialattr.benchmarks.gpu_torch import OnnxModule

    models = {}
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        model = OnnxModule(onnx_path).eval().to(device)
        if device == "cuda":
            model = model.to(memory_format=torch.channels_last)
        models[name] = model.to_compute_dtype(dtype)
    return models


def parity(torch, models: dict, pixels: np.ndarray, reference: np.ndarray, device: str) -> dict:
    out = {}
    with torch.inference_mode():
        for name, model in models.items():
            probabilities = model(torch.from_numpy(pixels).to(device)).cpu().numpy()
            diff = float(np.abs(probabilities - reference).max())
            out[name] = {"max_abs_diff": diff, "tolerance": PARITY_TOLERANCE[name],
                         "passed": diff <= PARITY_TOLERANCE[name]}
            if name == "fp16" and device == "cpu":
                # The CPU's half-precision convolutions are not cuDNN's (which accumulate in FP32): no gate.
                out[name].update(passed=None, note="FP16 on the CPU: not gated, not the GPU's arithmetic")
    return out


def network_throughput(torch, models: dict, pixels: np.ndarray, args, device: str) -> list[dict]:
    rows = []
    for name, model in models.items():
        if name == "fp16" and device == "cpu":  # emulated on the CPU: slow and says nothing of a GPU
            continue
        for batch in args.batch_sizes:
            images = torch.from_numpy(np.resize(pixels, (batch, *pixels.shape[1:]))).to(device)
            with torch.inference_mode():
                eager = timed(lambda m=model, x=images: m(x), device=device, repeats=args.repeats,
                              min_repeat_s=args.min_repeat_s, items=batch)
            rows.append({"precision": name, "batch": batch, "mode": "eager", **eager})
            if device == "cuda":
                replay = cuda_graph(torch, model, images)
                rows.append({"precision": name, "batch": batch, "mode": "cuda graph",
                             **timed(replay, device=device, repeats=args.repeats, min_repeat_s=args.min_repeat_s,
                                     items=batch)})
            log.info("network %s batch %d: %s", name, batch, rows[-1])
    return rows


def cuda_graph(torch, model, static_input):
    """A replay function of ``model`` captured on ``static_input`` (CUDA graphs cut launch overhead)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(3):
            model(static_input)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        model(static_input)
    return graph.replay


def decoder(torch, device: str):
    """(name, function from a list of JPEG byte tensors to [3, H, W] uint8 tensors on ``device``)."""
    try:
        from torchvision.io import decode_jpeg
    except (ImportError, RuntimeError):
        decode_jpeg = None
    if decode_jpeg is not None:
        return f"torchvision.io.decode_jpeg on {device}", lambda datas: decode_jpeg(datas, device=device)
    from facialattr.benchmarks.gpu_torch import as_chw_tensor
    from facialattr.client.decode import decode_bytes

    def cpu_decode(datas):
        return [as_chw_tensor(decode_bytes(d.numpy().tobytes())).to(device) for d in datas]

    return "facialattr.client.decode on the CPU (torchvision unavailable)", cpu_decode


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def decode_and_prepare(torch, datas, contract, args, device: str, reference_pixels: np.ndarray) -> dict:
    from facialattr.benchmarks.gpu_torch import prepare_batch

    name, decode = decoder(torch, device)
    batches = chunks(datas, args.decode_batch)
    n = sum(len(b) for b in batches)
    decode_only = timed(lambda: [decode(b) for b in batches], device=device, repeats=args.repeats,
                        min_repeat_s=args.min_repeat_s, items=n)
    both = timed(lambda: [prepare_batch(decode(b), contract.preprocessing) for b in batches], device=device,
                 repeats=args.repeats, min_repeat_s=args.min_repeat_s, items=n)
    ours = prepare_batch(decode(datas[:len(reference_pixels)]), contract.preprocessing).cpu().numpy()
    diff = np.abs(ours.astype(np.int16) - reference_pixels.astype(np.int16))
    return {"decoder": name, "decode": decode_only, "decode_and_prepare": both,
            "pixels_vs_cpu_path": {"max_abs_diff": int(diff.max()), "fraction_differing": float((diff > 0).mean())}}


def end_to_end(torch, models: dict, datas, contract, args, device: str) -> dict:
    from facialattr.benchmarks.gpu_torch import prepare_batch

    name, decode = decoder(torch, device)
    precision = "fp16" if device == "cuda" else "fp32"
    model, batches = models[precision], chunks(datas, args.decode_batch)

    def run():
        with torch.inference_mode():
            return [model(prepare_batch(decode(b), contract.preprocessing)).cpu() for b in batches]

    return {"decoder": name, "precision": precision, "batch": args.decode_batch,
            **timed(run, device=device, repeats=args.repeats, min_repeat_s=args.min_repeat_s,
                    items=sum(len(b) for b in batches))}


def render_markdown(results: dict) -> str:
    env = results["environment"]
    lines = [f"GPU run: {env.get('gpu', env['device'])}, driver {env.get('driver', '-')}, torch {env['torch']}, "
             f"CUDA {env['cuda']}, torchvision {env['torchvision']}; {results['images']} JPEGs; medians of "
             f"{results['repeats']} repeats", "", "| precision | parity max abs diff | tolerance | passed |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {v['max_abs_diff']} | {v.get('tolerance', '-')} | {v['passed']} |" for k, v in results["parity"].items()]
    lines += ["", "| precision | batch | mode | images/s |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['precision']} | {r['batch']} | {r['mode']} | {r['images_per_s']:,.0f} |" for r in results["network"]]
    d, e = results["decode"], results["end_to_end"]
    lines += ["", f"Decoding ({d['decoder']}): {d['decode']['images_per_s']:,.0f} images/s; with crop + area resize "
              f"{d['decode_and_prepare']['images_per_s']:,.0f} images/s; largest pixel difference from the CPU path "
              f"{d['pixels_vs_cpu_path']['max_abs_diff']} ({d['pixels_vs_cpu_path']['fraction_differing']:.2%} of values).",
              f"End to end (bytes in memory -> decode -> preprocess -> {e['precision']} network, batch {e['batch']}): "
              f"{e['images_per_s']:,.0f} images/s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    import torch

    device = "cpu" if args.dry_run or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not args.dry_run:
        log.error("no CUDA device: pass --dry-run to check the script on the CPU")
        return 1
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # FP32 parity means FP32
    torch.backends.cudnn.benchmark = True
    version_dir = model_repository(args) / args.model_name / "1"
    contract = ModelContract.from_parameters(json.loads((version_dir / "contract.json").read_text()))
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[: args.limit]
    if not files:
        log.error("%s: no JPEG files there", args.images)
        return 1
    datas = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]
    pixels, reference = cpu_reference(files[: args.parity_images], contract, version_dir / "model.onnx")
    models = build_models(torch, version_dir / "model.onnx", device)
    results = {"environment": environment(torch, device), "images": len(files), "repeats": args.repeats,
               "parity": parity(torch, models, pixels, reference, device)}
    log.info("parity: %s", results["parity"])
    results["network"] = network_throughput(torch, models, pixels, args, device)
    results["decode"] = decode_and_prepare(torch, datas, contract, args, device, pixels)
    results["end_to_end"] = end_to_end(torch, models, datas, contract, args, device)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "gpu_results.md").write_text(markdown := render_markdown(results))
    sys.stdout.write(markdown)
    return 0 if all(v["passed"] is not False for v in results["parity"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
