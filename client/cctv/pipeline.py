"""The watch loop: frames from every camera -> faces -> tracks -> one batched request -> events.

Each round takes the newest frame of every camera, detects and tracks faces,
and sends the crops of all tracks that are due for (re-)scoring, from all
cameras, to the server as one batch. The request runs while the next round is
being detected (one request in flight), so the CPU and the server overlap.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facialattr.client.cctv.annotate import AnnotatedVideo, draw_tracks
from facialattr.client.cctv.detect import FaceDetector, crop_celeba_frame
from facialattr.client.cctv.events import EventWriter, track_event
from facialattr.client.cctv.metrics import WatchMetrics, server_batch_counts
from facialattr.client.cctv.recommend import Recommender
from facialattr.client.cctv.sources import Frame, FrameSource
from facialattr.client.cctv.track import IouTracker, Track, TrackerConfig
from facialattr.client.serverstats import mean_batch
from facialattr.errors import FacialAttrError
from facialattr.files import atomic_file, make_private_dirs, output_failure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchConfig:
    """How the watch loop tracks, ranks, logs (``log_interval_s`` seconds) and what it writes besides events."""

    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    top_k: int = 10
    log_interval_s: float = 10.0
    # Stop after this many processed frames (all cameras together); None runs until the streams end.
    max_frames: int | None = None
    save_faces_dir: Path | None = None
    annotate_path: Path | None = None
    annotate_fps: float = 10.0
    annotate_top: int = 3
    # Read the batch sizes Triton formed from the scorer's first server (its statistics API) for the summary.
    server_batch_stats: bool = False
    # Threads detecting the cameras of a round when the Watcher gets a detector factory; None: one per CPU.
    detect_threads: int | None = None


@dataclass
class WatchSummary:
    """Counts of one watch run: frames, faces, requests, events; ``fps`` in processed frames per second."""

    frames: int = 0
    dropped: int = 0
    # Folder images that did not decode: skipped (each logged with its reason), counted as failed inputs.
    unreadable: int = 0
    faces: int = 0
    scored: int = 0
    requests: int = 0
    failed_requests: int = 0
    events: int = 0
    reconnects: int = 0
    tracks_per_camera: dict[str, int] = field(default_factory=dict)
    # Sources that ended on an error (camera name -> message).
    source_errors: dict[str, str] = field(default_factory=dict)
    fps: float = 0.0
    server_batches: Counter = field(default_factory=Counter)


@dataclass
class _Round:
    frames: list[Frame]
    seen: dict[str, list[Track]]
    due: list[tuple[Frame, Track]]
    future: Future | None = None


class Watcher:
    """Frames from every camera -> faces -> tracks -> one batched request per round -> events (see the module doc)."""

    def __init__(self, sources: list[FrameSource], detector: FaceDetector | Callable[[], FaceDetector], scorer, *,
                 config: WatchConfig = WatchConfig(),
                 events: EventWriter | None = None, recommender: Recommender | None = None,
                 locations: dict[str, tuple[float, float]] | None = None, metrics: WatchMetrics | None = None,
                 clock: Callable[[], dt.datetime] = dt.datetime.now) -> None:
        self.sources = sources
        # A detector instance is shared and runs the cameras one after another; a factory gives each
        # camera its own (detectors hold state such as dnn nets that must not run concurrently) and
        # detects all cameras of a round in parallel threads (OpenCV releases the GIL).
        if isinstance(detector, FaceDetector):
            self._detectors = {s.spec.name: detector for s in sources}
            self._detect_threads = 1
        else:
            self._detectors = {s.spec.name: detector() for s in sources}
            self._detect_threads = max(1, min(len(sources), config.detect_threads or os.cpu_count() or 1))
        self._pool: ThreadPoolExecutor | None = None
        self.scorer = scorer
        self.contract = scorer.contract
        self.config = config
        self.events = events
        self.recommender = recommender
        self.locations = locations or {}
        self.metrics = metrics or WatchMetrics()
        self.clock = clock
        self.trackers = {s.spec.name: IouTracker(config.tracker) for s in sources}
        self.stop_event = threading.Event()
        self._video = (AnnotatedVideo(config.annotate_path, [s.spec.name for s in sources], fps=config.annotate_fps)
                       if config.annotate_path else None)
        self._face_folders: dict[str, Path] = {}  # --save-faces: each camera's folder, once made or checked
        if config.save_faces_dir is not None:
            make_private_dirs(config.save_faces_dir)  # a link there is refused before the watch starts
        self._server_start: Counter | None = None
        self._events_written = 0
        self.failed_requests = 0

    def run(self) -> WatchSummary:
        """Until every source has ended, ``max_frames`` is reached, or ``stop_event`` is set."""
        from facialattr.client.ranking import top_attributes  # noqa: F401 - fail early if the client is missing

        for s in self.sources:
            s.start()
        if self._detect_threads > 1:
            self._pool = ThreadPoolExecutor(self._detect_threads, thread_name_prefix="detect")
        self._server_start = self._server_counts()
        pending: _Round | None = None
        next_log = time.monotonic() + self.config.log_interval_s
        try:
            while not self.stop_event.is_set() and not self._frame_budget_spent():
                frames = self._next_frames(wait=pending is None)
                if frames is None:
                    break
                if not frames and pending is not None:
                    # Nothing new to detect meanwhile: finish now rather than hold results back a frame.
                    self._finish_round(pending)
                    pending = None
                    continue
                current = self._detect_round(frames) if frames else None
                if pending is not None:
                    self._finish_round(pending)
                pending = current
                if time.monotonic() >= next_log:
                    self._log_progress()
                    next_log = time.monotonic() + self.config.log_interval_s
            if pending is not None:
                self._finish_round(pending)
        finally:
            for s in self.sources:
                s.stop()
            if self._pool:
                self._pool.shutdown()
            if self._video:
                self._video.close()
        return self._summary()

    def _frame_budget_spent(self) -> bool:
        return self.config.max_frames is not None and self.metrics.frames >= self.config.max_frames

    def _next_frames(self, *, wait: bool) -> list[Frame] | None:
        """The next frame of each camera that has one; [] when none is ready yet, None when all ended."""
        frames = [f for f in (s.get() if s.spec.live else self._next_recorded(s) for s in self.sources) if f is not None]
        if frames:
            return frames
        live = [s for s in self.sources if not s.finished]
        if not live:
            return None
        if not wait:
            return []
        frame = live[0].get(timeout_s=0.05)
        return [frame] if frame is not None else []

    def _next_recorded(self, source: FrameSource) -> Frame | None:
        """Recorded sources advance in lockstep, one frame each per round, so runs are repeatable."""
        while not source.finished and not self.stop_event.is_set():
            frame = source.get(timeout_s=0.1)
            if frame is not None:
                # A recorded frame's moment is when it is processed: time spent waiting in the read-ahead
                # queue is not latency a viewer would see.
                return dataclasses.replace(frame, time_s=time.time())
        return None

    def _detect_round(self, frames: list[Frame]) -> _Round:
        round_ = _Round(frames, {}, [])

        def detect(frame: Frame):
            return self._detectors[frame.camera].detect(frame.image_bgr)

        found = list(self._pool.map(detect, frames)) if self._pool and len(frames) > 1 else [detect(f) for f in frames]
        for frame, detections in zip(frames, found, strict=True):
            tracker = self.trackers[frame.camera]
            seen = tracker.update(detections, frame.index)
            round_.seen[frame.camera] = seen
            round_.due.extend((frame, t) for t in tracker.due_for_scoring(seen))
        if round_.due:
            batch = np.stack([self._prepare(frame, track) for frame, track in round_.due])
            round_.future = self.scorer.infer_async(batch)
            self.metrics.request(len(batch))
        return round_

    def _prepare(self, frame: Frame, track: Track) -> np.ndarray:
        from facialattr.client.preprocess import prepare

        crop_rgb = crop_celeba_frame(frame.image_bgr, track.box_xyxy, self._detectors[frame.camera].margins)
        if self.config.save_faces_dir is not None:
            self._save_face(frame, track, crop_rgb)
        return prepare(crop_rgb, self.contract.preprocessing)

    def _save_face(self, frame: Frame, track: Track, crop_rgb: np.ndarray) -> None:
        """One crop as a private JPEG (0600 in 0700 folders); a link planted at its name is refused (OutputError).

        Encoded in memory and written through facialattr/files.py, not by cv2.imwrite, which would
        open the name itself and follow a link there."""
        import cv2

        folder = self._face_folders.get(frame.camera)
        if folder is None:
            folder = make_private_dirs(make_private_dirs(self.config.save_faces_dir) / frame.camera)
            self._face_folders[frame.camera] = folder
        ok, encoded = cv2.imencode(".jpg", crop_rgb[..., ::-1])
        if not ok:
            log.warning("could not encode the face crop of track %d (frame %d); not saved", track.track_id, frame.index)
            return
        path = folder / f"track{track.track_id:05d}_frame{frame.index:07d}.jpg"
        try:
            with atomic_file(path, durable=False) as f:  # no fsync per crop: the watch loop must not wait on the disk
                f.write(encoded.tobytes())
        except OSError as exc:
            raise output_failure(path, exc, what="the face crop") from None

    def _finish_round(self, round_: _Round) -> None:
        if round_.future is not None:
            try:
                probabilities = round_.future.result()
            except FacialAttrError as exc:
                # A camera must keep running through a server outage: these crops go unscored,
                # the tracks are due again k sightings later.
                log.warning("scoring %d face(s) failed, skipped: %s", len(round_.due), exc)
                self.failed_requests += 1
                probabilities = []
                round_.due = []
            for (frame, track), p in zip(round_.due, probabilities, strict=True):
                track.add_scores(p, ema_alpha=self.config.tracker.ema_alpha)
                self._emit(frame, track)
        done_s = time.time()
        for frame in round_.frames:
            seen = round_.seen[frame.camera]
            self.metrics.frame(frame.camera, faces=len(seen), latency_s=done_s - frame.time_s)
            if self._video:
                self._video.write(frame.camera, self._annotate(frame, seen))
        self.metrics.set_dropped({s.spec.name: s.frames_dropped for s in self.sources})

    def _emit(self, frame: Frame, track: Track) -> None:
        from facialattr.client.ranking import top_attributes

        top = top_attributes(track.probabilities, self.contract, k=self.config.top_k)
        recs = []
        if self.recommender is not None and track.times_scored >= self.recommender.min_times_scored:
            recs = self.recommender.recommend(track.probabilities, location=self.locations.get(frame.camera),
                                              when=self.clock(), already=track.recommended_categories)
            track.recommended_categories.update(r.category for r in recs)
        if self.events is not None:
            self.events.write(track_event(time_s=frame.time_s, camera=frame.camera, frame_index=frame.index,
                                          track_id=track.track_id, box_xyxy=track.box_xyxy,
                                          times_scored=track.times_scored, top=top, recommendations=recs))
        self._events_written += 1

    def _annotate(self, frame: Frame, seen: list[Track]) -> np.ndarray:
        from facialattr.client.ranking import top_attributes

        items = []
        for t in seen:
            names = []
            if t.probabilities is not None:
                top = top_attributes(t.probabilities, self.contract, k=self.config.annotate_top)
                names = [f"{a.name} {a.probability:.2f}" for a in top]
            items.append((t.track_id, t.box_xyxy, names))
        return draw_tracks(frame.image_bgr, items)

    def _server_counts(self) -> Counter | None:
        if not self.config.server_batch_stats:
            return None
        try:
            return server_batch_counts(self.scorer.urls[0], self.scorer.model_name)
        except Exception as exc:  # statistics are a nicety; the watch goes on without them
            log.debug("server statistics unavailable: %s", exc)
            return None

    def _server_batches(self) -> Counter:
        now = self._server_counts()
        if now is None or self._server_start is None:
            return Counter()
        return now - self._server_start

    def _log_progress(self) -> None:
        snap = self.metrics.snapshot()
        batches = self._server_batches()
        self.metrics.set_server_mean_batch(mean_batch(batches))
        server = f"; server batches mean {mean_batch(batches):.1f}" if batches else ""
        log.info("%s%s", snap.line(), server)

    def _summary(self) -> WatchSummary:
        snap = self.metrics.snapshot()
        batches = self._server_batches()
        self.metrics.set_server_mean_batch(mean_batch(batches))
        return WatchSummary(
            frames=snap.frames, dropped=sum(s.frames_dropped for s in self.sources),
            unreadable=sum(s.frames_unreadable for s in self.sources), faces=snap.faces,
            scored=snap.scored, requests=snap.requests, failed_requests=self.failed_requests, events=self._events_written,
            reconnects=sum(s.reconnects for s in self.sources),
            tracks_per_camera={c: t.tracks_started for c, t in self.trackers.items()},
            fps=snap.fps, server_batches=batches,
            source_errors={s.spec.name: s.error for s in self.sources if s.error},
        )
