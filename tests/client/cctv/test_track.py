"""The IoU tracker: ids persist across frames, new faces get new ids, lost ones retire."""

import numpy as np
import pytest

from facialattr.client.cctv.detect import Detection
from facialattr.client.cctv.track import IouTracker, Track, TrackerConfig, match_greedy


def det(x, y, size=50):
    return Detection((x, y, x + size, y + size))


@pytest.mark.parametrize(
    "frames, expected_ids",
    [
        # one face moving slowly keeps its id
        ([[det(0, 0)], [det(5, 0)], [det(10, 2)]], [[1], [1], [1]]),
        # two faces far apart keep their own ids, whatever the detection order
        ([[det(0, 0), det(200, 0)], [det(205, 0), det(4, 0)]], [[1, 2], [2, 1]]),
        # a jump larger than the box is a new person
        ([[det(0, 0)], [det(300, 300)]], [[1], [2]]),
        # a face missed for one frame comes back under its old id
        ([[det(0, 0)], [], [det(3, 0)]], [[1], [], [1]]),
        # a new face appears next to an old one
        ([[det(0, 0)], [det(2, 0), det(100, 100)]], [[1], [1, 2]]),
    ],
)
def test_track_ids_follow_faces_across_frames(frames, expected_ids):
    tracker = IouTracker(TrackerConfig(iou_threshold=0.3, max_missed_frames=2))
    for index, (detections, expected) in enumerate(zip(frames, expected_ids, strict=True)):
        seen = tracker.update(detections, index)
        by_box = {t.box_xyxy: t.track_id for t in seen}
        assert [by_box[d.box_xyxy] for d in detections] == expected


def test_track_missed_longer_than_allowed_is_retired_and_face_gets_new_id():
    tracker = IouTracker(TrackerConfig(max_missed_frames=1))
    tracker.update([det(0, 0)], 0)
    tracker.update([], 1)
    tracker.update([], 2)
    assert tracker.tracks == []
    assert [t.track_id for t in tracker.update([det(0, 0)], 3)] == [2]
    assert tracker.tracks_started == 2, "a retired track still counts as started"


def test_greedy_matching_gives_each_detection_to_the_best_overlapping_track():
    tracks = [Track(1, (0, 0, 50, 50), 0, 0), Track(2, (30, 0, 80, 50), 0, 0)]
    detections = [det(28, 0), det(2, 0)]
    assert sorted(match_greedy(tracks, detections, 0.3)) == [(0, 1), (1, 0)]


@pytest.mark.parametrize("every, sightings, scored_at", [(1, 4, [1, 2, 3, 4]), (3, 7, [1, 4, 7]), (5, 4, [1])])
def test_track_is_rescored_only_every_k_sightings(every, sightings, scored_at):
    tracker = IouTracker(TrackerConfig(rescore_every_frames=every))
    scored = []
    for i in range(sightings):
        seen = tracker.update([det(i, 0)], i)
        if tracker.due_for_scoring(seen):
            scored.append(i + 1)
    assert scored == scored_at


@pytest.mark.parametrize(
    "alpha, scores, expected",
    [(0.0, [0.2, 0.4, 0.9], 0.5), (0.5, [0.2, 0.4], 0.3), (0.5, [0.0, 1.0, 1.0], 0.75), (0.0, [0.7], 0.7)],
)
def test_track_probabilities_are_the_running_mean_or_ema_of_its_scores(alpha, scores, expected):
    track = Track(1, (0, 0, 1, 1), 0, 0)
    for s in scores:
        track.add_scores(np.full(40, s), ema_alpha=alpha)
    assert track.times_scored == len(scores)
    np.testing.assert_allclose(track.probabilities, expected)
