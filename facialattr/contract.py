"""The model contract: what a client needs to feed the model and read its answer that
Triton's own config does not say: preprocessing, attribute names, thresholds, priors.

It travels inside ``config.pbtxt`` as Triton model parameters, so a client learns
it from the server (``get_model_config``) and never from a second, hand-kept copy.
Training writes it, export puts it in the repository, clients and the embedded
server read it back with :meth:`ModelContract.from_model_config`. Tensor names and
``max_batch_size`` are Triton's fields: :class:`facialattr.triton_config.ModelConfig` owns them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facialattr.errors import ContractError

# CelebA order (list_attr_celeba.txt, line 2); the output tensor follows it.
CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald",
    "Bangs", "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair",
    "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)

# CelebA's aligned images are 178x218 (w x h); the face square sits 20 px below the
# top. Stored as fractions so the same crop applies to any image framed the CelebA way.
CELEBA_ALIGNED_SIZE_HW = (218, 178)
CELEBA_FACE_CROP_XYXY = (0.0, 20 / 218, 1.0, 198 / 218)

CONTRACT_VERSION = "1"


@dataclass(frozen=True)
class Preprocessing:
    """How a face image becomes the model's uint8 input tensor.

    ``crop_box_xyxy`` is (left, top, right, bottom) as fractions of the source
    image's width and height; the crop is resized (area interpolation) to
    ``size_hw``. Pixels stay uint8 in ``channel_order``; scaling to [-1, 1]
    happens inside the model graph, so no client can get it wrong.
    """

    size_hw: tuple[int, int] = (128, 128)
    crop_box_xyxy: tuple[float, float, float, float] = CELEBA_FACE_CROP_XYXY
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        if len(self.size_hw) != 2 or min(self.size_hw) < 8:
            raise ContractError(f"size_hw must be two sizes >= 8, got {self.size_hw}")
        left, top, right, bottom = self.crop_box_xyxy
        if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
            raise ContractError(f"crop_box_xyxy must be fractions with left<right, top<bottom: {self.crop_box_xyxy}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ContractError(f"channel_order must be RGB or BGR, got {self.channel_order!r}")


@dataclass(frozen=True)
class ModelContract:
    """The served model's attributes, preprocessing and per-attribute calibration.

    Raises ContractError when attribute names are empty or repeated, or when thresholds or
    priors do not hold one value strictly between 0 and 1 per attribute.
    """

    attribute_names: tuple[str, ...] = CELEBA_ATTRIBUTES
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    thresholds: tuple[float, ...] = (0.5,) * len(CELEBA_ATTRIBUTES)
    priors: tuple[float, ...] = (0.5,) * len(CELEBA_ATTRIBUTES)
    summary: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.attribute_names)
        if n == 0 or len(set(self.attribute_names)) != n:
            raise ContractError("attribute_names must be non-empty and unique")
        for name, values in (("thresholds", self.thresholds), ("priors", self.priors)):
            if len(values) != n:
                raise ContractError(f"{name} has {len(values)} values for {n} attributes")
            if not all(0.0 < v < 1.0 for v in values):
                raise ContractError(f"{name} must lie strictly between 0 and 1")

    @property
    def num_attributes(self) -> int:
        """How many attributes (probabilities) the model outputs per image."""
        return len(self.attribute_names)

    def to_parameters(self) -> dict[str, str]:
        """The contract as Triton model parameters (all string values); ``contract.json`` holds the same dict."""
        p = self.preprocessing
        return {
            "contract_version": CONTRACT_VERSION,
            "attribute_names": ",".join(self.attribute_names),
            "input_size_hw": _join(p.size_hw),
            "crop_box_xyxy": _join(f"{v:.6f}" for v in p.crop_box_xyxy),
            "channel_order": p.channel_order,
            "input_dtype": "uint8",
            "thresholds": _join(f"{v:.6f}" for v in self.thresholds),
            "priors": _join(f"{v:.6f}" for v in self.priors),
            "model_summary": json.dumps(dict(self.summary), sort_keys=True),
        }

    @classmethod
    def from_parameters(cls, params: Mapping[str, str]) -> ModelContract:
        """Rebuild the contract from Triton parameters (as strings), e.g. a run's ``contract.json``.

        Keys other than the contract's are ignored (``contract.json`` files written before the
        tensor names moved to the Triton config read the same). Raises ContractError when a
        contract parameter is missing or malformed, or the contract version is not supported.
        """
        missing = [k for k in ("attribute_names", "input_size_hw", "crop_box_xyxy", "thresholds", "priors") if k not in params]
        if missing:
            raise ContractError(f"model config lacks contract parameters: {', '.join(missing)}")
        version = params.get("contract_version", CONTRACT_VERSION)
        if version != CONTRACT_VERSION:
            raise ContractError(f"contract_version {version!r} is not supported (expected {CONTRACT_VERSION})")
        try:
            preprocessing = Preprocessing(
                size_hw=tuple(int(v) for v in params["input_size_hw"].split(",")),  # type: ignore[arg-type]
                crop_box_xyxy=tuple(float(v) for v in params["crop_box_xyxy"].split(",")),  # type: ignore[arg-type]
                channel_order=params.get("channel_order", "RGB"),
            )
            return cls(
                attribute_names=tuple(params["attribute_names"].split(",")),
                preprocessing=preprocessing,
                thresholds=tuple(float(v) for v in params["thresholds"].split(",")),
                priors=tuple(float(v) for v in params["priors"].split(",")),
                summary=json.loads(params.get("model_summary", "{}")),
            )
        except (ValueError, TypeError) as exc:
            raise ContractError(f"malformed contract parameter: {exc}") from exc

    @classmethod
    def from_model_config(cls, config: Any) -> ModelContract:
        """From a ``model_config_pb2.ModelConfig`` (read from disk or from the server).

        Checks the config's tensor shapes against the contract: raises ContractError when the
        model has other than one input and one output, or their dims disagree with
        ``input_size_hw`` (pixels) or the number of attributes.
        """
        if len(config.input) != 1 or len(config.output) != 1:
            raise ContractError(f"model {config.name!r} must have one input and one output")
        params = {key: value.string_value for key, value in config.parameters.items()}
        contract = cls.from_parameters(params)
        h, w = contract.preprocessing.size_hw
        if list(config.input[0].dims) not in ([h, w, 3], [-1, -1, 3]):
            raise ContractError(f"input dims {list(config.input[0].dims)} disagree with input_size_hw {h},{w}")
        if list(config.output[0].dims) != [contract.num_attributes]:
            raise ContractError(f"output dims {list(config.output[0].dims)} disagree with {contract.num_attributes} attributes")
        return contract


def logits(probabilities: Any, *, eps: float) -> np.ndarray:
    """The served sigmoid ``probabilities`` back as logits (float64), clipped to [eps, 1 - eps] first.

    Lift ranking, INT8's head-bias correction and ``undo_weighting`` all work in logit space;
    ``eps`` keeps the result finite where a float32 sigmoid saturated at 0 or 1.
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def _join(values: Sequence[Any] | Any) -> str:
    return ",".join(str(v) for v in values)
