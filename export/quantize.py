"""Static INT8 (QDQ, per-channel) quantization for CPU deployments, and the gate it must pass.

The INT8 model ships only if, on labelled validation images, it keeps the FP32 model's
accuracy (mean accuracy drop <= 0.3 pt, mean balanced accuracy drop <= 0.5 pt, both
with the contract's thresholds) *and* runs faster on this CPU, measured side by side.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facialattr.contract import logits
from facialattr.errors import ExportError
from facialattr.export.parity import onnx_session, run_onnx
from facialattr.training.metrics import threshold_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizeOptions:
    """One quantization recipe (QDQ, uint8 activations)."""

    per_channel: bool = True
    # On AVX2 CPUs without VNNI ONNX Runtime multiplies u8 activations by s8 weights with
    # vpmaddubsw, whose 16-bit sums saturate; 7-bit weights (reduce_range) avoid that. With
    # VNNI (AVX512-VNNI / AVX-VNNI, this host now) full 8-bit weights do not saturate.
    reduce_range: bool = True
    # "uint8" weights have no saturation at all, at full 8 bits, but run slower here.
    weight_type: str = "int8"
    # Percentile clips rare activation outliers; it beat MinMax and Entropy here.
    calibrate_method: str = "Percentile"
    # The share of calibration activations (in %) each tensor's range covers, with calibrate_method "Percentile".
    calibration_percentile: float = 99.999
    # Logits and probabilities in 8 bits move scores by ~0.004 steps, right where calibrated
    # thresholds sit; the head is a few kFLOPs, so it stays FP32 (128 px model: accuracy drop
    # 0.33 pt on 1,000 val images with it, 0.45 pt on all 2,744 without).
    keep_head_fp32: bool = True
    # Node groups (names in OP_GROUPS) left in FP32 as well: the layers whose quantization costs most accuracy.
    exclude_groups: tuple[str, ...] = ()
    # Empirical bias correction: INT8 shifts some logits systematically, and a shift moves decisions at
    # calibrated thresholds one way (accuracy loss of first order); the FP32 head's bias absorbs the
    # mean shift measured on the calibration images. Needs keep_head_fp32.
    correct_head_bias: bool = False

    def __post_init__(self) -> None:
        if self.calibrate_method not in ("MinMax", "Entropy", "Percentile", "Distribution"):
            raise ExportError(f"unknown calibrate_method {self.calibrate_method!r}")
        unknown = [g for g in self.exclude_groups if g not in OP_GROUPS]
        if unknown:
            raise ExportError(f"exclude_groups: unknown group(s) {', '.join(map(repr, unknown))}; known: {', '.join(OP_GROUPS)}")
        if self.weight_type not in ("int8", "uint8"):
            raise ExportError(f"weight_type must be int8 or uint8, got {self.weight_type!r}")
        if self.correct_head_bias and not self.keep_head_fp32:
            raise ExportError("correct_head_bias needs keep_head_fp32: the corrected bias is the FP32 head's")
        if not 50 < self.calibration_percentile <= 100:
            raise ExportError(f"calibration_percentile must be in (50, 100], got {self.calibration_percentile}")

    def describe(self) -> str:
        """One line naming the recipe (weights, calibration, what stays FP32), as logs and reports print it."""
        bits = "7-bit" if self.reduce_range else "8-bit"
        kept = (["head"] if self.keep_head_fp32 else []) + list(self.exclude_groups)
        fp32 = f", FP32 {' + '.join(kept)}" if kept else ""
        method = self.calibrate_method + (f" {self.calibration_percentile:g}" if self.calibrate_method == "Percentile" else "")
        bias = ", head bias corrected" if self.correct_head_bias else ""
        return f"{self.weight_type} {bits} {'per-channel' if self.per_channel else 'per-tensor'} weights, {method}{fp32}{bias}"


# Tried in order until one passes the gate. Measured on the whole-network 128 px model (calibration
# on 256 train images, all 3,000 val images; the INT8 section of docs/MODEL_CARD.md): 8-bit
# weights beat 7-bit (accuracy drop 0.31 vs 0.83 pt at the contract thresholds), Percentile 99.99
# beat 99.999/99.9/MinMax/Entropy, and the head bias correction removes most of the remaining
# accuracy drop; keeping layer groups in FP32 did not help. The 7-bit recipe is for CPUs without VNNI.
DEFAULT_RECIPES = (
    QuantizeOptions(reduce_range=False, calibration_percentile=99.99, correct_head_bias=True),
    QuantizeOptions(reduce_range=True, calibration_percentile=99.99, correct_head_bias=True),
)


@dataclass(frozen=True)
class Int8Criteria:
    """The INT8 gate: largest accuracy and balanced-accuracy drops in points, smallest INT8/FP32 speed ratio."""

    max_accuracy_drop_pt: float = 0.3
    max_balanced_accuracy_drop_pt: float = 0.5
    # INT8 is worth a second model in the repository only if it is clearly faster (issue 11: 1.5x).
    min_speedup: float = 1.5


@dataclass(frozen=True)
class Int8Report:
    """One INT8 attempt measured against FP32 on the same val images and timed side by side."""

    num_eval_images: int
    num_calibration_images: int
    fp32_mean_accuracy: float
    int8_mean_accuracy: float
    fp32_mean_balanced_accuracy: float
    int8_mean_balanced_accuracy: float
    fp32_images_per_s: float
    int8_images_per_s: float
    benchmark_batch_size: int
    criteria: Int8Criteria
    recipe: str = ""

    @property
    def accuracy_drop_pt(self) -> float:
        """FP32 minus INT8 mean accuracy at the contract's thresholds, in points (positive: INT8 worse)."""
        return 100 * (self.fp32_mean_accuracy - self.int8_mean_accuracy)

    @property
    def balanced_accuracy_drop_pt(self) -> float:
        """FP32 minus INT8 mean balanced accuracy at the contract's thresholds, in points."""
        return 100 * (self.fp32_mean_balanced_accuracy - self.int8_mean_balanced_accuracy)

    @property
    def speedup(self) -> float:
        """INT8 images/s over FP32 images/s at ``benchmark_batch_size``."""
        return self.int8_images_per_s / self.fp32_images_per_s

    def failures(self) -> list[str]:
        """One message per criterion the attempt misses (empty when it passes)."""
        c, out = self.criteria, []
        if self.accuracy_drop_pt > c.max_accuracy_drop_pt:
            out.append(f"mean accuracy drops {self.accuracy_drop_pt:.2f} pt (limit {c.max_accuracy_drop_pt})")
        if self.balanced_accuracy_drop_pt > c.max_balanced_accuracy_drop_pt:
            out.append(f"mean balanced accuracy drops {self.balanced_accuracy_drop_pt:.2f} pt (limit {c.max_balanced_accuracy_drop_pt})")
        if self.speedup < c.min_speedup:
            out.append(f"INT8 is not fast enough ({self.speedup:.2f}x FP32, needs {c.min_speedup}x)")
        return out

    @property
    def passed(self) -> bool:
        """True when every criterion holds."""
        return not self.failures()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record with the derived drops, speedup and verdict (stored in the INT8 contract)."""
        data = asdict(self)
        data.update(accuracy_drop_pt=self.accuracy_drop_pt, balanced_accuracy_drop_pt=self.balanced_accuracy_drop_pt,
                    speedup=self.speedup, passed=self.passed, failures=self.failures())
        return data

    def describe(self) -> str:
        """One line with both accuracies, both drops and both speeds, as the export prints it."""
        return (
            f"[{self.recipe}] FP32 mean accuracy {100 * self.fp32_mean_accuracy:.2f} %, INT8 {100 * self.int8_mean_accuracy:.2f} % "
            f"(drop {self.accuracy_drop_pt:.2f} pt); mean balanced accuracy FP32 {100 * self.fp32_mean_balanced_accuracy:.2f} %, "
            f"INT8 {100 * self.int8_mean_balanced_accuracy:.2f} % (drop {self.balanced_accuracy_drop_pt:.2f} pt); "
            f"{self.num_eval_images} val images. Speed at batch {self.benchmark_batch_size}: FP32 {self.fp32_images_per_s:.0f} "
            f"images/s, INT8 {self.int8_images_per_s:.0f} images/s ({self.speedup:.2f}x)"
        )


def quantize_int8(fp32_path: Path, target: Path, calibration: np.ndarray, *, options: QuantizeOptions = DEFAULT_RECIPES[0]) -> Path:
    """Static QDQ quantization of ``fp32_path``, activations calibrated on ``calibration`` (uint8 images)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):
        def __init__(self, input_name: str, images: np.ndarray, batch_size: int = 16) -> None:
            self._batches = iter([{input_name: images[i:i + batch_size]} for i in range(0, len(images), batch_size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    target = Path(target)
    prepared = target.with_name(target.stem + ".preprocessed.onnx")
    # Shape inference and graph cleanup first, as onnxruntime recommends before quantizing.
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    input_name = onnx_session(fp32_path).get_inputs()[0].name
    excluded = excluded_nodes(prepared, options)
    log.info("quantizing to INT8 (QDQ, %s calibration on %d images)", options.describe(), len(calibration))
    quantize_static(
        str(prepared), str(target), _Reader(input_name, calibration),
        quant_format=QuantFormat.QDQ, per_channel=options.per_channel, reduce_range=options.reduce_range,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8 if options.weight_type == "int8" else QuantType.QUInt8,
        calibrate_method=getattr(CalibrationMethod, options.calibrate_method), nodes_to_exclude=excluded,
        extra_options={"CalibPercentile": options.calibration_percentile},
    )
    prepared.unlink(missing_ok=True)
    if options.correct_head_bias:
        correct_head_bias(fp32_path, target, calibration)
    return target


def correct_head_bias(fp32_path: Path, int8_path: Path, images: np.ndarray) -> np.ndarray:
    """Subtract INT8's mean logit error on ``images`` from the FP32 head's bias in ``int8_path`` (rewritten).

    Logits are recovered from both models' probabilities (clipped to 1e-7 from 0 and 1). Returns
    the shift per output. Raises :class:`ExportError` when the output is not a sigmoid over an
    FP32 dense layer with a bias (Gemm with three inputs, or MatMul then Add).
    """
    import onnx
    from onnx import numpy_helper

    def model_logits(path: Path) -> np.ndarray:
        return logits(run_onnx(onnx_session(path), images, batch_size=64), eps=1e-7)

    shift = (model_logits(int8_path) - model_logits(fp32_path)).mean(axis=0)
    model = onnx.load(str(int8_path))
    initializers = {init.name: init for init in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    sigmoid = producer.get(model.graph.output[0].name)
    dense = producer.get(sigmoid.input[0]) if sigmoid is not None and sigmoid.op_type == "Sigmoid" else None
    bias_inputs = [] if dense is None else (dense.input[2:] if dense.op_type == "Gemm" else dense.input)
    bias = next((initializers[n] for n in bias_inputs if n in initializers and dense.op_type in ("Gemm", "Add")), None)
    if bias is None:
        raise ExportError(f"{int8_path}: correct_head_bias needs a sigmoid over an FP32 dense layer with a bias")
    corrected = numpy_helper.to_array(bias).astype(np.float64) - shift
    bias.CopyFrom(numpy_helper.from_array(corrected.astype(np.float32), bias.name))
    onnx.save(model, str(int8_path))
    log.info("INT8 head bias corrected on %d images: mean |shift| %.4f, largest %.4f (logits)",
             len(images), float(np.abs(shift).mean()), float(np.abs(shift).max()))
    return shift


HEAD_OP_TYPES = ("Sigmoid", "Gemm", "MatMul", "Add")
# Layer groups of a MobileNet-style network that a recipe can keep in FP32 (see node_groups).
OP_GROUPS = ("first_conv", "depthwise", "expand", "project", "last_conv", "residual_add", "head")


def excluded_nodes(path: Path, options: QuantizeOptions) -> list[str]:
    """Names of the nodes of the model at ``path`` that ``options`` keeps in FP32."""
    groups = node_groups(path)
    names = list(groups["head"]) if options.keep_head_fp32 else []
    for group in options.exclude_groups:
        names += [n for n in groups[group] if n not in names]
    return names


def node_groups(path: Path) -> dict[str, list[str]]:
    """Node names of the ONNX model at ``path`` in each of :data:`OP_GROUPS`, in graph order.

    Convolutions are told apart by structure, not by name (converters rename them):
    ``depthwise`` has group > 1; ``first_conv`` is the first convolution; ``last_conv`` the
    one whose activation feeds the global pooling; of the other 1x1 convolutions, ``expand``
    feeds an activation (Clip/Relu) and ``project`` (the linear bottleneck) does not.
    ``residual_add`` adds two computed tensors; ``head`` is :func:`head_nodes`. A model
    without some kind of layer has an empty list for it.
    """
    import onnx

    graph = onnx.load(str(path)).graph
    constants = {init.name for init in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def next_ops(node: Any) -> set[str]:
        return {c.op_type for out in node.output for c in consumers.get(out, [])}

    groups: dict[str, list[str]] = {g: [] for g in OP_GROUPS}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    for index, node in enumerate(convs):
        group_size = next((a.i for a in node.attribute if a.name == "group"), 1)
        after = next_ops(node)
        if group_size > 1:
            groups["depthwise"].append(node.name)
        elif index == 0:
            groups["first_conv"].append(node.name)
        elif after & {"Clip", "Relu"} and any(
                next_ops(c) & {"GlobalAveragePool", "ReduceMean"} for out in node.output for c in consumers.get(out, [])):
            groups["last_conv"].append(node.name)
        else:
            groups["expand" if after & {"Clip", "Relu"} else "project"].append(node.name)
    groups["residual_add"] = [n.name for n in graph.node
                              if n.op_type == "Add" and len(n.input) == 2 and not set(n.input) & constants]
    groups["head"] = head_nodes(path)
    return groups


def head_nodes(path: Path) -> list[str]:
    """Names of the nodes from the output back through the sigmoid and the dense layer."""
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    names, tensor = [], graph.output[0].name
    while tensor in producer and producer[tensor].op_type in HEAD_OP_TYPES:
        node = producer[tensor]
        names.append(node.name)
        if node.op_type in ("Gemm", "MatMul"):
            break
        tensor = node.input[0]
    return names


def mean_accuracies(probabilities: np.ndarray, labels: np.ndarray, thresholds: Sequence[float]) -> tuple[float, float]:
    """(mean accuracy, mean balanced accuracy) over attributes, as fractions in [0, 1].

    Computed by :func:`facialattr.training.metrics.threshold_metrics` (numpy only), the one home
    of balanced accuracy: an attribute with one class only counts that class's rate.
    """
    per_attribute = threshold_metrics(labels, probabilities, np.asarray(thresholds, dtype=np.float32))
    return float(per_attribute["accuracy"].mean()), float(per_attribute["balanced_accuracy"].mean())


def throughput_side_by_side(paths: Sequence[Path], images: np.ndarray, *, batch_size: int, rounds: int = 5) -> list[float]:
    """Images/s of each model on the same batch of ``images``, rounds interleaved; median of rounds."""
    batch = images[:batch_size]
    if len(batch) < batch_size:
        batch = np.resize(images, (batch_size, *images.shape[1:]))
    return interleaved_throughput([onnx_session(p) for p in paths], [batch] * len(paths), rounds=rounds)


def interleaved_throughput(sessions: Sequence[Any], batches: Sequence[np.ndarray], *, rounds: int = 5,
                           images_per_round: int = 256) -> list[float]:
    """Images/s of each ONNX Runtime session on its own batch, rounds interleaved so all see the same machine load.

    Each round runs every session for about ``images_per_round`` images; returns the median of ``rounds`` per session.
    """
    for session, batch in zip(sessions, batches, strict=True):  # warm-up: first runs allocate and pick kernels
        run_onnx(session, batch, batch_size=len(batch))
    timings: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for session, batch, times in zip(sessions, batches, timings, strict=True):
            repeats = max(1, images_per_round // len(batch))
            start = time.perf_counter()
            for _ in range(repeats):
                run_onnx(session, batch, batch_size=len(batch))
            times.append(repeats * len(batch) / (time.perf_counter() - start))
    return [float(np.median(t)) for t in timings]


def compare_int8(fp32_path: Path, int8_path: Path, images: np.ndarray, labels: np.ndarray, thresholds: Sequence[float], *,
                 num_calibration_images: int, recipe: str = "", fp32_probabilities: np.ndarray | None = None,
                 benchmark_batch_size: int = 32, criteria: Int8Criteria = Int8Criteria()) -> Int8Report:
    """Accuracy of both models on labelled images, and their speed measured side by side."""
    if fp32_probabilities is None:
        fp32_probabilities = run_onnx(onnx_session(fp32_path), images, batch_size=64)
    fp32 = mean_accuracies(fp32_probabilities, labels, thresholds)
    int8 = mean_accuracies(run_onnx(onnx_session(int8_path), images, batch_size=64), labels, thresholds)
    fp32_speed, int8_speed = throughput_side_by_side([fp32_path, int8_path], images, batch_size=benchmark_batch_size)
    return Int8Report(
        num_eval_images=len(images), num_calibration_images=num_calibration_images,
        fp32_mean_accuracy=fp32[0], int8_mean_accuracy=int8[0],
        fp32_mean_balanced_accuracy=fp32[1], int8_mean_balanced_accuracy=int8[1],
        fp32_images_per_s=fp32_speed, int8_images_per_s=int8_speed, benchmark_batch_size=benchmark_batch_size,
        criteria=criteria, recipe=recipe,
    )
