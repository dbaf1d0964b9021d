"""INT8 (static QDQ) against FP32 on this CPU: accuracy on CelebA val and speed, side by side in one run.

    python benchmarks/int8_vs_fp32.py model_repository/facial_attributes/1/model.onnx \\
        --celeba CELEBA_DIR [--int8 model_int8.onnx] [--plot int8_vs_fp32.png]

Without ``--int8`` the FP32 model is quantized here exactly as ``facialattr export
--int8-calibration`` does it (first val images calibrate, the rest grade). The contract
(input size, crop, thresholds) comes from the ``config.pbtxt`` two folders up.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

from facialattr import triton_config
from facialattr.contract import ModelContract
from facialattr.export import images
from facialattr.export.parity import onnx_session, run_onnx
from facialattr.export.quantize import DEFAULT_RECIPES, mean_accuracies, quantize_int8, throughput_side_by_side
from facialattr.training.data import load_celeba, require_splits

log = logging.getLogger("int8_vs_fp32")


def per_attribute_accuracy(probabilities: np.ndarray, labels: np.ndarray, thresholds) -> np.ndarray:
    """Accuracy of each attribute (fraction in [0, 1]) at its threshold, over the rows of ``probabilities``."""
    return ((probabilities >= np.asarray(thresholds)) == labels.astype(bool)).mean(axis=0)


def plot(path: Path, names, fp32_acc, int8_acc, batch_sizes, speeds) -> None:
    """Write a PNG to ``path``: per-attribute accuracy change (points) and images/s per batch size, FP32 vs INT8."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3, 1]})
    delta_pt = 100 * (np.asarray(int8_acc) - np.asarray(fp32_acc))
    left.bar(range(len(names)), delta_pt, color=["tab:red" if d < 0 else "tab:green" for d in delta_pt])
    left.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    left.set_ylabel("INT8 - FP32 accuracy (pt)")
    left.set_title("Per-attribute accuracy change on CelebA val")
    x = np.arange(len(batch_sizes))
    right.bar(x - 0.2, [s[0] for s in speeds], 0.4, label="FP32")
    right.bar(x + 0.2, [s[1] for s in speeds], 0.4, label="INT8")
    right.set_xticks(x, [str(b) for b in batch_sizes])
    right.set_xlabel("batch size")
    right.set_ylabel("images/s (ONNX Runtime, this CPU)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    log.info("wrote %s", path)


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring); returns 0 (errors from export.quantize are raised, not coded)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fp32", type=Path, help="FP32 model.onnx inside a model repository version folder")
    parser.add_argument("--celeba", type=Path, required=True, help="CelebA folder (its val split is used)")
    parser.add_argument("--int8", type=Path, help="INT8 model to compare (default: quantize the FP32 model here)")
    parser.add_argument("--calibration-images", type=int, default=256)
    parser.add_argument("--recipe", type=int, default=0, choices=range(len(DEFAULT_RECIPES)),
                        help="which of export's INT8 recipes to build: " + "; ".join(
                            f"{i}: {r.describe()}" for i, r in enumerate(DEFAULT_RECIPES)))
    parser.add_argument("--eval-images", type=int, help="at most this many val images grade (default: the rest)")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--plot", type=Path, help="write a PNG of per-attribute accuracy change and speed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    contract = ModelContract.from_model_config(triton_config.load(args.fp32.parent.parent / "config.pbtxt"))
    (split,) = require_splits(load_celeba(args.celeba), "val")
    n_cal = args.calibration_images
    stop = len(split) if args.eval_images is None else min(len(split), n_cal + args.eval_images)
    evaluation = split.subset(np.arange(n_cal, stop))
    eval_images = images.load_files(evaluation.paths, contract.preprocessing)
    with tempfile.TemporaryDirectory() as tmp:
        int8 = args.int8
        if int8 is None:
            int8 = quantize_int8(args.fp32, Path(tmp) / "int8.onnx",
                                 images.load_files(split.paths[:n_cal], contract.preprocessing),
                                 options=DEFAULT_RECIPES[args.recipe])
        probs = [run_onnx(onnx_session(p), eval_images, batch_size=64) for p in (args.fp32, int8)]
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        speeds = [throughput_side_by_side([args.fp32, int8], eval_images, batch_size=b) for b in batch_sizes]
    (fp32_acc, fp32_bal), (int8_acc, int8_bal) = (mean_accuracies(p, evaluation.labels, contract.thresholds) for p in probs)
    print(f"{len(evaluation)} val images, input {contract.preprocessing.size_hw}, calibration on {n_cal} other val images")
    print(f"mean accuracy          FP32 {100 * fp32_acc:6.2f} %  INT8 {100 * int8_acc:6.2f} %  drop {100 * (fp32_acc - int8_acc):5.2f} pt")
    print(f"mean balanced accuracy FP32 {100 * fp32_bal:6.2f} %  INT8 {100 * int8_bal:6.2f} %  drop {100 * (fp32_bal - int8_bal):5.2f} pt")
    for b, (f, i) in zip(batch_sizes, speeds, strict=True):
        print(f"batch {b:3d}: FP32 {f:7.1f} images/s  INT8 {i:7.1f} images/s  INT8/FP32 {i / f:.2f}x")
    if args.plot:
        per_attr = [per_attribute_accuracy(p, evaluation.labels, contract.thresholds) for p in probs]
        plot(args.plot, contract.attribute_names, per_attr[0], per_attr[1], batch_sizes, speeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
