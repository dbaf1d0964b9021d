"""Read, validate and write the Triton model repository that serving and clients share."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from facialattr import MODEL_NAME, encoded, triton_config
from facialattr.contract import ModelContract
from facialattr.errors import ContractError, ModelRepositoryError
from facialattr.files import SHARED_FILE_MODE, atomic_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    """One validated model folder of a repository.

    ``config`` is the parsed ``config.pbtxt`` protobuf; ``model_config`` the same config typed
    (tensor names, ``max_batch_size``, batching); ``contract`` what Triton's config does not hold.
    """

    path: Path
    config: mc.ModelConfig
    model_config: triton_config.ModelConfig
    contract: ModelContract
    versions: tuple[int, ...]

    @property
    def served(self) -> triton_config.ServedModel:
        """Config and contract together, as a client reads them from the server."""
        return triton_config.ServedModel(config=self.model_config, contract=self.contract)

    @property
    def latest_version(self) -> int:
        """The highest version number: the one Triton serves."""
        return self.versions[-1]

    def onnx_path(self, version: int | None = None) -> Path:
        """``model.onnx`` of ``version`` (default: the latest)."""
        return self.path / str(version or self.latest_version) / triton_config.ONNX_FILENAME


def version_numbers(model_path: Path) -> tuple[int, ...]:
    """The numbered version folders of a model folder, ascending."""
    return tuple(sorted(int(p.name) for p in model_path.iterdir() if p.is_dir() and p.name.isdigit()))


def read_labels(path: Path) -> tuple[str, ...]:
    """The attribute names in a ``labels.txt``, one a line (blank lines skipped)."""
    return tuple(line.strip() for line in Path(path).read_text().splitlines() if line.strip())


def load_model(repository: Path, name: str = MODEL_NAME) -> ModelEntry:
    """Validate ``repository/name`` and return its config, contract and versions.

    Raises ModelRepositoryError naming the file when the folder, ``config.pbtxt``, a version's
    ``model.onnx`` or ``labels.txt`` is missing, or the config, contract and labels disagree.
    """
    repository = Path(repository)
    if not repository.is_dir():
        raise ModelRepositoryError(f"{repository}: model repository not found")
    path = repository / name
    if not path.is_dir():
        raise ModelRepositoryError(f"{repository}: has no model folder {name!r}")
    config = triton_config.load(path / "config.pbtxt")
    if config.name and config.name != name:
        raise ModelRepositoryError(f"{path}/config.pbtxt names model {config.name!r}, folder is {name!r}")
    try:
        served = triton_config.ServedModel.from_proto(config)
    except ContractError as exc:
        raise ModelRepositoryError(f"{path}/config.pbtxt: {exc}") from exc
    versions = version_numbers(path)
    if not versions:
        raise ModelRepositoryError(f"{path}: no numbered version folder")
    missing = [v for v in versions if not (path / str(v) / triton_config.ONNX_FILENAME).is_file()]
    if missing:
        raise ModelRepositoryError(f"{path}: version(s) {missing} have no {triton_config.ONNX_FILENAME}")
    labels_path = path / triton_config.LABEL_FILENAME
    if not labels_path.is_file():
        raise ModelRepositoryError(f"{path}: no {triton_config.LABEL_FILENAME}")
    if read_labels(labels_path) != served.contract.attribute_names:
        raise ModelRepositoryError(f"{labels_path} disagrees with the attribute_names parameter")
    return ModelEntry(path=path, config=config, model_config=served.config, contract=served.contract, versions=versions)


def write_model(
    repository: Path,
    onnx_file: Path,
    contract: ModelContract,
    *,
    model_config: triton_config.ModelConfig | None = None,
    version: int | None = None,
) -> Path:
    """Add ``onnx_file`` as a new version and rewrite config and labels. Returns the version folder.

    ``version=None`` takes the next free number, so earlier versions stay servable;
    an explicit version that already exists is refused (ModelRepositoryError) rather than overwritten.
    ``model_config`` (default: :class:`~facialattr.triton_config.ModelConfig`'s defaults) names the model.
    """
    model_config = model_config or triton_config.ModelConfig()
    path = Path(repository) / model_config.name
    path.mkdir(parents=True, exist_ok=True)
    existing = version_numbers(path)
    if version is None:
        version = (existing[-1] + 1) if existing else 1
    elif version in existing:
        raise ModelRepositoryError(f"{path}/{version} exists; choose another --version")
    target = path / str(version)
    target.mkdir()
    shutil.copyfile(onnx_file, target / triton_config.ONNX_FILENAME)
    _write_text(path / triton_config.LABEL_FILENAME, "\n".join(contract.attribute_names) + "\n")
    _write_text(path / "config.pbtxt", triton_config.render(model_config.to_proto(contract)))
    log.info("wrote %s (model version %d)", target, version)
    return target


@dataclass(frozen=True)
class EncodedEntry:
    """One validated bytes-model folder (:mod:`facialattr.encoded`): its config, contract and versions."""

    path: Path
    config: mc.ModelConfig
    encoded_config: encoded.EncodedModelConfig
    contract: ModelContract
    versions: tuple[int, ...]


def is_encoded_folder(path: Path) -> bool:
    """True when ``path`` holds a bytes model's config (raises ModelRepositoryError for an unreadable one)."""
    config_path = Path(path) / "config.pbtxt"
    return config_path.is_file() and encoded.is_encoded_config(triton_config.load(config_path))


def load_encoded_model(repository: Path, name: str = encoded.encoded_model_name()) -> EncodedEntry:
    """Validate the bytes model ``repository/name`` against the pixel model it names.

    Raises ModelRepositoryError naming the file when its config or a version's model.py is missing,
    its tensors are not a bytes model's, or its contract differs from its pixel model's (an export
    rewrote one and not the other).
    """
    path = Path(repository) / name
    config = triton_config.load(path / "config.pbtxt")
    try:
        parsed, contract = encoded.EncodedModelConfig.from_proto(config)
    except ContractError as exc:
        raise ModelRepositoryError(f"{path}/config.pbtxt: {exc}") from exc
    pixel = load_model(repository, parsed.pixel_model)
    if contract != pixel.contract:
        raise ModelRepositoryError(f"{path}/config.pbtxt: its contract differs from {parsed.pixel_model!r}'s; "
                                   "re-export to write both")
    versions = version_numbers(path)
    missing = [v for v in versions if not (path / str(v) / encoded.MODEL_FILENAME).is_file()]
    if not versions or missing:
        raise ModelRepositoryError(f"{path}: needs numbered version folders with {encoded.MODEL_FILENAME} "
                                   f"(missing in {missing or 'all'})")
    return EncodedEntry(path=path, config=config, encoded_config=parsed, contract=contract, versions=versions)


def write_encoded_model(repository: Path, contract: ModelContract, *,
                        config: encoded.EncodedModelConfig | None = None) -> Path:
    """Write (or rewrite) the bytes twin of ``config.pixel_model`` serving ``contract``; returns its folder.

    One version, whose model.py imports the installed implementation, so a rewrite only
    changes the config and labels (the contract), never code.
    """
    config = config or encoded.EncodedModelConfig()
    path = Path(repository) / config.name
    (path / "1").mkdir(parents=True, exist_ok=True)
    _write_text(path / "1" / encoded.MODEL_FILENAME, encoded.MODEL_SOURCE)
    _write_text(path / triton_config.LABEL_FILENAME, "\n".join(contract.attribute_names) + "\n")
    _write_text(path / "config.pbtxt", triton_config.render(config.to_proto(contract)))
    log.info("wrote %s (bytes twin of %s)", path, config.pixel_model)
    return path


def write_dali_models(folder: Path, contract: ModelContract, *, max_batch_size: int = triton_config.DEFAULT_MAX_BATCH_SIZE) -> list[Path]:
    """Write the DALI variant (:func:`facialattr.encoded.dali_configs`) into ``folder``; returns the model folders.

    For the official GPU container, beside the pixel model: each config, an empty version folder,
    and the DALI model's ``pipeline.py`` that builds its ``1/model.dali`` there. Kept out of the
    served repository: the embedded server has no DALI backend.
    """
    written = []
    for name, config in encoded.dali_configs(contract, max_batch_size=max_batch_size).items():
        path = Path(folder) / name
        (path / "1").mkdir(parents=True, exist_ok=True)
        _write_text(path / "config.pbtxt", triton_config.render(config))
        written.append(path)
    _write_text(Path(folder) / encoded.DALI_MODEL_NAME / encoded.DALI_PIPELINE_FILENAME,
                encoded.dali_pipeline_source(contract, max_batch_size=max_batch_size))
    return written


def _write_text(path: Path, text: str) -> None:
    # Shared, not private: a server running as another user reads the repository.
    with atomic_file(path, mode=SHARED_FILE_MODE, text=True) as f:
        f.write(text)
