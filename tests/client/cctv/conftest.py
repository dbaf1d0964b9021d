"""Fixtures shared by the CCTV tests: expected model outputs computed with onnxruntime, events read back."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from facialattr import repository
from facialattr.client.cctv.detect import HAAR_MARGINS, crop_celeba_frame
from facialattr.client.preprocess import prepare


def _reference_probabilities(repo: Path, image_bgr: np.ndarray, face_box) -> np.ndarray:
    """What the served model says about one face, computed in-process from the repository's ONNX file."""
    from facialattr.onnx_runtime import cpu_session

    entry = repository.load_model(repo)
    session = cpu_session(entry.onnx_path())
    x = prepare(crop_celeba_frame(image_bgr, face_box, HAAR_MARGINS), entry.contract.preprocessing)
    return session.run(None, {entry.model_config.input_name: x[None]})[0][0]


def _read_events(path: Path) -> dict[tuple[str, int], list[dict]]:
    """Events grouped by (camera, track id), in file order."""
    by_track = defaultdict(list)
    for line in Path(path).read_text().splitlines():
        event = json.loads(line)
        by_track[(event["camera"], event["track_id"])].append(event)
    return dict(by_track)


@pytest.fixture(scope="session")
def reference_probabilities():
    return _reference_probabilities


@pytest.fixture(scope="session")
def read_events():
    return _read_events
