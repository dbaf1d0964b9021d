"""Keras model -> ONNX file with the served interface (uint8 ``images`` in, fp32 ``probabilities`` out).

tf2onnx names the graph's output after the last Keras layer and its batch dimension
``unk__N``; both are rewritten here so the file says what config.pbtxt says.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from facialattr.contract import ModelContract
from facialattr.errors import ExportError
from facialattr.triton_config import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

OPSET = 17
BATCH_DIM_NAME = "batch"


def load_keras_model(path: Path) -> Any:
    """The Keras model at ``path`` (a ``.keras`` file), without its training configuration."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: Keras model file not found")
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise ExportError(f"{path}: cannot load the Keras model: {exc}") from exc


def check_keras_interface(model: Any, contract: ModelContract) -> None:
    """Refuse a model whose input or output shape disagrees with the contract it ships with."""
    h, w = contract.preprocessing.size_hw
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(f"the model must have one input and one output, it has {len(model.inputs)} and {len(model.outputs)}")
    in_shape = tuple(model.inputs[0].shape)
    if in_shape[1:] != (h, w, 3):
        raise ExportError(f"model input shape {in_shape} disagrees with the contract's input_size_hw {h},{w} (expected (None, {h}, {w}, 3))")
    out_shape = tuple(model.outputs[0].shape)
    if out_shape[1:] != (contract.num_attributes,):
        raise ExportError(
            f"model output shape {out_shape} disagrees with the contract's {contract.num_attributes} attributes "
            f"(expected (None, {contract.num_attributes}))"
        )
    dtype = str(model.inputs[0].dtype)
    if dtype != "uint8":
        # Cast inside the exported graph; pixel values still arrive as 0..255.
        log.warning("model input dtype is %s, not uint8: the ONNX graph casts uint8 pixels to it", dtype)


def convert_to_onnx(model: Any, target: Path, contract: ModelContract, *, opset: int = OPSET) -> Path:
    """Convert with tf2onnx and name the tensors as Triton's config does (INPUT_NAME, OUTPUT_NAME). Returns ``target``.

    Raises ExportError when tf2onnx cannot convert the model.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    h, w = contract.preprocessing.size_hw
    signature = (tf.TensorSpec((None, h, w, 3), tf.uint8, name=INPUT_NAME),)
    log.info("converting to ONNX (opset %d, tf2onnx %s)", opset, tf2onnx.__version__)
    try:
        model_proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    except Exception as exc:  # tf2onnx raises bare exceptions for unsupported ops
        raise ExportError(f"tf2onnx could not convert the model: {exc}") from exc
    rename_graph_tensors(model_proto, inputs=[INPUT_NAME], outputs=[OUTPUT_NAME])
    onnx.checker.check_model(model_proto)
    target = Path(target)
    onnx.save(model_proto, target)
    return target


def rename_graph_tensors(model_proto: Any, *, inputs: list[str], outputs: list[str]) -> None:
    """Rename the graph's inputs and outputs (in order) and give them a named, dynamic batch dimension."""
    graph = model_proto.graph
    if len(graph.input) != len(inputs) or len(graph.output) != len(outputs):
        raise ExportError(f"converted graph has {len(graph.input)} inputs and {len(graph.output)} outputs, expected {len(inputs)} and {len(outputs)}")
    renames = {}
    for values, names in ((graph.input, inputs), (graph.output, outputs)):
        for value, name in zip(values, names, strict=True):
            if value.name != name:
                renames[value.name] = name
                value.name = name
            dim0 = value.type.tensor_type.shape.dim[0]
            dim0.Clear()
            dim0.dim_param = BATCH_DIM_NAME
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)


def check_onnx_interface(path: Path, contract: ModelContract) -> None:
    """The written file must carry exactly the served tensors, with a dynamic batch dimension."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    h, w = contract.preprocessing.size_hw
    expected = (
        ("input", graph.input, INPUT_NAME, onnx.TensorProto.UINT8, [h, w, 3]),
        ("output", graph.output, OUTPUT_NAME, onnx.TensorProto.FLOAT, [contract.num_attributes]),
    )
    for kind, values, name, elem_type, dims in expected:
        if len(values) != 1 or values[0].name != name:
            raise ExportError(f"{path}: ONNX {kind}s are {[v.name for v in values]}, expected [{name!r}]")
        tensor_type = values[0].type.tensor_type
        shape = tensor_type.shape.dim
        if tensor_type.elem_type != elem_type or [d.dim_value for d in shape[1:]] != dims or shape[0].dim_value:
            raise ExportError(f"{path}: ONNX {kind} {name!r} has the wrong type or shape (expected [N, {', '.join(map(str, dims))}])")
