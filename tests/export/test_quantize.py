"""INT8 recipes: which layers a recipe keeps in FP32, on a tiny MobileNet-shaped ONNX model.

The model is built with onnx.helper (no TensorFlow) and quantized for real by ONNX Runtime;
the tests read the quantized graph to see which nodes got 8-bit inputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from facialattr.errors import ExportError
from facialattr.export.parity import onnx_session, run_onnx
from facialattr.export.quantize import OP_GROUPS, QuantizeOptions, node_groups, quantize_int8
from facialattr.triton_config import INPUT_NAME, OUTPUT_NAME

SIZE = 16
# Node names of the tiny model by the group node_groups must put them in.
EXPECTED_GROUPS = {
    "first_conv": ["stem"],
    "depthwise": ["block0_dw", "block1_dw"],
    "expand": ["block1_expand"],
    "project": ["block0_project", "block1_project"],
    "last_conv": ["last"],
    "residual_add": ["block1_add"],
    "head": ["head_sigmoid", "head_dense"],
}


def build_mobilenet_like_onnx(path):
    """Stem conv, a depthwise block, an inverted residual block, a 1x1 top conv, pooling and a dense sigmoid head."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def conv(name, x, c_in, c_out, *, kernel, group=1, relu=True):
        w = const(f"{name}_w", rng.normal(0, 0.5, (c_out, c_in // group, kernel, kernel)))
        b = const(f"{name}_b", rng.normal(0, 0.1, c_out))
        nodes.append(helper.make_node("Conv", [x, w, b], [f"{name}_out"], name=name, group=group,
                                      pads=[kernel // 2] * 4))
        if not relu:
            return f"{name}_out"
        nodes.append(helper.make_node("Clip", [f"{name}_out", "zero", "six"], [f"{name}_relu"], name=f"{name}_relu6"))
        return f"{name}_relu"

    const("zero", 0.0), const("six", 6.0), const("scale", 1 / 127.5), const("offset", -1.0)
    nodes += [
        helper.make_node("Cast", [INPUT_NAME], ["x_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x_float", "scale"], ["x_scaled"]),
        helper.make_node("Add", ["x_scaled", "offset"], ["x_norm"]),
        helper.make_node("Transpose", ["x_norm"], ["x_nchw"], perm=[0, 3, 1, 2]),
    ]
    x = conv("stem", "x_nchw", 3, 8, kernel=3)
    x = conv("block0_dw", x, 8, 8, kernel=3, group=8)
    shortcut = conv("block0_project", x, 8, 8, kernel=1, relu=False)
    x = conv("block1_expand", shortcut, 8, 16, kernel=1)
    x = conv("block1_dw", x, 16, 16, kernel=3, group=16)
    x = conv("block1_project", x, 16, 8, kernel=1, relu=False)
    nodes.append(helper.make_node("Add", [shortcut, x], ["block1_sum"], name="block1_add"))
    x = conv("last", "block1_sum", 8, 32, kernel=1)
    const("dense_w", rng.normal(0, 0.3, (32, 40))), const("dense_b", rng.normal(0, 0.1, 40))
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["features"], name="flatten"),
        helper.make_node("Gemm", ["features", "dense_w", "dense_b"], ["logits"], name="head_dense"),
        helper.make_node("Sigmoid", ["logits"], [OUTPUT_NAME], name="head_sigmoid"),
    ]
    graph = helper.make_graph(
        nodes, "mobilenet_like",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 40])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def mobilenet_like(tmp_path_factory):
    return build_mobilenet_like_onnx(tmp_path_factory.mktemp("model") / "model.onnx")


def quantized_nodes(path) -> set[str]:
    """Names of the nodes whose every float input is the output of a DequantizeLinear (i.e. computed in 8 bits)."""
    graph = onnx.load(str(path)).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    constants = {init.name for init in graph.initializer}
    quantized = set()
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        inputs = [name for name in node.input if name and name not in ("zero", "six")]
        if inputs and all(producer.get(name) == "DequantizeLinear" and name not in constants for name in inputs):
            quantized.add(node.name)
    return quantized


def test_node_groups_tell_mobilenet_layers_apart_by_structure(mobilenet_like):
    assert node_groups(mobilenet_like) == EXPECTED_GROUPS
    assert set(EXPECTED_GROUPS) == set(OP_GROUPS)


@pytest.mark.parametrize(("keep_head_fp32", "exclude_groups"), [
    (True, ()),
    (False, ()),
    (True, ("depthwise",)),
    (True, ("first_conv", "last_conv")),
    (False, ("expand", "project", "residual_add")),
])
def test_recipe_keeps_exactly_its_excluded_groups_in_fp32_and_quantizes_the_rest(keep_head_fp32, exclude_groups,
                                                                                  mobilenet_like, tmp_path):
    calibration = np.random.default_rng(1).integers(0, 256, (32, SIZE, SIZE, 3), dtype=np.uint8)
    options = QuantizeOptions(keep_head_fp32=keep_head_fp32, exclude_groups=exclude_groups, calibrate_method="MinMax")
    target = quantize_int8(mobilenet_like, tmp_path / "int8.onnx", calibration, options=options)
    kept = set(exclude_groups) | ({"head"} if keep_head_fp32 else set())
    # Sigmoid has no 8-bit kernel here; quantizing the head means the dense layer.
    layers = {name for group, names in EXPECTED_GROUPS.items() for name in names if name != "head_sigmoid"}
    fp32 = {name for group in kept for name in EXPECTED_GROUPS[group] if name != "head_sigmoid"}
    assert layers & quantized_nodes(target) == layers - fp32


def activation_scales(path) -> dict[str, float]:
    """Scale of each activation QuantizeLinear (input tensor name -> scale) in a QDQ model."""
    graph = onnx.load(str(path)).graph
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    return {node.input[0]: float(values[node.input[1]]) for node in graph.node
            if node.op_type == "QuantizeLinear" and node.input[0] not in values}


def test_lower_calibration_percentile_clips_activation_ranges(mobilenet_like, tmp_path):
    calibration = np.random.default_rng(2).integers(0, 256, (32, SIZE, SIZE, 3), dtype=np.uint8)
    scales = [activation_scales(quantize_int8(mobilenet_like, tmp_path / f"int8_{p}.onnx", calibration,
                                              options=QuantizeOptions(calibration_percentile=p)))
              for p in (100.0, 99.0)]
    assert scales[0].keys() == scales[1].keys() and len(scales[0]) >= 5
    # 1 % of the values clipped: every range that is not constant shrinks, none grows.
    assert all(scales[1][name] <= scales[0][name] for name in scales[0])
    assert sum(scales[1][name] < 0.99 * scales[0][name] for name in scales[0]) >= len(scales[0]) // 2


def mean_logit_error(fp32_path, int8_path, images) -> np.ndarray:
    def logits(path):
        p = np.clip(run_onnx(onnx_session(path), images, batch_size=16).astype(np.float64), 1e-7, 1 - 1e-7)
        return np.log(p / (1 - p))

    return (logits(int8_path) - logits(fp32_path)).mean(axis=0)


def test_head_bias_correction_cancels_the_mean_logit_error_on_the_calibration_images(mobilenet_like, tmp_path):
    calibration = np.random.default_rng(3).integers(0, 256, (32, SIZE, SIZE, 3), dtype=np.uint8)
    plain, corrected = (quantize_int8(mobilenet_like, tmp_path / f"int8_{flag}.onnx", calibration,
                                      options=QuantizeOptions(reduce_range=False, correct_head_bias=flag))
                        for flag in (False, True))
    before, after = (np.abs(mean_logit_error(mobilenet_like, path, calibration)) for path in (plain, corrected))
    assert before.mean() > 1e-3 and after.max() < 0.05 * before.max()
    # Only the head's bias changed, by the error measured before the correction.
    weights = [{i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer} for path in (plain, corrected)]
    changed = [name for name in weights[0] if not np.array_equal(weights[0][name], weights[1][name])]
    assert changed == ["dense_b"]
    np.testing.assert_allclose(weights[0]["dense_b"] - weights[1]["dense_b"],
                               mean_logit_error(mobilenet_like, plain, calibration), atol=1e-5)


@pytest.mark.parametrize(("options", "description"), [
    (QuantizeOptions(exclude_groups=("depthwise",)), "int8 7-bit per-channel weights, Percentile 99.999, FP32 head + depthwise"),
    (QuantizeOptions(reduce_range=False, calibration_percentile=99.99), "int8 8-bit per-channel weights, Percentile 99.99, FP32 head"),
    (QuantizeOptions(keep_head_fp32=False, calibrate_method="MinMax"), "int8 7-bit per-channel weights, MinMax"),
    (QuantizeOptions(correct_head_bias=True), "int8 7-bit per-channel weights, Percentile 99.999, FP32 head, head bias corrected"),
])
def test_recipe_describes_its_weights_calibration_and_fp32_groups(options, description):
    assert options.describe() == description


@pytest.mark.parametrize(("fields", "message"), [
    ({"exclude_groups": ("dephtwise",)}, r"'dephtwise'.*first_conv, depthwise"),
    ({"calibration_percentile": 99.99 * 100}, r"calibration_percentile must be in \(50, 100\], got 9999"),
    ({"calibration_percentile": 0.9999}, r"calibration_percentile .* got 0.9999"),
    ({"correct_head_bias": True, "keep_head_fp32": False}, r"correct_head_bias needs keep_head_fp32"),
])
def test_bad_recipe_field_is_refused_naming_the_value(fields, message):
    with pytest.raises(ExportError, match=message):
        QuantizeOptions(**fields)
