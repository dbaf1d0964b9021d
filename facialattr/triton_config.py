"""Typed Triton model configuration, rendered with Triton's own protobuf and parsed back from it.

Field names are Triton's (``max_batch_size``, ``max_queue_delay_microseconds``...)
so a reader of ``config.pbtxt`` and of this code sees the same words. This module is
the one home of what Triton's config says: tensor names, ``max_batch_size``, batching,
instances, and the ONNX Runtime thread count. The model contract
(:mod:`facialattr.contract`) holds only what Triton's config has no field for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from facialattr import MODEL_NAME
from facialattr.contract import ModelContract
from facialattr.errors import ContractError, ModelRepositoryError

LABEL_FILENAME = "labels.txt"
ONNX_FILENAME = "model.onnx"
# The served tensors: uint8 images [N, H, W, 3] in, float32 probabilities [N, attributes] out.
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
# Largest batch Triton forms or accepts; export's --max-batch-size default.
DEFAULT_MAX_BATCH_SIZE = 64
# Model instances per device (two one-thread instances: see ModelConfig.instance_group).
DEFAULT_INSTANCE_COUNT = 2
# ONNX Runtime intra-op threads per model instance (the ``intra_op_thread_count`` parameter).
DEFAULT_INTRA_OP_THREADS = 1
THREADS_PARAMETER = "intra_op_thread_count"
_TENSORRT = "tensorrt"


@dataclass(frozen=True)
class DynamicBatching:
    """Triton's ``dynamic_batching`` section: preferred sizes, queueing delay (µs) and the bounded queue."""

    # A few ms of queueing lets concurrent single-face requests merge; on 2 CPU cores a
    # batch of 4-8 is already about as fast per image as 32 (see docs/ARCHITECTURE.md).
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 2000
    # 0 = unbounded. Bounded so overload is rejected quickly instead of queueing forever.
    max_queue_size: int = 512
    default_timeout_microseconds: int = 0


@dataclass(frozen=True)
class InstanceGroup:
    """One ``instance_group`` entry: how many model copies, on which kind of device."""

    count: int = 1
    # KIND_AUTO: one GPU instance in the GPU container, a CPU instance elsewhere.
    kind: str = "KIND_AUTO"


