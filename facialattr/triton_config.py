"""Typed Triton model configuration, rendered with Triton's own protobuf.

Field names are Triton's (``max_batch_size``, ``max_queue_delay_microseconds``...)
so a reader of ``config.pbtxt`` and of this code sees the same words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from facialattr import MODEL_NAME
from facialattr.contract import ModelContract
from facialattr.errors import ModelRepositoryError

LABEL_FILENAME = "labels.txt"
ONNX_FILENAME = "model.onnx"


@dataclass(frozen=True)
class DynamicBatching:
    # A few ms of queueing lets concurrent single-face requests merge; on 2 CPU cores a
    # batch of 4-8 is already about as fast per image as 32 (see docs/ARCHITECTURE.md).
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 2000
    # 0 = unbounded. Bounded so overload is rejected quickly instead of queueing forever.
    max_queue_size: int = 512
    default_timeout_microseconds: int = 0


@dataclass(frozen=True)
class InstanceGroup:
    count: int = 1
    # KIND_AUTO: one GPU instance in the GPU container, a CPU instance elsewhere.
    kind: str = "KIND_AUTO"


@dataclass(frozen=True)
class ModelConfig:
    """The served model's ``config.pbtxt`` for the official container (ONNX Runtime backend)."""

    name: str = MODEL_NAME
    platform: str = "onnxruntime_onnx"
    max_batch_size: int = 64
    dynamic_batching: DynamicBatching = field(default_factory=DynamicBatching)
    # Two one-thread instances: one batch computes while the next forms. On 2 CPU cores this gave
    # the best 16-user p99 and bulk throughput of the settings tried (benchmarks/RESULTS.md).
    instance_group: tuple[InstanceGroup, ...] = (InstanceGroup(count=2),)
    # TensorRT FP16 through ONNX Runtime's TensorRT execution provider: faster on GPU,
    # numerics change slightly and the first load builds engines (minutes). Off by default.
    tensorrt_fp16: bool = False
    # Read by ONNX Runtime in both the GPU container's backend and the embedded Python-backend model.
    intra_op_thread_count: int = 1

    def to_proto(self, contract: ModelContract) -> mc.ModelConfig:
        h, w = contract.preprocessing.size_hw
        cfg = mc.ModelConfig(name=self.name, platform=self.platform, max_batch_size=self.max_batch_size)
        cfg.input.add(name=contract.input_name, data_type=mc.TYPE_UINT8, dims=[h, w, 3])
        cfg.output.add(
            name=contract.output_name, data_type=mc.TYPE_FP32, dims=[contract.num_attributes],
            label_filename=LABEL_FILENAME,
        )
        db = cfg.dynamic_batching
        db.preferred_batch_size.extend(self.dynamic_batching.preferred_batch_size)
        db.max_queue_delay_microseconds = self.dynamic_batching.max_queue_delay_microseconds
        db.default_queue_policy.max_queue_size = self.dynamic_batching.max_queue_size
        db.default_queue_policy.default_timeout_microseconds = self.dynamic_batching.default_timeout_microseconds
        db.default_queue_policy.allow_timeout_override = True
        for group in self.instance_group:
            cfg.instance_group.add(count=group.count, kind=mc.ModelInstanceGroup.Kind.Value(group.kind))
        if self.tensorrt_fp16:
            trt = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
            trt.parameters["precision_mode"] = "FP16"
            trt.parameters["max_workspace_size_bytes"] = str(1 << 30)
        cfg.optimization.input_pinned_memory.enable = True
        cfg.optimization.output_pinned_memory.enable = True
        for key, value in {
            **contract.to_parameters(),
            "intra_op_thread_count": str(self.intra_op_thread_count),
        }.items():
            cfg.parameters[key].string_value = value
        return cfg


def render(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse(text: str, *, source: str = "config.pbtxt") -> mc.ModelConfig:
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ModelRepositoryError(f"{source}: not a valid Triton model config: {exc}") from exc


def load(path: Path) -> mc.ModelConfig:
    path = Path(path)
    if not path.is_file():
        raise ModelRepositoryError(f"{path}: no config.pbtxt")
    return parse(path.read_text(), source=str(path))
