"""``facialattr export`` end to end: a small trained Keras model into a real repository, served by the real Triton.

Two small Keras models are built once per module (TensorFlow is slow to start) and
exported as versions 1 and 2 of one repository; the other tests reuse them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from testsupport import start_server
from tritonclient.grpc import model_config_pb2 as mc

from facialattr import MODEL_NAME, repository, triton_config
from facialattr.app import cli
from facialattr.contract import CELEBA_ATTRIBUTES, ModelContract, Preprocessing
from facialattr.errors import ExportError, ParityError
from facialattr.export import convert, exporter, images, parity
from facialattr.export.exporter import INT8_MODEL_NAME, ExportOptions, export_model
from facialattr.export.quantize import DEFAULT_RECIPES, Int8Criteria, Int8Report, mean_accuracies

SIZE = 32
MAX_BATCH = 8
SUMMARY = {"training_data": "random noise, 2 fit steps", "val_metrics": {"mean_accuracy": 0.5}}


def build_keras_model(*, seed: int, outputs: int = 40, size: int = SIZE):
    """A tiny conv net with the served interface; a couple of fit steps give BatchNorm real statistics."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), dtype="uint8", name="images")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    for filters in (8, 16):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(outputs, activation="sigmoid")(x))
    model.compile("adam", "binary_crossentropy")
    rng = np.random.default_rng(seed)
    model.fit(rng.integers(0, 256, (64, size, size, 3), dtype=np.uint8),
              rng.integers(0, 2, (64, outputs)).astype("float32"), epochs=2, batch_size=32, verbose=0)
    return model


def save_run(folder: Path, model, *, size: int = SIZE) -> Path:
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    contract = ModelContract(preprocessing=Preprocessing(size_hw=(size, size)), summary=SUMMARY)
    (folder / "contract.json").write_text(json.dumps(contract.to_parameters()))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    models = [build_keras_model(seed=seed) for seed in (0, 1)]
    return [(save_run(root / f"run{i}", m), m) for i, m in enumerate(models)]


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """Both runs exported in turn into one repository: versions 1 and 2."""
    repo = tmp_path_factory.mktemp("repo") / "model_repository"
    options = ExportOptions(repository=repo, max_batch_size=MAX_BATCH)
    results = [export_model(run, options) for run, _ in runs]
    return repo, results


@pytest.fixture(scope="module")
def test_images():
    return images.sample_photos(Preprocessing(size_hw=(SIZE, SIZE)), count=MAX_BATCH + 3, seed=7)


def test_export_writes_model_config_labels_and_contract_with_the_model_summary(exported):
    repo, results = exported
    folder = repo / MODEL_NAME
    assert results[-1].version_dir == folder / "2"
    entry = repository.load_model(repo)
    config = triton_config.load(folder / "config.pbtxt")
    assert (config.max_batch_size, config.platform) == (MAX_BATCH, "onnxruntime_onnx")
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("images", mc.TYPE_UINT8, [SIZE, SIZE, 3])]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [("probabilities", mc.TYPE_FP32, [40])]
    assert config.HasField("dynamic_batching") and len(config.instance_group) == 1
    assert repository.read_labels(folder / "labels.txt") == CELEBA_ATTRIBUTES
    summary = entry.contract.summary
    assert summary["training_data"] == SUMMARY["training_data"] and summary["val_metrics"] == SUMMARY["val_metrics"]
    assert summary["export"]["opset"] == 17 and summary["export"]["parity"]["max_abs_diff"] <= 1e-4
    per_version = ModelContract.from_parameters(json.loads((folder / "2" / "contract.json").read_text()))
    assert per_version.summary == summary


def test_version_folders_increment_and_earlier_versions_stay(exported):
    repo, results = exported
    assert repository.version_numbers(repo / MODEL_NAME) == (1, 2)
    assert [r.version_dir.name for r in results] == ["1", "2"]


def test_onnx_file_names_its_tensors_and_has_a_dynamic_batch_dimension(exported):
    repo, _ = exported
    graph = onnx.load(repo / MODEL_NAME / "2" / "model.onnx").graph
    (inp,), (out,) = graph.input, graph.output
    assert (inp.name, inp.type.tensor_type.elem_type) == ("images", onnx.TensorProto.UINT8)
    assert (out.name, out.type.tensor_type.elem_type) == ("probabilities", onnx.TensorProto.FLOAT)
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", SIZE, SIZE, 3]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 40]


