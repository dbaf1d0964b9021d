"""The bytes twin of a served model: encoded images in, the same probabilities out, an error per row.

``facial_attributes_bytes`` takes one encoded image (JPEG, PNG, ... as the file's bytes) per
row and answers what ``facial_attributes`` answers for the client's decoding of the same file:
it decodes and prepares with :func:`facialattr.decoding.decode_and_prepare` (the client's
code, limits included), then runs the pixel model. This module is the one home of its name
(:func:`encoded_model_name`: the naming rule clients use), its tensors and its
``config.pbtxt``, which carries the pixel model's contract parameters so a client reads
the contract from the model it calls.

One image per row (input dims ``[1]``, batch dimension first): encoded images differ in
length, so they cannot share a dense tensor; a BYTES element per row can, and the
dynamic batcher merges rows of any requests as for the pixel model. Triton's ragged
batching would send the same bytes as one flat buffer plus offsets, for no gain here.

A row the server could not decode is not a failed request: its ``error_kind`` and
``error`` are set (both empty for a scored row) and its probabilities are all 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2 as mc

from facialattr import MODEL_NAME, triton_config
from facialattr.contract import ModelContract
from facialattr.errors import ContractError

ENCODED_SUFFIX = "_bytes"
INPUT_NAME = "encoded_images"
OUTPUT_NAME = triton_config.OUTPUT_NAME
ERROR_KIND_NAME = "error_kind"
ERROR_NAME = "error"
# Names the pixel model whose network the bytes model runs (and marks a config as a bytes model).
PIXEL_MODEL_PARAMETER = "pixel_model"
# How the network runs: "bls" (a request to the pixel model inside Triton: works in every
# container, the pixel model keeps its backend and device) or "onnx" (the pixel model's
# model.onnx in the bytes model's own ONNX Runtime session: no second hop, needs onnxruntime).
INFERENCE_PARAMETER = "inference"
INFERENCE_MODES = ("bls", "onnx")
DEFAULT_INFERENCE = "bls"
MODEL_FILENAME = "model.py"
# The repository's model.py: the implementation is the installed package's, so the
# repository holds no second copy of the decoding code.
MODEL_SOURCE = '''"""facial_attributes' bytes twin (Python backend); written by `facialattr export`.

Needs the facialattr package in the Python the backend runs (docs/SERVER_DECODE.md).
"""

from facialattr.serving.encoded_model import TritonPythonModel  # noqa: F401
'''


def encoded_model_name(pixel_model: str = MODEL_NAME) -> str:
    """The bytes twin's name of the pixel model ``pixel_model``: what ``--server-decode`` calls."""
    return f"{pixel_model}{ENCODED_SUFFIX}"


def is_encoded_config(config: mc.ModelConfig) -> bool:
    """True for a bytes model's config (it names its pixel model); False for a pixel model's."""
    return PIXEL_MODEL_PARAMETER in config.parameters


