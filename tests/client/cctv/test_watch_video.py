"""facialattr watch on real media made here: a video and an image folder of a real face photo, the real Triton.

Two people (the astronaut portrait and a mirrored, colour-shifted copy) walk
across a 3-second video. The watcher must find them near the pasted boxes, keep
one track each, emit an event per scoring, and recommend what rules crafted
from the model's own outputs (computed here with onnxruntime) predict.
"""

import datetime as dt
import logging
import re
import urllib.request

import cv2
import numpy as np
import pytest

from facialattr.app.cli import main
from facialattr.client.cctv import recommend
from facialattr.client.cctv.detect import iou, make_detector
from facialattr.client.cctv.events import EventWriter
from facialattr.client.cctv.pipeline import WatchConfig, Watcher
from facialattr.client.cctv.sources import FrameSource, parse_source
from facialattr.client.cctv.synthetic import make_scene, write_folder, write_video
from facialattr.client.cctv.track import TrackerConfig
from facialattr.client.scorer import Scorer
from facialattr.contract import CELEBA_ATTRIBUTES
from facialattr.errors import EXIT_SOME_INPUTS_FAILED

RESCORE_EVERY = 5
CAMERA = (47.3769, 8.5417)
MONDAY_NOON = dt.datetime(2026, 11, 30, 12, 0)


@pytest.fixture(scope="module")
def scene():
    return make_scene(n_frames=30)


def _scores_per_person(scene, repo, reference_probabilities):
    """onnxruntime's probabilities for each person's detected face on the frames the watcher scores: [person][frame, 40]."""
    detector = make_detector("haar")
    scores = [[], []]
    for frame, truth in list(zip(scene.frames_bgr, scene.truth, strict=True))[::RESCORE_EVERY]:
        for detection in detector.detect(frame):
            person = max(truth, key=lambda t: iou(t[1], detection.box_xyxy))[0]
            scores[person].append(reference_probabilities(repo, frame, detection.box_xyxy))
    return [np.array(s) for s in scores]


@pytest.fixture(scope="module")
def crafted_rules(scene, tiny_repository, tmp_path_factory, reference_probabilities):
    """One category per person: the attribute that best separates them on every frame, threshold half-way."""
    first, second = _scores_per_person(scene, tiny_repository, reference_probabilities)
    gap_a, gap_b = first.min(0) - second.max(0), second.min(0) - first.max(0)
    a, b = int(np.argmax(gap_a)), int(np.argmax(gap_b))
    assert gap_a[a] > 0.2 and gap_b[b] > 0.2, "the two people must look different to the model"
    t_a, t_b = (first[:, a].min() + second[:, a].max()) / 2, (second[:, b].min() + first[:, b].max()) / 2
    root = tmp_path_factory.mktemp("rules")
    rules = root / "rules.yaml"
    rules.write_text(
        "min_times_scored: 2\nrules:\n"
        f"  - {{category: only_first, when_any: {{{CELEBA_ATTRIBUTES[a]}: {t_a:.4f}}}}}\n"
        f"  - {{category: only_second, when_any: {{{CELEBA_ATTRIBUTES[b]}: {t_b:.4f}}}}}\n"
    )
    catalogue = root / "providers.csv"
    catalogue.write_text(
        "name,category,latitude,longitude,opening_hours\n"
        "Closest but closed,only_first,47.3770,8.5418,Sa 09:00-12:00\n"
        "Open nearby,only_first,47.3800,8.5417,Mo-Fr 09:00-18:00\n"
        "Open far away,only_first,47.5000,8.5417,\n"
        "Second shop,only_second,47.3769,8.5500,24/7\n"
    )
    return rules, catalogue


@pytest.fixture(scope="module")
def watched(scene, crafted_rules, triton_server, tmp_path_factory, read_events):
    root = tmp_path_factory.mktemp("watch")
    video = write_video(scene, root / "scene.mp4")
    rules_path, catalogue_path = crafted_rules
    rules = recommend.load_rules(rules_path, CELEBA_ATTRIBUTES)
    recommender = recommend.Recommender(rules, recommend.load_catalogue(catalogue_path), CELEBA_ATTRIBUTES)
    config = WatchConfig(tracker=TrackerConfig(rescore_every_frames=RESCORE_EVERY), server_batch_stats=True)
    with Scorer(triton_server.config.grpc_url) as scorer, EventWriter(root / "events.jsonl") as events:
        watcher = Watcher([FrameSource(parse_source(f"lobby={video}", default_name="cam0"))], make_detector("haar"),
                          scorer, config=config, events=events, recommender=recommender,
                          locations={"lobby": CAMERA}, clock=lambda: MONDAY_NOON)
        summary = watcher.run()
    return summary, read_events(root / "events.jsonl")


