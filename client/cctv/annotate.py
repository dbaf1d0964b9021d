"""The annotated video: boxes, track ids and each track's top attributes drawn on the frames."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facialattr.errors import OutputError
from facialattr.files import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    TEMPORARY_SUFFIX,
    make_private_dirs,
    output_failure,
    refuse_link,
)

log = logging.getLogger(__name__)

_COLOURS = ((64, 200, 64), (255, 160, 0), (0, 170, 255), (220, 80, 220), (80, 80, 255), (0, 220, 220))
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX; cv2 itself loads only when a frame is drawn
_OUTLINE_PX = 3  # the black outline under each label line, the thickest stroke drawn
# Hershey strokes reach up to 2 px past cv2.getTextSize's box (left of the origin and above the cap
# height, measured at scales 0.35-1.5), so the label's rectangle carries this margin on every side.
_INK_MARGIN_PX = 2
_GAP_PX = 2  # between the box's edge and its label


@dataclass(frozen=True)
class LabelPlacement:
    """Where one track's label is drawn: the rectangle its pixels lie in and each line's text origin."""

    rect_xyxy: tuple[int, int, int, int]  # x1, y1 inclusive; x2, y2 exclusive
    origins_xy: tuple[tuple[int, int], ...]  # cv2.putText's bottom-left point of each line


def label_scale(frame_hw: tuple[int, int]) -> float:
    """The labels' font scale for a frame size: readable on small frames, growing with large ones."""
    return max(0.35, min(frame_hw) / 700)


def place_label(frame_hw: tuple[int, int], box_xyxy: tuple[int, int, int, int], lines: list[str], *,
                scale: float) -> LabelPlacement:
    """The label block under the box, above it when the bottom has no room, over the box's top when neither
    has; moved left when it would run past the right edge. It stays inside the frame whenever it fits in it."""
    import cv2

    frame_h, frame_w = frame_hw
    x1, y1, _, y2 = (int(v) for v in box_xyxy)
    sizes = [cv2.getTextSize(text, _FONT, scale, _OUTLINE_PX) for text in lines]
    ascent = max((h for (_, h), _ in sizes), default=0)
    descent = max((b for _, b in sizes), default=0)
    step = max(1, int(32 * scale))  # line pitch; descenders may touch the next line's outline
    width = max((w for (w, _), _ in sizes), default=0) + 2 * _INK_MARGIN_PX
    height = step * (len(lines) - 1) + ascent + descent + 2 * _INK_MARGIN_PX
    if y2 + _GAP_PX + height <= frame_h:
        top = y2 + _GAP_PX
    elif y1 - _GAP_PX - height >= 0:
        top = y1 - _GAP_PX - height
    else:  # a face that fills the frame's height: the label goes inside the box, at its top
        top = y1 + _GAP_PX
    top = max(0, min(top, frame_h - height))
    left = max(0, min(x1, frame_w - width))
    origins = tuple((left + _INK_MARGIN_PX, top + _INK_MARGIN_PX + ascent + i * step) for i in range(len(lines)))
    return LabelPlacement((left, top, left + width, top + height), origins)


def draw_tracks(image_bgr: np.ndarray, tracks: list[tuple[int, tuple[int, int, int, int], list[str]]]) -> np.ndarray:
    """A copy of the frame with (track id, box, attribute names) drawn for each track; labels stay inside the
    frame (``place_label``)."""
    import cv2

    out = image_bgr.copy()
    scale = label_scale(out.shape[:2])
    for track_id, box_xyxy, names in tracks:
        x1, y1, x2, y2 = (int(v) for v in box_xyxy)
        colour = _COLOURS[track_id % len(_COLOURS)]
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        lines = [f"#{track_id}", *names]
        placement = place_label(out.shape[:2], (x1, y1, x2, y2), lines, scale=scale)
        for text, origin in zip(lines, placement.origins_xy, strict=True):
            cv2.putText(out, text, origin, _FONT, scale, (0, 0, 0), _OUTLINE_PX, cv2.LINE_AA)
            cv2.putText(out, text, origin, _FONT, scale, colour, 1, cv2.LINE_AA)
    return out


class AnnotatedVideo:
    """One output video per camera: ``out.mp4`` for a single camera, ``out_<camera>.mp4`` for several.

    The frames show faces, so each video is private (0600) and never written through a link
    planted at its name. cv2.VideoWriter opens a path itself, not a descriptor we checked, so it
    writes into a folder this process creates with mode 0700 beside the video (``.NAME.XXXX.tmp``,
    where no other user can plant a name), and :meth:`close` chmods the file and renames it onto
    the video's name; a rename replaces a link rather than following it. The video appears at its
    name when the watch ends; a watch that is killed leaves it in that folder.
    """

    def __init__(self, path: Path, cameras: list[str], *, fps: float = 10.0) -> None:
        self.path = Path(path)
        self.fps = fps
        self._paths = {c: self.path if len(cameras) == 1 else self.path.with_name(f"{self.path.stem}_{c}{self.path.suffix}")
                       for c in cameras}
        for video in self._paths.values():  # refused before any frame is written
            refuse_link(video, what="video")
        self._writers: dict = {}

    def paths(self) -> list[Path]:
        """The video file of each camera (the given path itself when there is one camera)."""
        return list(self._paths.values())

    def write(self, camera: str, image_bgr: np.ndarray) -> None:
        """Append one BGR frame to ``camera``'s video (resized to its first frame's size); raises OutputError
        when the video file cannot be opened for writing."""
        import cv2

        if camera not in self._writers:
            path = self._paths[camera]
            refuse_link(path, what="video")
            make_private_dirs(path.parent)
            work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX))
            os.chmod(work, PRIVATE_DIR_MODE)  # mkdtemp's 0700 less the umask; cv2 must be able to write in it
            partial = work / f"video{path.suffix}"  # the suffix picks the container
            fourcc = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
            writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*fourcc), self.fps,
                                     (image_bgr.shape[1], image_bgr.shape[0]))
            if not writer.isOpened():
                shutil.rmtree(work, ignore_errors=True)
                raise OutputError(f"{path}: cannot write video ({fourcc})")
            self._writers[camera] = (writer, (image_bgr.shape[1], image_bgr.shape[0]), partial)
        writer, size_wh, _ = self._writers[camera]
        if (image_bgr.shape[1], image_bgr.shape[0]) != size_wh:
            # A camera that reconnects at another resolution: a video file keeps one frame size.
            image_bgr = cv2.resize(image_bgr, size_wh, interpolation=cv2.INTER_AREA)
        writer.write(image_bgr)

    def close(self) -> None:
        """Finish every video file and move it to its name; writing again starts new files."""
        writers, self._writers = self._writers, {}
        for writer, _, _ in writers.values():
            writer.release()
        for camera, (_, _, partial) in writers.items():
            os.chmod(partial, PRIVATE_FILE_MODE)  # cv2 made it 0666 less the umask; the folder is ours alone
            try:
                os.replace(partial, self._paths[camera])
            except OSError as exc:
                raise output_failure(self._paths[camera], exc, what="the video",
                                     then=f"it is kept in {partial.parent}") from None
            partial.parent.rmdir()
