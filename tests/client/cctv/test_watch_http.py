"""A live HTTP MJPEG camera served here on 127.0.0.1 (no extra packages): skip, drop, reconnect, end.

The camera serves 20 real-time frames per connection and then hangs up, as a
flaky camera would; the second connection gets another 20, later ones are
refused. The watcher must reconnect once, keep scoring, and stop by itself
once the camera has stayed away for --source-give-up-after.
"""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import pytest

from facialattr.client.cctv.detect import make_detector
from facialattr.client.cctv.events import EventWriter
from facialattr.client.cctv.pipeline import WatchConfig, Watcher
from facialattr.client.cctv.sources import FrameSource, SourceOptions, parse_source
from facialattr.client.cctv.synthetic import make_scene
from facialattr.client.cctv.track import TrackerConfig
from facialattr.client.scorer import Scorer

FRAMES_PER_CONNECTION = 20


@pytest.fixture
def mjpeg_camera():
    scene = make_scene(n_frames=FRAMES_PER_CONNECTION, size_wh=(320, 240), people=1, face_width_px=48, step_px=4)
    jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in scene.frames_bgr]
    connections = []

    class Camera(BaseHTTPRequestHandler):
        def do_GET(self):
            connections.append(time.monotonic())
            if len(connections) > 2:
                self.send_error(503, "camera offline")
                return
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for jpeg in jpegs:
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg))
                self.wfile.write(jpeg + b"\r\n")
                self.wfile.flush()
                time.sleep(0.1)  # 10 frames/s, in real time

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg", connections
    server.shutdown()
    server.server_close()


def test_watcher_reconnects_to_a_dropped_http_camera_and_stops_when_it_stays_away(mjpeg_camera, triton_server, tmp_path, read_events):
    url, connections = mjpeg_camera
    options = SourceOptions(reconnect_initial_s=0.2, reconnect_max_s=0.5, give_up_after_s=2.0)
    source = FrameSource(parse_source(f"gate={url}", default_name="cam0"), options)
    config = WatchConfig(tracker=TrackerConfig(rescore_every_frames=3, max_missed_frames=100))
    with Scorer(triton_server.config.grpc_url) as scorer, EventWriter(tmp_path / "ev.jsonl") as events:
        summary = Watcher([source], make_detector("haar"), scorer, config=config, events=events).run()
    assert summary.reconnects == 1
    assert len(connections) >= 3  # the refused attempts after the second hang-up
    assert summary.frames + summary.dropped <= 2 * FRAMES_PER_CONNECTION
    frames_scored = [e["frame"] for evs in read_events(tmp_path / "ev.jsonl").values() for e in evs]
    # Scored on both connections: frame indexes run on across the reconnect.
    assert min(frames_scored) < FRAMES_PER_CONNECTION <= max(frames_scored)


def test_live_source_keeps_only_the_newest_frame_and_counts_the_skipped_ones(mjpeg_camera):
    url, _ = mjpeg_camera
    source = FrameSource(parse_source(url, default_name="cam0")).start()
    try:
        deadline = time.monotonic() + 30
        while source.frames_read < 6 and time.monotonic() < deadline:
            time.sleep(0.05)  # a consumer busy elsewhere: frames pile up at the source
        frame = source.get()
        assert frame is not None and frame.index >= 5
        # Every frame older than the one handed over was skipped and counted (frames that arrive
        # after the hand-over may add to the count, never subtract).
        assert source.frames_dropped >= frame.index
    finally:
        source.stop()
