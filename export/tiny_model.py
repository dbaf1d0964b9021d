"""A tiny ONNX model with the served model's exact interface, built with onnx.helper.

Used by tests (a real model file, in milliseconds, no TensorFlow) and as the
clearly labelled placeholder the quick start serves when no trained model exists.
Its outputs depend on the image (colour statistics through a fixed random
projection), so wrong preprocessing or batching shows up as wrong numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facialattr.triton_config import INPUT_NAME, OUTPUT_NAME


def build_tiny_onnx(path: Path, *, size_hw: tuple[int, int] = (128, 128), num_outputs: int = 40, seed: int = 0) -> Path:
    """Write a tiny ONNX model with the served interface to ``path`` (returned).

    Input uint8 ``[N, h, w, 3]`` (``size_hw`` in pixels), output float32 ``[N, num_outputs]`` sigmoid probabilities;
    ``seed`` fixes its random projection, so the same arguments give the same numbers.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    h, w = size_hw
    # Features: mean of each channel over 4 horizontal bands (12 values) scaled to [-1, 1].
    weights = rng.normal(0, 2.0, size=(12, num_outputs)).astype(np.float32)
    bias = rng.normal(0, 0.5, size=(num_outputs,)).astype(np.float32)
    bands = 4
    inits = [
        numpy_helper.from_array(np.array(1 / 127.5, np.float32), "scale"),
        numpy_helper.from_array(np.array(-1.0, np.float32), "offset"),
        numpy_helper.from_array(np.array([-1, bands, (h // bands) * w, 3], np.int64), "band_shape"),
        numpy_helper.from_array(np.array([0, 0, 0, 0], np.int64), "crop_start"),
        numpy_helper.from_array(np.array([2**31, (h // bands) * bands, w, 3], np.int64), "crop_end"),
        numpy_helper.from_array(np.array([-1, 12], np.int64), "flat_shape"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(bias, "bias"),
    ]
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["x_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x_float", "scale"], ["x_scaled"]),
        helper.make_node("Add", ["x_scaled", "offset"], ["x_norm"]),
        helper.make_node("Slice", ["x_norm", "crop_start", "crop_end"], ["x_crop"]),
        helper.make_node("Reshape", ["x_crop", "band_shape"], ["x_bands"]),
        helper.make_node("ReduceMean", ["x_bands"], ["band_means"], axes=[2], keepdims=0),
        helper.make_node("Reshape", ["band_means", "flat_shape"], ["features"]),
        helper.make_node("MatMul", ["features", "weights"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "facialattr_tiny",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", h, w, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", num_outputs])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="facialattr-tiny")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, path)
    return path
