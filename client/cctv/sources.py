"""Frame sources: video files, RTSP/HTTP streams, webcams and image-sequence folders.

Each source reads in its own thread. Files and folders hand over every frame
(the consumer sets the pace); live sources keep only the newest frame, so a
slow consumer skips frames instead of falling behind real time, and count what
they skipped. A live source that drops reconnects with exponential backoff.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facialattr.client.decode import DecodeError, decode_image
from facialattr.errors import FacialAttrError, InputError
from facialattr.imagefiles import image_files

log = logging.getLogger(__name__)

_URL = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", re.IGNORECASE)
_NAMED = re.compile(r"^([A-Za-z][\w.-]*)=(.+)$")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed SOURCE argument: the camera name, what to open (path, URL or webcam index) and its kind."""

    name: str
    target: str | int
    kind: str  # "file", "folder", "url" or "webcam"

    @property
    def live(self) -> bool:
        """True for URLs and webcams: only the newest frame is kept and a lost stream is reopened."""
        return self.kind in ("url", "webcam")


def parse_source(text: str, *, default_name: str) -> SourceSpec:
    """``[NAME=]SOURCE``: a URL, a webcam index, a folder of images or a video file.

    NAME defaults to ``default_name``. Raises :class:`InputError` naming ``text`` when it is
    neither a URL nor a webcam index and no such file or folder exists.
    """
    name, target = default_name, text
    m = _NAMED.match(text)
    if m and not _URL.match(text):
        name, target = m.group(1), m.group(2)
    if _URL.match(target):
        return SourceSpec(name, target, "url")
    if target.isdigit():
        return SourceSpec(name, int(target), "webcam")
    path = Path(target)
    if path.is_dir():
        return SourceSpec(name, str(path), "folder")
    if path.is_file():
        return SourceSpec(name, str(path), "file")
    raise InputError(f"source {text!r}: no such file or folder, and not a URL or webcam index")


@dataclass(frozen=True)
class Frame:
    """One frame of one camera: uint8 BGR [H, W, 3] (OpenCV's order), its index and the time it was read."""

    camera: str
    index: int  # position in the source, skipped frames included
    time_s: float  # wall-clock time it was read
    image_bgr: np.ndarray


@dataclass(frozen=True)
class SourceOptions:
    """Timeouts and backoff (seconds) of live sources, and how many frames a file or folder source may queue."""

    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 10.0
    # Stop retrying a live source after this long without a frame; None retries until stopped.
    give_up_after_s: float | None = None
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    file_queue_frames: int = 4


class FrameSource:
    """One source read by a daemon thread; ``get`` returns the next frame or None."""

    def __init__(self, spec: SourceSpec, options: SourceOptions = SourceOptions()) -> None:
        self.spec = spec
        self.options = options
        self.frames_read = 0
        self.frames_dropped = 0
        self.frames_unreadable = 0  # folder images that did not decode (skipped, each logged)
        self.reconnects = 0
        self.connected = False
        # Why the source ended early (unreadable file, ...); None when it ended normally.
        self.error: str | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._queue: queue.Queue[Frame] = queue.Queue(maxsize=options.file_queue_frames)
        self._latest: Frame | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"source-{spec.name}", daemon=True)

    def start(self) -> FrameSource:
        """Start the reader thread; returns ``self``."""
        self._thread.start()
        return self

    def stop(self, *, join_timeout_s: float = 10.0) -> None:
        """Ask the reader to stop and wait up to ``join_timeout_s`` seconds for its thread."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(join_timeout_s)

    @property
    def finished(self) -> bool:
        """True once the source has ended and every frame it read has been taken."""
        return self._done.is_set() and self._queue.empty() and self._latest is None

    def get(self, timeout_s: float = 0.0) -> Frame | None:
        """The next frame (file, folder) or the newest one (live), waiting up to ``timeout_s`` seconds; None if none came."""
        if not self.spec.live:
            try:
                return self._queue.get(timeout=timeout_s) if timeout_s > 0 else self._queue.get_nowait()
            except queue.Empty:
                return None
        with self._cond:
            if self._latest is None and timeout_s > 0 and not self._done.is_set():
                self._cond.wait(timeout_s)
            frame, self._latest = self._latest, None
            return frame

    def _publish(self, image: np.ndarray) -> None:
        frame = Frame(self.spec.name, self.frames_read, time.time(), image)
        self.frames_read += 1
        if not self.spec.live:
            while not self._stop.is_set():
                try:
                    self._queue.put(frame, timeout=0.2)
                    return
                except queue.Full:
                    continue
            return
        with self._cond:
            if self._latest is not None:
                self.frames_dropped += 1
            self._latest = frame
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            if self.spec.kind == "folder":
                self._read_folder()
            elif self.spec.live:
                self._read_live()
            else:
                self._read_capture_once()
        except FacialAttrError as exc:
            self.error = str(exc)
            log.error("%s", exc)
        except Exception as exc:  # a reader thread must not die silently
            self.error = f"source {self.spec.name}: {exc!r}"
            log.exception("source %s failed", self.spec.name)
        finally:
            self._done.set()
            with self._cond:
                self._cond.notify_all()

    def _read_folder(self) -> None:
        import cv2

        files = image_files(self.spec.target)
        if not files:
            log.warning("source %s: no images in %s", self.spec.name, self.spec.target)
        for path in files:
            if self._stop.is_set():
                return
            # The client's decoder: EXIF orientation applied, pixel and size limits enforced, as for `score`.
            try:
                image = decode_image(path)
            except DecodeError as exc:
                self.frames_unreadable += 1
                log.warning("source %s: %s; skipped", self.spec.name, exc)
                continue
            self._publish(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def _open(self):
        import cv2

        if self.spec.kind == "webcam":
            return cv2.VideoCapture(int(self.spec.target))
        # TCP carries RTSP more reliably than UDP through NAT and loss; a user's own setting wins.
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.options.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.options.read_timeout_s * 1000)]
        return cv2.VideoCapture(str(self.spec.target), cv2.CAP_FFMPEG, params)

    def _read_capture_once(self) -> None:
        cap = self._open()
        if not cap.isOpened():
            raise InputError(f"source {self.spec.name}: cannot open {self.spec.target} as a video")
        self.connected = True
        try:
            while not self._stop.is_set():
                ok, image = cap.read()
                if not ok:
                    return
                self._publish(image)
        finally:
            self.connected = False
            cap.release()

    def _read_live(self) -> None:
        opts = self.options
        backoff = opts.reconnect_initial_s
        last_frame_at = time.monotonic()
        while not self._stop.is_set():
            cap = self._open()
            if cap.isOpened():
                if self.frames_read:
                    self.reconnects += 1
                    log.info("source %s: reconnected (%d reconnects)", self.spec.name, self.reconnects)
                self.connected = True
                while not self._stop.is_set():
                    ok, image = cap.read()
                    if not ok:
                        break
                    self._publish(image)
                    last_frame_at = time.monotonic()
                    backoff = opts.reconnect_initial_s
                self.connected = False
            cap.release()
            if self._stop.is_set():
                return
            if opts.give_up_after_s is not None and time.monotonic() - last_frame_at > opts.give_up_after_s:
                log.error("source %s: no frame for %.0f s; giving up", self.spec.name, opts.give_up_after_s)
                return
            log.warning("source %s: stream lost or unreachable; retrying in %.1f s", self.spec.name, backoff)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, opts.reconnect_max_s)