@dataclass(frozen=True)
class EncodedModelConfig:
    """The bytes model's ``config.pbtxt``: Python backend, dynamic batching as for the pixel model.

    Raises ContractError for an unknown ``inference`` mode or counts below 1.
    """

    pixel_model: str = MODEL_NAME
    max_batch_size: int = triton_config.DEFAULT_MAX_BATCH_SIZE
    # Decoding is CPU work whatever device the network runs on; two instances decode two batches at once.
    instance_count: int = triton_config.DEFAULT_INSTANCE_COUNT
    inference: str = DEFAULT_INFERENCE
    dynamic_batching: triton_config.DynamicBatching = triton_config.DynamicBatching()

    def __post_init__(self) -> None:
        if self.inference not in INFERENCE_MODES:
            raise ContractError(f"inference must be one of {INFERENCE_MODES}, got {self.inference!r}")
        if self.max_batch_size < 1 or self.instance_count < 1:
            raise ContractError("max_batch_size and instance_count must be at least 1")

    @property
    def name(self) -> str:
        """The model's name: :func:`encoded_model_name` of the pixel model."""
        return encoded_model_name(self.pixel_model)

    def to_proto(self, contract: ModelContract) -> mc.ModelConfig:
        """The Triton config protobuf serving ``contract`` (its parameters ride along, as on the pixel model)."""
        cfg = mc.ModelConfig(name=self.name, backend="python", max_batch_size=self.max_batch_size)
        cfg.input.add(name=INPUT_NAME, data_type=mc.TYPE_STRING, dims=[1])
        cfg.output.add(name=OUTPUT_NAME, data_type=mc.TYPE_FP32, dims=[contract.num_attributes],
                       label_filename=triton_config.LABEL_FILENAME)
        cfg.output.add(name=ERROR_KIND_NAME, data_type=mc.TYPE_STRING, dims=[1])
        cfg.output.add(name=ERROR_NAME, data_type=mc.TYPE_STRING, dims=[1])
        db, batching = cfg.dynamic_batching, self.dynamic_batching
        db.max_queue_delay_microseconds = batching.max_queue_delay_microseconds
        db.default_queue_policy.max_queue_size = batching.max_queue_size
        db.default_queue_policy.allow_timeout_override = True
        cfg.instance_group.add(count=self.instance_count, kind=mc.ModelInstanceGroup.KIND_CPU)
        for key, value in {**contract.to_parameters(), PIXEL_MODEL_PARAMETER: self.pixel_model,
                           INFERENCE_PARAMETER: self.inference}.items():
            cfg.parameters[key].string_value = value
        return cfg

    @classmethod
    def from_proto(cls, config: mc.ModelConfig) -> tuple[EncodedModelConfig, ModelContract]:
        """(this config, its contract) from a bytes model's Triton config, read from disk or from a server.

        Raises ContractError when it is no bytes model or its tensors are not the ones above.
        """
        if not is_encoded_config(config):
            raise ContractError(f"model {config.name!r} has no {PIXEL_MODEL_PARAMETER!r} parameter: not a bytes model")
        params = {key: value.string_value for key, value in config.parameters.items()}
        contract = ModelContract.from_parameters(params)
        inputs = [(t.name, t.data_type, list(t.dims)) for t in config.input]
        outputs = [(t.name, t.data_type, list(t.dims)) for t in config.output]
        expected_outputs = [(OUTPUT_NAME, mc.TYPE_FP32, [contract.num_attributes]),
                            (ERROR_KIND_NAME, mc.TYPE_STRING, [1]), (ERROR_NAME, mc.TYPE_STRING, [1])]
        if inputs != [(INPUT_NAME, mc.TYPE_STRING, [1])] or outputs != expected_outputs:
            raise ContractError(f"model {config.name!r}: tensors {inputs} -> {outputs} are not a bytes model's "
                                f"({INPUT_NAME} BYTES [1] -> {OUTPUT_NAME}, {ERROR_KIND_NAME}, {ERROR_NAME})")
        db = config.dynamic_batching
        parsed = cls(
            pixel_model=params[PIXEL_MODEL_PARAMETER],
            max_batch_size=config.max_batch_size,
            instance_count=sum(g.count for g in config.instance_group) or 1,
            inference=params.get(INFERENCE_PARAMETER, DEFAULT_INFERENCE),
            dynamic_batching=triton_config.DynamicBatching(
                max_queue_delay_microseconds=db.max_queue_delay_microseconds,
                max_queue_size=db.default_queue_policy.max_queue_size),
        )
        if config.name and config.name != parsed.name:
            raise ContractError(f"model {config.name!r} serves {parsed.pixel_model!r}: its name must be {parsed.name!r}")
        return parsed, contract