def test_parity_was_checked_at_batch_1_and_at_max_batch_size(exported):
    _, results = exported
    report = results[-1].parity
    assert set(report.max_abs_diff_by_batch) == {1, MAX_BATCH}
    assert report.passed and report.max_abs_diff <= 1e-4
    assert report.keras_output_std > 1e-4  # the check compared image-dependent outputs


def test_embedded_triton_serves_the_fresh_version_and_matches_keras(exported, runs, test_images):
    repo, _ = exported
    newest_keras, older_keras = runs[1][1], runs[0][1]
    expected = np.asarray(newest_keras(test_images, training=False))
    assert np.abs(expected - np.asarray(older_keras(test_images, training=False))).max() > 1e-3
    server = start_server(repo)
    try:
        client = grpcclient.InferenceServerClient(server.config.grpc_url)
        assert client.is_model_ready(MODEL_NAME, "2")
        contract = ModelContract.from_model_config(client.get_model_config(MODEL_NAME).config)
        assert contract.summary["training_data"] == SUMMARY["training_data"]
        got = []
        for batch in (test_images[:1], test_images[1:]):  # batch 1 and more than max_batch_size rows in 2 calls
            for start in range(0, len(batch), MAX_BATCH):
                part = batch[start:start + MAX_BATCH]
                inp = grpcclient.InferInput("images", list(part.shape), "UINT8")
                inp.set_data_from_numpy(part)
                got.append(client.infer(MODEL_NAME, [inp]).as_numpy("probabilities"))
    finally:
        server.stop()
    np.testing.assert_allclose(np.concatenate(got), expected, atol=1e-4)


def perturb_largest_initializer(source: Path, target: Path) -> None:
    model = onnx.load(source)
    weights = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    array = onnx.numpy_helper.to_array(weights)
    weights.CopyFrom(onnx.numpy_helper.from_array(array + np.float32(0.05), weights.name))
    onnx.save(model, target)


def test_parity_gate_passes_the_export_and_fails_a_tampered_onnx(exported, runs, test_images, tmp_path):
    repo, _ = exported
    model = runs[1][1]
    good = repo / MODEL_NAME / "2" / "model.onnx"
    assert parity.check_parity(model, good, test_images, max_batch_size=MAX_BATCH).passed
    perturb_largest_initializer(good, tmp_path / "tampered.onnx")
    with pytest.raises(ParityError, match="does not reproduce"):
        parity.check_parity(model, tmp_path / "tampered.onnx", test_images, max_batch_size=MAX_BATCH)


def test_failed_parity_gate_writes_nothing_to_the_repository(runs, tmp_path, monkeypatch):
    real_convert = convert.convert_to_onnx

    def convert_then_tamper(model, target, contract, **kwargs):
        real_convert(model, target, contract, **kwargs)
        perturb_largest_initializer(target, target)
        return target

    monkeypatch.setattr(convert, "convert_to_onnx", convert_then_tamper)
    with pytest.raises(ParityError):
        export_model(runs[0][0], ExportOptions(repository=tmp_path / "repo", max_batch_size=MAX_BATCH))
    assert not (tmp_path / "repo" / MODEL_NAME).exists()


def test_cli_replace_regenerates_the_model_folder_completely_with_the_requested_config(exported, runs, tmp_path):
    repo = tmp_path / "model_repository"
    shutil.copytree(exported[0], repo)
    (repo / INT8_MODEL_NAME).mkdir()  # a stale variant of the replaced model must go too
    code = cli.main(["export", str(runs[0][0] / "model.keras"), "--contract", str(runs[0][0] / "contract.json"),
                     "--model-repository", str(repo), "--replace", "--max-batch-size", str(MAX_BATCH),
                     "--tensorrt-fp16", "--instances", "2"])
    assert code == cli.EXIT_OK
    assert repository.version_numbers(repo / MODEL_NAME) == (1,)
    # The stale INT8 folder is gone; the bytes twin is rewritten with the new contract.
    assert sorted(p.name for p in repo.iterdir()) == [MODEL_NAME, f"{MODEL_NAME}_bytes"]
    entry = repository.load_model(repo)
    assert repository.load_encoded_model(repo).contract == entry.contract
    assert entry.contract.summary["export"]["source"] == "run0/model.keras"  # the run folder, no machine path
    (accelerator,) = entry.config.optimization.execution_accelerators.gpu_execution_accelerator
    assert (accelerator.name, accelerator.parameters["precision_mode"]) == ("tensorrt", "FP16")
    assert [g.count for g in entry.config.instance_group] == [2]


