"""An IoU tracker: faces keep an id across frames, and attributes accumulate per id.

Matching is greedy on IoU, best pairs first: with the few faces one camera sees
and boxes that move little between frames it agrees with the Hungarian
assignment except in near-ties, and needs no solver. Each track averages the
probabilities of every time it was scored (exponential moving average), so a
person's top-10 settles instead of flickering frame to frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facialattr.client.cctv.detect import Detection, iou


@dataclass(frozen=True)
class TrackerConfig:
    """How :class:`IouTracker` matches detections to tracks and how often it asks for a track's scores."""

    iou_threshold: float = 0.3
    # A track survives this many frames without a matching detection (a missed detection, a blink).
    max_missed_frames: int = 10
    # Re-score a track every ``rescore_every_frames`` frames it is seen in; 1 scores every frame.
    rescore_every_frames: int = 5
    # Weight of a new score in the running average; 0 means the plain running mean.
    ema_alpha: float = 0.0


@dataclass
class Track:
    """One face followed across frames of one camera (box in pixels, frames by index), with its running scores."""

    track_id: int
    box_xyxy: tuple[int, int, int, int]
    first_frame: int
    last_frame: int
    hits: int = 1
    missed_frames: int = 0
    times_scored: int = 0
    last_scored_hit: int = -(10**9)
    probabilities: np.ndarray | None = None
    recommended_categories: set[str] = field(default_factory=set)

    def add_scores(self, probabilities: np.ndarray, *, ema_alpha: float = 0.0) -> None:
        """Fold one scoring (one probability per attribute) into the track's average.

        ``ema_alpha`` > 0 weights the new scores by it (exponential moving average); 0 keeps the plain mean.
        """
        p = np.asarray(probabilities, dtype=np.float64)
        self.times_scored += 1
        if self.probabilities is None:
            self.probabilities = p.copy()
            return
        weight = ema_alpha if ema_alpha > 0 else 1.0 / self.times_scored
        self.probabilities = (1 - weight) * self.probabilities + weight * p


def match_greedy(tracks: list[Track], detections: list[Detection], iou_threshold: float) -> list[tuple[int, int]]:
    """(track index, detection index) pairs, highest IoU first, each side used at most once."""
    pairs = []
    for ti, track in enumerate(tracks):
        for di, det in enumerate(detections):
            overlap = iou(track.box_xyxy, det.box_xyxy)
            if overlap >= iou_threshold:
                pairs.append((overlap, ti, di))
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    used_t, used_d, matches = set(), set(), []
    for _, ti, di in pairs:
        if ti not in used_t and di not in used_d:
            used_t.add(ti)
            used_d.add(di)
            matches.append((ti, di))
    return matches


class IouTracker:
    """Per-camera tracker; ``update`` once per processed frame."""

    def __init__(self, config: TrackerConfig = TrackerConfig(), *, first_id: int = 1) -> None:
        self.config = config
        self.tracks: list[Track] = []
        self._next_id = first_id
        self.tracks_started = 0  # tracks this tracker has created so far, retired ones included

    def update(self, detections: list[Detection], frame_index: int) -> list[Track]:
        """Match, create and retire tracks; returns the tracks seen in this frame."""
        matches = match_greedy(self.tracks, detections, self.config.iou_threshold)
        matched_t = {ti for ti, _ in matches}
        matched_d = {di for _, di in matches}
        seen = []
        for ti, di in matches:
            track = self.tracks[ti]
            track.box_xyxy = detections[di].box_xyxy
            track.last_frame = frame_index
            track.hits += 1
            track.missed_frames = 0
            seen.append(track)
        for ti, track in enumerate(self.tracks):
            if ti not in matched_t:
                track.missed_frames += 1
        self.tracks = [t for t in self.tracks if t.missed_frames <= self.config.max_missed_frames]
        for di, det in enumerate(detections):
            if di not in matched_d:
                track = Track(self._next_id, det.box_xyxy, first_frame=frame_index, last_frame=frame_index)
                self._next_id += 1
                self.tracks_started += 1
                self.tracks.append(track)
                seen.append(track)
        return seen

    def due_for_scoring(self, seen: list[Track]) -> list[Track]:
        """Tracks seen now whose last score is ``rescore_every_frames`` sightings old (or that have none)."""
        k = self.config.rescore_every_frames
        due = [t for t in seen if t.hits - t.last_scored_hit >= k]
        for t in due:
            t.last_scored_hit = t.hits
        return due