@dataclass(frozen=True)
class ModelConfig:
    """The served model's ``config.pbtxt`` for the official container (ONNX Runtime backend)."""

    name: str = MODEL_NAME
    platform: str = "onnxruntime_onnx"
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    dynamic_batching: DynamicBatching = field(default_factory=DynamicBatching)
    # Two one-thread instances: one batch computes while the next forms. On 2 CPU cores this gave
    # the best 16-user p99 and bulk throughput of the settings tried (benchmarks/RESULTS.md).
    instance_group: tuple[InstanceGroup, ...] = (InstanceGroup(count=DEFAULT_INSTANCE_COUNT),)
    # TensorRT FP16 through ONNX Runtime's TensorRT execution provider: faster on GPU,
    # numerics change slightly and the first load builds engines (minutes). Off by default.
    tensorrt_fp16: bool = False
    # Read by ONNX Runtime in both the GPU container's backend and the embedded Python-backend model.
    intra_op_thread_count: int = DEFAULT_INTRA_OP_THREADS

    def to_proto(self, contract: ModelContract) -> mc.ModelConfig:
        """The Triton config protobuf of this model serving ``contract`` (its parameters ride along)."""
        h, w = contract.preprocessing.size_hw
        cfg = mc.ModelConfig(name=self.name, platform=self.platform, max_batch_size=self.max_batch_size)
        cfg.input.add(name=self.input_name, data_type=mc.TYPE_UINT8, dims=[h, w, 3])
        cfg.output.add(
            name=self.output_name, data_type=mc.TYPE_FP32, dims=[contract.num_attributes],
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
            trt = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name=_TENSORRT)
            trt.parameters["precision_mode"] = "FP16"
            trt.parameters["max_workspace_size_bytes"] = str(1 << 30)
        cfg.optimization.input_pinned_memory.enable = True
        cfg.optimization.output_pinned_memory.enable = True
        for key, value in {
            **contract.to_parameters(),
            THREADS_PARAMETER: str(self.intra_op_thread_count),
        }.items():
            cfg.parameters[key].string_value = value
        return cfg

    @classmethod
    def from_proto(cls, config: mc.ModelConfig) -> ModelConfig:
        """Parse a Triton config back (from disk or from ``get_model_config``), as pytriton does.

        The contract parameters are left to :meth:`ModelContract.from_model_config`; a missing
        thread-count parameter reads as the default. Fields this class does not model are not
        kept (e.g. ``backend: "python"`` of the embedded server's derived twin, whose platform reads ""). Raises ContractError when the model has
        other than one input and one output, or a parameter this class owns is malformed.
        """
        if len(config.input) != 1 or len(config.output) != 1:
            raise ContractError(f"model {config.name!r} must have one input and one output")
        db = config.dynamic_batching
        accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
        threads = config.parameters[THREADS_PARAMETER].string_value if THREADS_PARAMETER in config.parameters else ""
        try:
            intra_op_thread_count = int(threads) if threads else DEFAULT_INTRA_OP_THREADS
        except ValueError:
            raise ContractError(f"model {config.name!r}: {THREADS_PARAMETER} {threads!r} is not a whole number") from None
        return cls(
            name=config.name,
            platform=config.platform,
            max_batch_size=config.max_batch_size,
            input_name=config.input[0].name,
            output_name=config.output[0].name,
            dynamic_batching=DynamicBatching(
                preferred_batch_size=tuple(int(b) for b in db.preferred_batch_size),
                max_queue_delay_microseconds=db.max_queue_delay_microseconds,
                max_queue_size=db.default_queue_policy.max_queue_size,
                default_timeout_microseconds=db.default_queue_policy.default_timeout_microseconds,
            ),
            instance_group=tuple(
                InstanceGroup(count=g.count, kind=mc.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group
            ),
            tensorrt_fp16=any(a.name == _TENSORRT and a.parameters.get("precision_mode") == "FP16" for a in accelerators),
            intra_op_thread_count=intra_op_thread_count,
        )

    @classmethod
    def from_pbtxt(cls, text: str, *, source: str = "config.pbtxt") -> ModelConfig:
        """Parse ``config.pbtxt`` text; raises ModelRepositoryError (naming ``source``) for text that is no config."""
        return cls.from_proto(parse(text, source=source))


@dataclass(frozen=True)
class ServedModel:
    """A model as a client sees it: Triton's config (tensor names, batch limit) and the contract."""

    config: ModelConfig
    contract: ModelContract

    @classmethod
    def from_proto(cls, config: mc.ModelConfig) -> ServedModel:
        """Both halves of a Triton config protobuf; raises ContractError when either is missing or inconsistent."""
        return cls(config=ModelConfig.from_proto(config), contract=ModelContract.from_model_config(config))

    def interchangeable_with(self, other: ServedModel) -> bool:
        """Same contract, tensor names and ``max_batch_size``: one client may send the same requests to both.

        Instances, threads and batching delays may differ (e.g. a GPU replica beside a CPU one).
        """
        mine, theirs = self.config, other.config
        return self.contract == other.contract and (mine.input_name, mine.output_name, mine.max_batch_size) == (
            theirs.input_name, theirs.output_name, theirs.max_batch_size)


def render(config: mc.ModelConfig) -> str:
    """``config.pbtxt`` text of a Triton config protobuf."""
    return text_format.MessageToString(config)


def parse(text: str, *, source: str = "config.pbtxt") -> mc.ModelConfig:
    """A Triton config protobuf from ``config.pbtxt`` text; raises ModelRepositoryError naming ``source``."""
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ModelRepositoryError(f"{source}: not a valid Triton model config: {exc}") from exc


def load(path: Path) -> mc.ModelConfig:
    """The Triton config protobuf in ``path``; raises ModelRepositoryError when it is missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise ModelRepositoryError(f"{path}: no config.pbtxt")
    return parse(path.read_text(), source=str(path))