def write_bad_run(folder: Path, case: str, runs) -> Path:
    folder.mkdir()
    good = runs[0][0]
    if case != "no model.keras":
        shutil.copyfile(good / "model.keras", folder / "model.keras")
    if case == "contract not JSON":
        (folder / "contract.json").write_text("{not json")
    elif case == "contract lacks parameters":
        (folder / "contract.json").write_text(json.dumps({"attribute_names": "a,b"}))
    elif case != "no contract.json":
        shutil.copyfile(good / "contract.json", folder / "contract.json")
    return folder


@pytest.mark.parametrize(("case", "message"), [
    ("no contract.json", "contract.json"),
    ("no model.keras", "has no model.keras"),
    ("contract not JSON", "not a readable JSON contract"),
    ("contract lacks parameters", "lacks contract parameters"),
])
def test_bad_training_run_gives_a_clear_error_before_any_conversion(case, message, runs, tmp_path):
    run = write_bad_run(tmp_path / "run", case, runs)
    with pytest.raises(ExportError, match=message):
        export_model(run, ExportOptions(repository=tmp_path / "repo"))
    assert not (tmp_path / "repo").exists()


def test_keras_file_without_contract_is_refused_and_the_cli_exits_fatal(runs, tmp_path):
    with pytest.raises(ExportError, match="needs its contract"):
        exporter.resolve_sources(runs[0][0] / "model.keras")
    code = cli.main(["export", str(runs[0][0] / "model.keras"), "--model-repository", str(tmp_path / "repo")])
    assert code == cli.EXIT_FATAL and not (tmp_path / "repo").exists()


@pytest.mark.parametrize(("outputs", "size", "message"), [
    (10, SIZE, r"output shape \(None, 10\) disagrees with the contract's 40 attributes"),
    (40, 24, "input shape .* disagrees with the contract's input_size_hw 32,32"),
])
def test_model_that_disagrees_with_its_contract_is_refused(outputs, size, message, tmp_path):
    run = save_run(tmp_path / "run", build_keras_model(seed=2, outputs=outputs, size=size), size=SIZE)
    with pytest.raises(ExportError, match=message):
        export_model(run, ExportOptions(repository=tmp_path / "repo"))


def test_existing_version_or_a_new_input_size_is_refused_without_replace(exported):
    repo, _ = exported
    contract = ModelContract(preprocessing=Preprocessing(size_hw=(SIZE, SIZE)))
    with pytest.raises(ExportError, match="exists; choose another --version"):
        exporter.check_publishable(repo, contract, version=2)
    bigger = ModelContract(preprocessing=Preprocessing(size_hw=(48, 48)))
    with pytest.raises(ExportError, match="older versions would stop working"):
        exporter.check_publishable(repo, bigger, version=None)


def make_celeba_folder(root: Path, *, count: int, seed: int = 0) -> Path:
    """A CelebA-layout folder (all val) of 178x218 JPEGs made from sample photos, with random labels."""
    import cv2

    rng = np.random.default_rng(seed)
    (root / "img_align_celeba").mkdir(parents=True)
    photos = images.sample_photos(Preprocessing(size_hw=(218, 178), crop_box_xyxy=(0, 0, 1, 1)), count=count, seed=seed)
    names = [f"{i + 1:06d}.jpg" for i in range(count)]
    for name, photo in zip(names, photos, strict=True):
        cv2.imwrite(str(root / "img_align_celeba" / name), photo[..., ::-1])
    (root / "list_eval_partition.txt").write_text("".join(f"{n} 1\n" for n in names))
    labels = rng.choice(["-1", "1"], size=(count, 40))
    rows = [f"{n} {' '.join(row)}\n" for n, row in zip(names, labels, strict=True)]
    (root / "list_attr_celeba.txt").write_text(f"{count}\n{' '.join(CELEBA_ATTRIBUTES)}\n" + "".join(rows))
    return root


@pytest.fixture(scope="module")
def celeba_folder(tmp_path_factory):
    return make_celeba_folder(tmp_path_factory.mktemp("celeba"), count=40)


