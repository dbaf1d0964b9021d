"""The shipped network and the project's preprocessing in PyTorch, for measuring them on a GPU.

``OnnxModule`` runs the exported ONNX graph itself (the file Triton serves), op by op with
torch functions: no hand-built copy of MobileNetV2 whose weights could drift from the export,
and no converter package that the device machine (no registry) would need carried. It knows
the ops tf2onnx emits for this model and refuses any other by name.

``prepare_batch`` is :func:`facialattr.preprocessing.prepare` on tensors: the same crop spans
(computed by that module) and the same area average (exact fractional-overlap weights, float32,
rounded half to even), done as two small matrix products per image size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facialattr.contract import Preprocessing
from facialattr.errors import FacialAttrError
from facialattr.preprocessing import crop_box_pixels

_ONNX_FLOAT_TYPES = {1: torch.float32, 10: torch.float16, 11: torch.float64}


class UnsupportedGraphError(FacialAttrError):
    """The ONNX graph uses an op or attribute this runner does not implement."""


class OnnxModule(torch.nn.Module):
    """An ONNX graph of Conv/Clip/Add/Mul/Pad/Transpose/pooling/MatMul/Sigmoid ops as a torch module.

    Initializers become buffers (so ``.to(device, dtype)`` moves them); ``forward`` takes the
    graph's single input and returns its single output in float32. With ``dtype=torch.float16``
    the graph computes in half precision after its input Cast.
    """

    def __init__(self, onnx_path: str | Path) -> None:
        super().__init__()
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(onnx_path))
        graph = model.graph
        initializers = {t.name for t in graph.initializer}
        (self.input_name,) = [i.name for i in graph.input if i.name not in initializers]
        (self.output_name,) = [o.name for o in graph.output]
        self._names: dict[str, str] = {}
        for i, tensor in enumerate(graph.initializer):
            self._names[tensor.name] = f"w{i}"
            self.register_buffer(f"w{i}", torch.from_numpy(numpy_helper.to_array(tensor).copy()))
        self.nodes = [(n.op_type, list(n.input), list(n.output), _attributes(n)) for n in graph.node]
        unknown = sorted({op for op, *_ in self.nodes} - set(_OPS))
        if unknown:
            raise UnsupportedGraphError(f"{onnx_path}: ops not supported by the torch runner: {', '.join(unknown)}")
        self.compute_dtype = torch.float32

    def to_compute_dtype(self, dtype: torch.dtype) -> OnnxModule:
        """Cast floating buffers to ``dtype`` (float32 or float16) and compute in it."""
        self.compute_dtype = dtype
        for name, buffer in self.named_buffers():
            if buffer.is_floating_point():
                setattr(self, name, buffer.to(dtype))
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {self.input_name: images}
        for name, buffer_name in self._names.items():
            values[name] = getattr(self, buffer_name)
        for op, inputs, outputs, attrs in self.nodes:
            args = [values[name] if name else None for name in inputs]
            values[outputs[0]] = _OPS[op](self, args, attrs)
        return values[self.output_name].float()


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _cast(module: OnnxModule, args, attrs):
    target = _ONNX_FLOAT_TYPES.get(attrs["to"])
    if target is None:
        raise UnsupportedGraphError(f"Cast to ONNX type {attrs['to']}")
    # A float Cast is where the uint8 images enter the network: it takes the compute dtype.
    return args[0].to(module.compute_dtype if target.is_floating_point else target)


def _conv(module, args, attrs):
    x, weight, bias = (args + [None])[:3]
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedGraphError(f"Conv auto_pad={attrs['auto_pad']}")
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    if (top, left) != (bottom, right):  # asymmetric (TF 'SAME' at stride 2): pad explicitly
        x, top, left = F.pad(x, (left, right, top, bottom)), 0, 0
    return F.conv2d(x, weight, bias, stride=tuple(attrs.get("strides", [1, 1])), padding=(top, left),
                    dilation=tuple(attrs.get("dilations", [1, 1])), groups=attrs.get("group", 1))


def _pad(module, args, attrs):
    x, pads = args[0], [int(p) for p in args[1].tolist()]
    if attrs.get("mode", b"constant") not in (b"constant", "constant"):
        raise UnsupportedGraphError(f"Pad mode={attrs['mode']}")
    value = float(args[2]) if len(args) > 2 and args[2] is not None else 0.0
    half = len(pads) // 2
    # ONNX lists all begins then all ends, first axis first; F.pad wants (last begin, last end, ...).
    torch_pads = [p for axis in reversed(range(half)) for p in (pads[axis], pads[axis + half])]
    return F.pad(x, torch_pads, value=value)


def _clip(module, args, attrs):
    low = args[1] if len(args) > 1 and args[1] is not None else None
    high = args[2] if len(args) > 2 and args[2] is not None else None
    return torch.clamp(args[0], min=None if low is None else float(low), max=None if high is None else float(high))


def _squeeze(module, args, attrs):
    axes = [int(a) for a in args[1].tolist()] if len(args) > 1 else attrs.get("axes")
    x = args[0]
    for axis in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.squeeze(axis)
    return x


_OPS = {
    "Cast": _cast,
    "Conv": _conv,
    "Pad": _pad,
    "Clip": _clip,
    "Squeeze": _squeeze,
    "Add": lambda m, a, k: a[0] + a[1],
    "Mul": lambda m, a, k: a[0] * a[1],
    "MatMul": lambda m, a, k: a[0] @ a[1].to(a[0].dtype),
    "Sigmoid": lambda m, a, k: torch.sigmoid(a[0]),
    "Relu": lambda m, a, k: torch.relu(a[0]),
    "Transpose": lambda m, a, k: a[0].permute(*k["perm"]),
    # The head (pool, dense, sigmoid) runs in float32 whatever the compute dtype: 40 logits cost
    # nothing, and FP16 rounding there moved probabilities by up to 4e-3.
    "GlobalAveragePool": lambda m, a, k: a[0].float().mean(dim=(2, 3), keepdim=True),
}


def area_weights(source: int, target: int, *, device=None) -> torch.Tensor:
    """[target, source] float32 weights of an area resize along one axis: each row averages the
    fraction of every source pixel that its output pixel covers (TensorFlow's ``area`` method)."""
    scale = source / target
    starts = torch.arange(target, dtype=torch.float64) * scale
    ends = starts + scale
    left = torch.arange(source, dtype=torch.float64)
    overlap = (torch.minimum(ends[:, None], left[None, :] + 1) - torch.maximum(starts[:, None], left[None, :])).clamp(min=0)
    return (overlap / scale).to(torch.float32).to(device)


def prepare_batch(images_chw: Sequence[torch.Tensor], preprocessing: Preprocessing) -> torch.Tensor:
    """The model's uint8 [N, h, w, 3] input from decoded uint8 [3, H, W] RGB tensors, on their device.

    Images of one size are cropped and resized together; the result keeps the input order.
    """
    h, w = preprocessing.size_hw
    device = images_chw[0].device if images_chw else None
    out = torch.empty((len(images_chw), h, w, 3), dtype=torch.uint8, device=device)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images_chw):
        groups.setdefault(tuple(image.shape[1:]), []).append(index)
    for (height, width), indices in groups.items():
        top, left, crop_h, crop_w = crop_box_pixels(height, width, preprocessing)
        stack = torch.stack([images_chw[i] for i in indices])[:, :, top:top + crop_h, left:left + crop_w]
        rows, cols = area_weights(crop_h, h, device=device), area_weights(crop_w, w, device=device)
        # float32 sums like the CPU path; torch.round rounds half to even as cv2 and tf.round do.
        resized = torch.round(rows @ stack.to(torch.float32) @ cols.T).clamp_(0, 255).to(torch.uint8)
        if preprocessing.channel_order == "BGR":
            resized = resized.flip(1)
        out[torch.as_tensor(indices, device=device)] = resized.permute(0, 2, 3, 1)
    return out


def as_chw_tensor(image_hwc: np.ndarray) -> torch.Tensor:
    """A decoded uint8 [H, W, 3] array as the [3, H, W] tensor GPU decoders return."""
    return torch.from_numpy(np.ascontiguousarray(image_hwc)).permute(2, 0, 1).contiguous()
