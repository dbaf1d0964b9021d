"""``facialattr watch``: its flags (old spellings included), bad values refused before anything starts,
a signal ending it cleanly, and a reader of ``--events -`` that goes away ending it as a Unix filter."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from testsupport import signal_when

from facialattr.app.cli import build_parser, main
from facialattr.app.watch import GIVE_UP_AFTER_S
from facialattr.client.cctv.synthetic import make_scene, write_video
from facialattr.errors import EXIT_BROKEN_PIPE, EXIT_FATAL, EXIT_USAGE


def test_default_detector_is_the_one_the_measurements_chose():
    from facialattr.client.cctv.detect import DEFAULT_DETECTOR

    assert build_parser().parse_args(["watch", "0"]).detector == DEFAULT_DETECTOR == "mtcnn"


def test_watch_is_registered_with_its_options():
    args = build_parser().parse_args(["watch", "0", "--events", "out.jsonl", "--client-metrics-port", "9100"])
    assert args.sources == ["0"] and args.events == "out.jsonl" and args.client_metrics_port == 9100
    assert args.save_faces is None  # privacy: nothing stored unless asked
    assert args.give_up_after_s == GIVE_UP_AFTER_S and args.source_give_up_after_s is None


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--ema-alpha", "1.5"], "--ema-alpha"),
        (["--camera", "lobby"], "NAME=LAT,LON"),
        (["--detector", "nope"], "unknown detector"),
    ],
)
def test_bad_watch_arguments_fail_with_a_message_naming_the_option(tmp_path, caplog, extra, message):
    (tmp_path / "frames").mkdir()
    assert main(["watch", str(tmp_path / "frames"), "--url", "127.0.0.1:1", *extra]) == EXIT_FATAL
    assert message in caplog.text


@pytest.mark.parametrize("flag, value", [("--rescore-every", "0"), ("--max-frames", "0"),
                                         ("--source-give-up-after", "0"), ("--give-up-after", "-1")])
def test_an_out_of_range_value_is_a_usage_error_naming_the_flag(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_:
        main(["watch", str(tmp_path), "--url", "127.0.0.1:1", flag, value])
    assert exit_.value.code == EXIT_USAGE
    assert f"argument {flag}" in capsys.readouterr().err


def test_two_sources_with_the_same_camera_name_are_rejected(tmp_path, caplog):
    (tmp_path / "a").mkdir()
    assert main(["watch", f"x={tmp_path / 'a'}", f"x={tmp_path / 'a'}", "--url", "127.0.0.1:1"]) == EXIT_FATAL
    assert "unique" in caplog.text


def test_events_piped_into_head_end_the_watch_with_the_broken_pipe_status_and_no_traceback(triton_server, tmp_path):
    video = write_video(make_scene(n_frames=30), tmp_path / "scene.mp4")
    # Two faces scored on every frame: far more events than the one line head reads before it exits.
    watch_command = [sys.executable, "-m", "facialattr.app.cli", "watch", "--detector", "haar", str(video),
                     "--url", triton_server.config.grpc_url, "--events", "-", "--rescore-every", "1",
                     "--no-recommendations"]
    with open(tmp_path / "stderr.log", "w") as log:
        watch = subprocess.Popen(watch_command, stdout=subprocess.PIPE, stderr=log)
        head = subprocess.Popen(["head", "-n", "1"], stdin=watch.stdout, stdout=subprocess.PIPE)
        watch.stdout.close()  # head holds the only read end: when it exits, the pipe is closed
        try:
            first, _ = head.communicate(timeout=120)
            status = watch.wait(timeout=120)
        finally:
            for process in (watch, head):
                if process.poll() is None:
                    process.kill()
                    process.wait()
    stderr = (tmp_path / "stderr.log").read_text()
    assert json.loads(first)["camera"] == "cam0"
    assert status == EXIT_BROKEN_PIPE, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr and "Exception ignored" not in stderr, stderr
    assert "closed the pipe" in stderr


@pytest.fixture
def endless_camera():
    """A live HTTP MJPEG camera on this machine that streams until the test ends (10 frames/s)."""
    import cv2

    scene = make_scene(n_frames=20, size_wh=(320, 240), people=1, face_width_px=48, step_px=4)
    jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in scene.frames_bgr]
    closing = threading.Event()

    class Camera(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            i = 0
            while not closing.is_set():
                jpeg = jpegs[i % len(jpegs)]
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg))
                self.wfile.write(jpeg + b"\r\n")
                self.wfile.flush()
                i += 1
                time.sleep(0.1)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    closing.set()
    server.shutdown()
    server.server_close()


def test_sigterm_stops_a_live_watch_cleanly_with_its_summary_and_whole_event_lines(endless_camera, triton_server,
                                                                                   tmp_path):
    events = tmp_path / "events.jsonl"
    command = [sys.executable, "-m", "facialattr.app.cli", "watch", f"gate={endless_camera}", "--detector", "haar",
               "--url", triton_server.config.grpc_url, "--events", str(events), "--rescore-every", "1",
               "--no-recommendations"]
    with open(tmp_path / "watch.log", "w") as log:
        watch = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        status = signal_when(watch, lambda: events.exists() and events.stat().st_size > 0, signal.SIGTERM,
                             what="a first event (a live source must not end by itself)")
    text = (tmp_path / "watch.log").read_text()
    assert status == 0, text
    assert f"stopping (signal {int(signal.SIGTERM)})" in text and "watched " in text
    assert all(json.loads(line)["camera"] == "gate" for line in events.read_text().splitlines())