# The GPU variant for the official container: DALI decodes (nvJPEG), crops and resizes, an ensemble
# feeds the pixel model. Not the CPU path's pixels (no EXIF orientation, DALI's own resize filter).
DALI_MODEL_NAME = f"{MODEL_NAME}_dali"
DALI_ENSEMBLE_NAME = f"{MODEL_NAME}_dali_ensemble"
DALI_INPUT_NAME = "encoded"
DALI_PIPELINE_FILENAME = "pipeline.py"
_DALI_PIPELINE = '''"""Serialise the DALI pipeline of {model}: `python pipeline.py 1/model.dali` (needs nvidia-dali-cuda120)."""

import sys

from nvidia.dali import fn, pipeline_def, types


@pipeline_def(batch_size={max_batch_size}, num_threads=4, device_id=0)
def preprocess():
    encoded = fn.external_source(name="{input_name}", dtype=types.UINT8)
    images = fn.decoders.image(encoded, device="mixed", output_type=types.RGB)
    # The contract's crop box as fractions (top, left) and (height, width), then an antialiased resize.
    images = fn.slice(images, rel_start=[{top}, {left}], rel_shape=[{height}, {width}], axis_names="HW")
    return fn.resize(images, resize_y={size_h}, resize_x={size_w}, antialias=True, dtype=types.UINT8)


preprocess().serialize(filename=sys.argv[1])
'''


def dali_configs(contract: ModelContract, *, pixel_model: str = MODEL_NAME,
                 max_batch_size: int = triton_config.DEFAULT_MAX_BATCH_SIZE) -> dict[str, mc.ModelConfig]:
    """Triton configs of the DALI preprocessing model and of the ensemble (DALI, then ``pixel_model``), by name."""
    h, w = contract.preprocessing.size_hw
    dali = mc.ModelConfig(name=DALI_MODEL_NAME, backend="dali", max_batch_size=max_batch_size)
    # Encoded images differ in length: the DALI backend takes them as a ragged batch.
    dali.input.add(name=DALI_INPUT_NAME, data_type=mc.TYPE_UINT8, dims=[-1], allow_ragged_batch=True)
    dali.output.add(name=triton_config.INPUT_NAME, data_type=mc.TYPE_UINT8, dims=[h, w, 3])
    dali.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_GPU)
    dali.dynamic_batching.max_queue_delay_microseconds = triton_config.DynamicBatching().max_queue_delay_microseconds
    ensemble = mc.ModelConfig(name=DALI_ENSEMBLE_NAME, platform="ensemble", max_batch_size=max_batch_size)
    ensemble.input.add(name=DALI_INPUT_NAME, data_type=mc.TYPE_UINT8, dims=[-1])
    ensemble.output.add(name=OUTPUT_NAME, data_type=mc.TYPE_FP32, dims=[contract.num_attributes])
    decode = ensemble.ensemble_scheduling.step.add(model_name=DALI_MODEL_NAME, model_version=-1)
    decode.input_map[DALI_INPUT_NAME] = DALI_INPUT_NAME
    decode.output_map[triton_config.INPUT_NAME] = "prepared_images"
    network = ensemble.ensemble_scheduling.step.add(model_name=pixel_model, model_version=-1)
    network.input_map[triton_config.INPUT_NAME] = "prepared_images"
    network.output_map[OUTPUT_NAME] = OUTPUT_NAME
    for key, value in contract.to_parameters().items():
        ensemble.parameters[key].string_value = value
    return {DALI_MODEL_NAME: dali, DALI_ENSEMBLE_NAME: ensemble}


def dali_pipeline_source(contract: ModelContract, *, max_batch_size: int = triton_config.DEFAULT_MAX_BATCH_SIZE) -> str:
    """``pipeline.py`` that serialises the DALI model's ``model.dali`` for ``contract`` (run in the container)."""
    left, top, right, bottom = contract.preprocessing.crop_box_xyxy
    h, w = contract.preprocessing.size_hw
    return _DALI_PIPELINE.format(model=DALI_MODEL_NAME, max_batch_size=max_batch_size, input_name=DALI_INPUT_NAME,
                                 top=top, left=left, height=bottom - top, width=right - left, size_h=h, size_w=w)