def _person_of(scene, event):
    """The pasted person whose true face box the event's box overlaps, and that overlap."""
    best = max(scene.truth[event["frame"]], key=lambda t: iou(t[1], event["box_xyxy"]))
    return best[0], iou(best[1], event["box_xyxy"])


def test_video_is_read_to_the_end_with_two_faces_per_frame(watched, scene):
    summary, _ = watched
    assert summary.frames == len(scene.frames_bgr)
    assert summary.dropped == 0  # a file is not live: nothing is skipped
    assert summary.faces == 2 * len(scene.frames_bgr)


def test_each_person_keeps_one_track_whose_boxes_follow_the_pasted_face(watched, scene):
    summary, by_track = watched
    assert summary.tracks_per_camera == {"lobby": 2}
    people = set()
    for events in by_track.values():
        persons = {_person_of(scene, e)[0] for e in events}
        assert len(persons) == 1
        people |= persons
        assert min(_person_of(scene, e)[1] for e in events) >= 0.5
    assert people == {0, 1}


def test_each_track_is_scored_every_k_frames_and_its_top10_ranked(watched, scene):
    _, by_track = watched
    for events in by_track.values():
        assert [e["frame"] for e in events] == list(range(0, len(scene.frames_bgr), RESCORE_EVERY))
        assert [e["times_scored"] for e in events] == list(range(1, len(events) + 1))
        assert all(len(e["top10"]) == 10 for e in events)
        assert all(set(e["top10"][0]) == {"name", "probability", "present"} for e in events)


def test_recommendations_follow_the_rules_once_per_track_and_category(watched, scene):
    _, by_track = watched
    for events in by_track.values():
        person = _person_of(scene, events[0])[0]
        recs = [(e["times_scored"], r) for e in events for r in e["recommendations"]]
        expected_category = "only_first" if person == 0 else "only_second"
        assert [r["category"] for _, r in recs] == [expected_category]
        times_scored, rec = recs[0]
        assert times_scored == 2  # min_times_scored in the rules
        expected_provider = "Open nearby" if person == 0 else "Second shop"
        assert rec["provider"] == expected_provider
        assert rec["distance_km"] == pytest.approx(
            recommend.haversine_km(*CAMERA, rec["latitude"], rec["longitude"]), abs=1e-3)


def test_watch_command_on_an_image_folder_writes_events_video_and_metrics(scene, triton_server, tmp_path, read_events,
                                                                         caplog):
    folder = write_folder(scene, tmp_path / "frames")
    caplog.set_level(logging.INFO, logger="facialattr.client.cctv.metrics")
    code = main(["watch", "--detector", "haar", f"gate={folder}", "--url", triton_server.config.grpc_url, "--events", str(tmp_path / "ev.jsonl"),
                 "--annotate", str(tmp_path / "out.avi"), "--client-metrics-port", "0", "--camera", "gate=47.37,8.54",
                 "--rescore-every", "10"])
    assert code == 0
    by_track = read_events(tmp_path / "ev.jsonl")
    assert sorted(len(v) for v in by_track.values()) == [3, 3]
    video = cv2.VideoCapture(str(tmp_path / "out.avi"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == len(scene.frames_bgr)
    # Port 0: the metrics server bound a free port itself and logged where it listens.
    url = re.search(r"http://127\.0\.0\.1:\d+/metrics", caplog.text).group(0)
    metrics = urllib.request.urlopen(url, timeout=10).read().decode()
    assert f'facialattr_cctv_frames_total{{camera="gate"}} {float(len(scene.frames_bgr))}' in metrics
    assert "facialattr_cctv_request_batch_size_count 3.0" in metrics  # frames 0, 10, 20; both faces in each
    assert "facialattr_cctv_server_mean_batch 2.0" in metrics  # what Triton formed: one request at a time
    # Privacy by default: no face image was written anywhere.
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".jpg", ".png") and p.parent != folder]


