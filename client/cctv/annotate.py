"""The annotated video: boxes, track ids and each track's top attributes drawn on the frames."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from facialattr.errors import InputError

log = logging.getLogger(__name__)

_COLOURS = ((64, 200, 64), (255, 160, 0), (0, 170, 255), (220, 80, 220), (80, 80, 255), (0, 220, 220))


def draw_tracks(image_bgr: np.ndarray, tracks: list[tuple[int, tuple[int, int, int, int], list[str]]]) -> np.ndarray:
    """A copy of the frame with (track id, box, attribute names) drawn for each track."""
    import cv2

    out = image_bgr.copy()
    scale = max(0.35, min(out.shape[:2]) / 700)
    for track_id, (x1, y1, x2, y2), names in tracks:
        colour = _COLOURS[track_id % len(_COLOURS)]
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        lines = [f"#{track_id}", *names]
        step = int(16 * scale / 0.5)
        # Labels go below the box, or above it when they would run off the bottom.
        base = y2 if y2 + step * len(lines) < out.shape[0] else max(0, y1 - step * len(lines) - 4)
        for i, text in enumerate(lines):
            y = base + (i + 1) * step
            cv2.putText(out, text, (x1, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(out, text, (x1, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return out


class AnnotatedVideo:
    """One output video per camera: ``out.mp4`` for a single camera, ``out_<camera>.mp4`` for several."""

    def __init__(self, path: Path, cameras: list[str], *, fps: float = 10.0) -> None:
        self.path = Path(path)
        self.fps = fps
        self._paths = {c: self.path if len(cameras) == 1 else self.path.with_name(f"{self.path.stem}_{c}{self.path.suffix}")
                       for c in cameras}
        self._writers: dict = {}

    def paths(self) -> list[Path]:
        """The video file of each camera (the given path itself when there is one camera)."""
        return list(self._paths.values())

    def write(self, camera: str, image_bgr: np.ndarray) -> None:
        """Append one BGR frame to ``camera``'s video (resized to its first frame's size); raises InputError
        when the video file cannot be opened for writing."""
        import cv2

        if camera not in self._writers:
            path = self._paths[camera]
            fourcc = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), self.fps,
                                     (image_bgr.shape[1], image_bgr.shape[0]))
            if not writer.isOpened():
                raise InputError(f"{path}: cannot write video ({fourcc})")
            self._writers[camera] = (writer, (image_bgr.shape[1], image_bgr.shape[0]))
        writer, size_wh = self._writers[camera]
        if (image_bgr.shape[1], image_bgr.shape[0]) != size_wh:
            # A camera that reconnects at another resolution: a video file keeps one frame size.
            image_bgr = cv2.resize(image_bgr, size_wh, interpolation=cv2.INTER_AREA)
        writer.write(image_bgr)

    def close(self) -> None:
        """Finish every video file; writing again starts new files."""
        for writer, _ in self._writers.values():
            writer.release()
        self._writers.clear()