@pytest.mark.parametrize(("criteria", "published"), [
    (Int8Criteria(max_accuracy_drop_pt=100, max_balanced_accuracy_drop_pt=100, min_speedup=0), True),
    (Int8Criteria(max_accuracy_drop_pt=-100), False),
])
def test_int8_variant_is_published_only_when_its_gate_passes(criteria, published, runs, celeba_folder, tmp_path):
    options = ExportOptions(repository=tmp_path / "repo", max_batch_size=MAX_BATCH, int8_calibration=celeba_folder,
                            int8_calibration_images=16, int8_criteria=criteria, version=3,
                            parity_images=celeba_folder / "img_align_celeba")
    result = export_model(runs[0][0], options)
    assert result.version_dir.name == "3" and result.parity.passed and result.parity.num_images == MAX_BATCH
    # A failing recipe hands over to the next one; the first passing one stops the search.
    assert len(result.int8_attempts) == (1 if published else len(DEFAULT_RECIPES))
    report = result.int8
    assert report.num_eval_images == 24 and report.num_calibration_images == 16
    assert report.fp32_images_per_s > 0 and report.int8_images_per_s > 0 and 0 <= report.int8_mean_accuracy <= 1
    assert report.passed is published and (result.int8_version_dir is not None) is published
    assert (tmp_path / "repo" / INT8_MODEL_NAME).exists() is published
    if published:
        entry = repository.load_model(tmp_path / "repo", INT8_MODEL_NAME)
        assert entry.versions == (1,)  # its own sequence, not the FP32 model's --version
        assert [g.kind for g in entry.config.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
        assert entry.contract.summary["int8"]["passed"] and entry.contract.summary["quantized_from"]["version"] == 3
        graph = onnx.load(entry.onnx_path()).graph
        assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
        producer = {out: node for node in graph.node for out in node.output}
        sigmoid = producer["probabilities"]
        dense = producer[sigmoid.input[0]]
        assert (sigmoid.op_type, dense.op_type) == ("Sigmoid", "Gemm")
        assert dense.input[1] not in producer  # the head stays FP32: its weights are a plain initializer, no DequantizeLinear


@pytest.mark.parametrize(("probabilities", "labels", "expected"), [
    ([[0.9, 0.1], [0.2, 0.8]], [[1, 0], [0, 1]], (1.0, 1.0)),
    ([[0.9, 0.9], [0.9, 0.9]], [[1, 0], [0, 1]], (0.5, 0.5)),
    # Attribute 2 has no positives: its balanced accuracy falls back to its accuracy.
    ([[0.9, 0.1], [0.9, 0.9], [0.1, 0.1], [0.1, 0.1]], [[1, 0], [1, 0], [0, 0], [1, 0]], (0.75, (5 / 6 + 0.75) / 2)),
])
def test_mean_accuracy_and_balanced_accuracy_average_over_attributes(probabilities, labels, expected):
    got = mean_accuracies(np.array(probabilities), np.array(labels), [0.5, 0.5])
    assert got == pytest.approx(expected)


def make_report(**changes) -> Int8Report:
    fields = dict(num_eval_images=100, num_calibration_images=10, fp32_mean_accuracy=0.90, int8_mean_accuracy=0.899,
                  fp32_mean_balanced_accuracy=0.80, int8_mean_balanced_accuracy=0.798, fp32_images_per_s=100.0,
                  int8_images_per_s=180.0, benchmark_batch_size=32, criteria=Int8Criteria())
    return Int8Report(**{**fields, **changes})


@pytest.mark.parametrize(("changes", "failure"), [
    ({}, None),
    ({"int8_mean_accuracy": 0.896}, "mean accuracy drops 0.40 pt"),
    ({"int8_mean_balanced_accuracy": 0.794}, "mean balanced accuracy drops 0.60 pt"),
    ({"int8_images_per_s": 100.0}, "INT8 is not fast enough (1.00x FP32, needs 1.5x)"),
    ({"int8_images_per_s": 149.0}, "INT8 is not fast enough (1.49x FP32, needs 1.5x)"),
])
def test_int8_gate_names_each_failed_criterion(changes, failure):
    report = make_report(**changes)
    failures = report.failures()
    assert report.passed is (failure is None)
    assert len(failures) == (0 if failure is None else 1)
    assert failure is None or failure in failures[0]