def test_corrupt_frame_in_a_folder_is_named_skipped_and_fails_the_exit_status(scene, triton_server, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    folder = write_folder(scene, tmp_path / "frames")
    (folder / "frame_00005.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    code = main(["watch", "--detector", "haar", f"gate={folder}", "--url", triton_server.config.grpc_url,
                 "--events", str(tmp_path / "ev.jsonl"), "--no-recommendations", "--rescore-every", "10"])
    assert code == EXIT_SOME_INPUTS_FAILED
    assert "frame_00005.jpg" in caplog.text
    assert f"watched {len(scene.frames_bgr) - 1} frames (0 dropped, 1 unreadable" in caplog.text


def test_faces_are_stored_only_when_asked(scene, triton_server, tmp_path):
    folder = write_folder(scene, tmp_path / "frames")
    code = main(["watch", "--detector", "haar", str(folder), "--url", triton_server.config.grpc_url, "--events", str(tmp_path / "ev.jsonl"),
                 "--no-recommendations", "--save-faces", str(tmp_path / "faces"), "--rescore-every", "15", "--max-frames", "20"])
    assert code == 0
    saved = sorted(p.name for p in (tmp_path / "faces" / "cam0").iterdir())
    assert saved == ["track00001_frame0000000.jpg", "track00001_frame0000015.jpg",
                     "track00002_frame0000000.jpg", "track00002_frame0000015.jpg"]


def test_crops_from_all_cameras_go_to_the_server_in_one_request_per_round(scene, triton_server, tmp_path):
    video = write_video(scene, tmp_path / "scene.mp4")
    sources = [FrameSource(parse_source(f"cam{i}={video}", default_name="x")) for i in range(3)]
    config = WatchConfig(tracker=TrackerConfig(rescore_every_frames=RESCORE_EVERY))
    with Scorer(triton_server.config.grpc_url) as scorer:
        # A detector factory: one detector per camera, the cameras of a round detected in parallel threads.
        summary = Watcher(sources, lambda: make_detector("haar"), scorer, config=config).run()
    rounds = len(range(0, len(scene.frames_bgr), RESCORE_EVERY))
    assert summary.frames == 3 * len(scene.frames_bgr)
    assert (summary.requests, summary.scored) == (rounds, rounds * 3 * 2)  # 3 cameras x 2 faces in each request
    assert summary.tracks_per_camera == {"cam0": 2, "cam1": 2, "cam2": 2}


def test_watch_carries_on_through_a_server_outage_and_skips_the_unscored_faces(scene, tiny_repository, tmp_path, read_events):
    from testsupport import start_server

    from facialattr.client.scorer import RetryPolicy

    long_scene = make_scene(n_frames=60)
    video = write_video(long_scene, tmp_path / "scene.mp4")
    server = start_server(tiny_repository)
    config = WatchConfig(tracker=TrackerConfig(rescore_every_frames=RESCORE_EVERY))
    try:
        with Scorer(server.config.grpc_url, retry=RetryPolicy(give_up_after_s=0.5)) as scorer, \
                EventWriter(tmp_path / "ev.jsonl") as events:
            watcher = Watcher([FrameSource(parse_source(str(video), default_name="cam0"))], make_detector("haar"),
                              scorer, config=config, events=events)
            # The server goes away once the first scores are in; the watch must still read the whole video.
            original_emit = watcher._emit

            def emit_then_stop_server(frame, track):
                original_emit(frame, track)
                if server.is_running():
                    server.stop()

            watcher._emit = emit_then_stop_server
            summary = watcher.run()
    finally:
        server.stop()
    assert summary.frames == len(long_scene.frames_bgr)
    assert summary.failed_requests == summary.requests - 1 > 0
    assert [len(v) for v in read_events(tmp_path / "ev.jsonl").values()] == [1, 1]


def test_watch_exits_with_some_inputs_failed_when_a_source_cannot_be_read(scene, triton_server, tmp_path, caplog):
    (tmp_path / "broken.mp4").write_bytes(b"this is not a video")
    folder = write_folder(make_scene(n_frames=3), tmp_path / "frames")
    code = main(["watch", "--detector", "haar", f"bad={tmp_path / 'broken.mp4'}", f"good={folder}",
                 "--url", triton_server.config.grpc_url, "--events", str(tmp_path / "ev.jsonl"), "--no-recommendations"])
    assert code == EXIT_SOME_INPUTS_FAILED
    assert "broken.mp4" in caplog.text
    assert "watched 3 frames" in caplog.text  # the readable camera was still watched to its end
