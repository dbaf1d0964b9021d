"""Shared fixtures: a tiny real ONNX model in a real repository, served by the real embedded Triton,
small real JPEG faces-to-be and the served model's reference outputs.

Helpers (free_ports, make_tiny_repository, start_server) live in tests/testsupport.py:
``from testsupport import make_tiny_repository``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from testsupport import make_tiny_repository, start_server


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory) -> Path:
    return make_tiny_repository(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def triton_server(tiny_repository):
    """One real embedded Triton for the whole session, serving the tiny model."""
    server = start_server(tiny_repository)
    yield server
    server.stop()


# Half CelebA's aligned size: same framing and crop fractions, a quarter of the pixels.
SMALL_FACE_HW = (109, 89)


def write_test_jpegs(folder: Path, n: int, *, seed: int = 0, size_hw=SMALL_FACE_HW, prefix: str = "img") -> list[Path]:
    """``n`` distinct smooth colour images saved as real JPEG files (sorted names)."""
    import cv2
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size_hw
    paths = []
    for i in range(n):
        coarse = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
        image = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        path = folder / f"{prefix}{i:05d}.jpg"
        Image.fromarray(image).save(path, quality=92)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def reference_session(tiny_repository):
    """Direct ONNX Runtime on the served model file: what every client answer must equal."""
    from facialattr import repository
    from facialattr.onnx_runtime import cpu_session

    entry = repository.load_model(tiny_repository)
    return cpu_session(entry.onnx_path()), entry.served


def reference_probabilities(reference_session, paths) -> dict[str, np.ndarray]:
    from facialattr.client.preprocess import load_and_prepare

    session, served = reference_session
    batch = np.stack([load_and_prepare(p, served.contract.preprocessing) for p in paths])
    out = session.run([served.config.output_name], {served.config.input_name: batch})[0]
    return {str(p): row for p, row in zip(paths, out, strict=True)}


@pytest.fixture(scope="session")
def make_jpegs():
    """The JPEG writer as a fixture (test modules cannot import conftest in importlib mode)."""
    return write_test_jpegs


@pytest.fixture(scope="session")
def reference(reference_session):
    """paths -> {str(path): probabilities} straight from ONNX Runtime."""
    return lambda paths: reference_probabilities(reference_session, paths)


@pytest.fixture(scope="session")
def grpc_url(triton_server) -> str:
    return triton_server.config.grpc_url
