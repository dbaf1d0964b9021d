"""Labelled CCTV-like scenes made of a real face photograph, for tests, detector choice and benchmarks.

The face is scikit-image's astronaut portrait (``skimage.data.astronaut``,
shipped inside the package, public domain). Each person is the head region of
that photo, pasted at known, moving positions over a textured background; the
second person is mirrored and colour-shifted so the model sees different
pixels. The truth box of a face is the box OpenCV's frontal-face cascade finds
on the full-resolution photo, carried through the same scaling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# In the 512x512 astronaut photo: the frontal-face cascade's box (x, y, w, h) and the head region pasted.
_FACE_XYWH = (177, 66, 95, 95)
_HEAD_XYXY = (120, 0, 330, 260)


@dataclass(frozen=True)
class Scene:
    """Frames (HxWx3 uint8 BGR) with the truth: per frame, each visible person's number and face box (xyxy, pixels)."""

    frames_bgr: list[np.ndarray]
    # truth[frame] = [(person, face box xyxy), ...]
    truth: list[list[tuple[int, tuple[int, int, int, int]]]]
    fps: float

    @property
    def size_wh(self) -> tuple[int, int]:
        """Frame size in pixels as (width, height), the order OpenCV's video writer takes."""
        return self.frames_bgr[0].shape[1], self.frames_bgr[0].shape[0]


def _person_images(face_width_px: int) -> tuple[list[np.ndarray], tuple[int, int, int, int]]:
    """The pasted head images (BGR) of each person and the face box inside them."""
    import cv2
    from skimage.data import astronaut

    rgb = astronaut()
    x1, y1, x2, y2 = _HEAD_XYXY
    scale = face_width_px / _FACE_XYWH[2]
    head = cv2.resize(rgb[y1:y2, x1:x2], (round((x2 - x1) * scale), round((y2 - y1) * scale)), interpolation=cv2.INTER_AREA)
    fx, fy, fw, fh = _FACE_XYWH
    face = (round((fx - x1) * scale), round((fy - y1) * scale), round((fx - x1 + fw) * scale), round((fy - y1 + fh) * scale))
    first = head[..., ::-1].copy()
    # Second person: mirrored, warmer and darker; its face box mirrors too.
    second = np.clip(head[:, ::-1].astype(np.float32) * (0.8, 0.9, 1.15), 0, 255).astype(np.uint8)[..., ::-1].copy()
    w = head.shape[1]
    mirrored = (w - face[2], face[1], w - face[0], face[3])
    return [first, second], (face, mirrored)


def _background(size_wh: tuple[int, int], seed: int) -> np.ndarray:
    import cv2

    w, h = size_wh
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0), 6)
    ramp = np.linspace(60, 160, w, dtype=np.float32)[None, :, None]
    return np.clip(0.5 * noise + ramp, 0, 255).astype(np.uint8)


def make_scene(*, n_frames: int = 30, size_wh: tuple[int, int] = (400, 300), people: int = 2,
               face_width_px: int = 56, step_px: int = 8, fps: float = 10.0, seed: int = 0,
               background_rgb: np.ndarray | None = None) -> Scene:
    """``people`` (1 or 2) walking across: person 0 left to right in the top half, person 1 right to left below.

    ``background_rgb`` (any size, resized to the frame) replaces the default blurred-noise backdrop.
    """
    import cv2

    if people not in (1, 2):
        raise ValueError("people must be 1 or 2")
    heads, faces = _person_images(face_width_px)
    background = (_background(size_wh, seed) if background_rgb is None
                  else cv2.resize(np.ascontiguousarray(background_rgb[..., ::-1]), size_wh, interpolation=cv2.INTER_AREA))
    w, h = size_wh
    hh, hw = heads[0].shape[:2]
    lanes_y = (max(0, h // 4 - hh // 2), min(h - hh, 3 * h // 4 - hh // 2))
    frames, truth = [], []
    for i in range(n_frames):
        frame = background.copy()
        labels = []
        for person in range(people):
            travel = (i * step_px) % max(1, w - hw)
            x = travel if person == 0 else w - hw - travel
            y = lanes_y[person]
            frame[y:y + hh, x:x + hw] = heads[person]
            fx1, fy1, fx2, fy2 = faces[person]
            labels.append((person, (x + fx1, y + fy1, x + fx2, y + fy2)))
        frames.append(frame)
        truth.append(labels)
    return Scene(frames, truth, fps)


def write_video(scene: Scene, path: Path, *, fourcc: str = "mp4v") -> Path:
    """Write the frames as a video at the scene's fps to ``path`` (returned). Raises OSError when OpenCV cannot write that codec."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), scene.fps, scene.size_wh)
    if not writer.isOpened():
        raise OSError(f"{path}: cannot write a {fourcc} video")
    for frame in scene.frames_bgr:
        writer.write(frame)
    writer.release()
    return Path(path)


def write_folder(scene: Scene, folder: Path, *, suffix: str = ".jpg") -> Path:
    """Write each frame as ``frame_NNNNN<suffix>`` into ``folder`` (created; returned), in frame order."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(scene.frames_bgr):
        cv2.imwrite(str(folder / f"frame_{i:05d}{suffix}"), frame)
    return folder
