"""benchmarks/gpu_run.py, the prepared GPU run, checked on the CPU (--dry-run) as CI can.

torch is not in any extra (its default wheel is a multi-GB CUDA build); .ci/run installs the CPU
build and sets FACIALATTR_REQUIRE_TORCH=1 so that these tests cannot quietly skip there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facialattr.contract import ModelContract
from facialattr.preprocessing import prepare

if os.environ.get("FACIALATTR_REQUIRE_TORCH"):
    import torch
else:
    torch = pytest.importorskip("torch", reason="torch not installed (.ci/run installs the CPU build)")

from facialattr.benchmarks import gpu_torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
VERSION_DIR = ROOT / "model_repository" / "facial_attributes" / "1"


def shipped_contract() -> ModelContract:
    return ModelContract.from_parameters(json.loads((VERSION_DIR / "contract.json").read_text()))


def smooth_face_like(shape_hw: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth image (JPEG keeps it close) with some noise, so crops and resizes have real work."""
    h, w = shape_hw
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 127 // max(h + w, 1))], -1)
    return np.clip(base + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape_hw", [(218, 178), (33, 129), (300, 200), (57, 41), (128, 128), (1, 1)])
@pytest.mark.parametrize("channel_order", ["RGB", "BGR"])
def test_gpu_preprocessing_matches_the_project_preprocessing_bit_for_bit(shape_hw, channel_order):
    contract = shipped_contract()
    preprocessing = replace(contract.preprocessing, channel_order=channel_order)
    images = [smooth_face_like(shape_hw, seed) for seed in range(3)]
    ours = gpu_torch.prepare_batch([gpu_torch.as_chw_tensor(i) for i in images], preprocessing).numpy()
    expected = np.stack([prepare(i, preprocessing) for i in images])
    np.testing.assert_array_equal(ours, expected)


def test_mixed_sizes_in_one_batch_keep_their_order():
    preprocessing = shipped_contract().preprocessing
    images = [smooth_face_like(s, i) for i, s in enumerate([(218, 178), (64, 80), (218, 178), (90, 90)])]
    ours = gpu_torch.prepare_batch([gpu_torch.as_chw_tensor(i) for i in images], preprocessing).numpy()
    for got, image in zip(ours, images, strict=True):
        np.testing.assert_array_equal(got, prepare(image, preprocessing))


def test_the_torch_runner_matches_onnx_runtime_on_the_shipped_graph_in_fp32():
    from facialattr.onnx_runtime import cpu_session

    preprocessing = shipped_contract().preprocessing
    pixels = np.stack([prepare(smooth_face_like((218, 178), s), preprocessing) for s in range(4)])
    expected = cpu_session(VERSION_DIR / "model.onnx").run(None, {"images": pixels})[0]
    with torch.inference_mode():
        got = gpu_torch.OnnxModule(VERSION_DIR / "model.onnx").eval()(torch.from_numpy(pixels)).numpy()
    assert np.abs(got - expected).max() <= 1e-5


def test_a_graph_with_an_unsupported_op_is_refused_by_name(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph), tmp_path / "m.onnx")
    with pytest.raises(gpu_torch.UnsupportedGraphError, match="Softmax"):
        gpu_torch.OnnxModule(tmp_path / "m.onnx")


@pytest.mark.slow
def test_dry_run_runs_every_step_from_a_plain_checkout_and_writes_the_results(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    for seed in range(8):
        Image.fromarray(smooth_face_like((218, 178), seed)).save(faces / f"{seed:06d}.jpg", quality=90)
    out = tmp_path / "out"
    # As on the GPU machine: the script run as a file, which puts its checkout on sys.path itself, and
    # without the bench extra (Locust is not there; it is hidden from the check the way a missing one is).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    argv = [str(ROOT / "benchmarks" / "gpu_run.py"), "--images", str(faces), "--out", str(out),
            "--model-repository", str(ROOT / "model_repository"), "--dry-run"]
    without_locust = ("import importlib.util, runpy, sys; real = importlib.util.find_spec; "
                      "importlib.util.find_spec = lambda name, *a: None if name == 'locust' else real(name, *a); "
                      f"sys.argv = {argv!r}; runpy.run_path(sys.argv[0], run_name='__main__')")
    run = subprocess.run([sys.executable, "-I", "-c", without_locust],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((out / "gpu_results.json").read_text())
    assert results["environment"]["device"] == "cpu"
    assert results["parity"]["fp32"]["passed"] is True
    assert {r["batch"] for r in results["network"]} == {2, 4}
    assert all(r["images_per_s"] > 0 and len(r["repeats"]) == 3 for r in results["network"])
    assert results["decode"]["pixels_vs_cpu_path"]["max_abs_diff"] == 0
    assert results["end_to_end"]["images_per_s"] > 0
    assert "End to end" in (out / "gpu_results.md").read_text()
