"""The parity gate: ONNX Runtime must reproduce the Keras model before anything is published.

Compared on real-looking images at batch 1 and at the served max_batch_size, because
conversion bugs can hide in batch handling (reshapes with a baked-in batch dimension).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facialattr.errors import ParityError
from facialattr.onnx_runtime import cpu_session as onnx_session  # the name export/ callers use

log = logging.getLogger(__name__)

# fp32 conversion differences measured here were about 5e-6 on probabilities;
# 1e-4 leaves margin for op-fusion order while still catching any real error.
DEFAULT_TOLERANCE = 1e-4
SINGLE_IMAGE_CHECKS = 8


@dataclass(frozen=True)
class ParityReport:
    """How far ONNX Runtime's outputs are from Keras' on the same images, per batch size, against ``tolerance``."""

    tolerance: float
    max_abs_diff_by_batch: dict[int, float]
    num_images: int
    # Spread of the Keras outputs: near 0 means the check compared constants and proves little.
    keras_output_std: float

    @property
    def max_abs_diff(self) -> float:
        """The largest |ONNX - Keras| over every batch size (probability units)."""
        return max(self.max_abs_diff_by_batch.values())

    @property
    def passed(self) -> bool:
        """True when ``max_abs_diff`` is within ``tolerance``."""
        return self.max_abs_diff <= self.tolerance

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what the contract's model_summary records)."""
        return {
            "tolerance": self.tolerance,
            "max_abs_diff": self.max_abs_diff,
            "max_abs_diff_by_batch": {str(k): v for k, v in self.max_abs_diff_by_batch.items()},
            "num_images": self.num_images,
        }


def run_onnx(session: Any, images: np.ndarray, *, batch_size: int) -> np.ndarray:
    """Probabilities ``[N, 40]`` of an ONNX Runtime session over uint8 ``images`` in batches of ``batch_size``."""
    input_name = session.get_inputs()[0].name
    outputs = [session.run(None, {input_name: images[i:i + batch_size]})[0] for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs)


def run_keras(model: Any, images: np.ndarray, *, batch_size: int) -> np.ndarray:
    # Direct calls, not predict(): no progress bar, no tf.data, same batch composition as ONNX.
    """Probabilities ``[N, 40]`` of a Keras model over ``images`` in the same batches as :func:`run_onnx`."""
    outputs = [np.asarray(model(images[i:i + batch_size], training=False)) for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs).astype(np.float32)


def measure_parity(keras_model: Any, onnx_path: Path, images: np.ndarray, *, max_batch_size: int,
                   tolerance: float = DEFAULT_TOLERANCE) -> ParityReport:
    """Max |Keras - ONNX| on ``images``, one image at a time and in batches of ``max_batch_size``."""
    session = onnx_session(onnx_path)
    diffs, spread = {}, 0.0
    for batch_size, subset in ((1, images[:SINGLE_IMAGE_CHECKS]), (max_batch_size, images)):
        expected = run_keras(keras_model, subset, batch_size=batch_size)
        actual = run_onnx(session, subset, batch_size=batch_size)
        if actual.shape != expected.shape:
            raise ParityError(f"ONNX output shape {actual.shape} differs from Keras {expected.shape} at batch {batch_size}")
        diffs[batch_size] = float(np.max(np.abs(actual - expected)))
        spread = max(spread, float(np.std(expected, axis=0).mean()))
    report = ParityReport(tolerance=tolerance, max_abs_diff_by_batch=diffs, num_images=len(images), keras_output_std=spread)
    if spread < 1e-6:
        log.warning("the Keras model gives the same output for every image: parity on it proves little")
    return report


def check_parity(keras_model: Any, onnx_path: Path, images: np.ndarray, *, max_batch_size: int,
                 tolerance: float = DEFAULT_TOLERANCE) -> ParityReport:
    """:func:`measure_parity`, raising :class:`ParityError` when any difference exceeds ``tolerance``."""
    if len(images) < max_batch_size:
        raise ParityError(f"the parity check needs at least max_batch_size={max_batch_size} images, got {len(images)}")
    report = measure_parity(keras_model, onnx_path, images, max_batch_size=max_batch_size, tolerance=tolerance)
    summary = ", ".join(f"batch {b}: {d:.2e}" for b, d in report.max_abs_diff_by_batch.items())
    if not report.passed:
        raise ParityError(
            f"ONNX Runtime does not reproduce the Keras model: max |difference| of probabilities {summary} "
            f"exceeds the tolerance {tolerance:.0e} on {len(images)} images; nothing was written"
        )
    log.info("parity gate passed (%s; tolerance %.0e, %d images)", summary, tolerance, len(images))
    return report
