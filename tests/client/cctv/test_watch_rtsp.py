"""facialattr watch on a live RTSP stream from a real RTSP server (GStreamer) on 127.0.0.1.

The server is restarted mid-stream: the watcher must notice, reconnect with
backoff and carry on; Ctrl-C (SIGINT) then stops it cleanly with a summary.
A live stream that ends for good stops the watcher after --source-give-up-after.
Needs the Debian packages python3-gi gir1.2-gst-rtsp-server-1.0
gstreamer1.0-plugins-base gstreamer1.0-plugins-good.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facialattr.client.cctv.synthetic import make_scene, write_video

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")


def _gst_rtsp_available() -> bool:
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = pytest.mark.skipif(not _gst_rtsp_available(), reason="GStreamer RTSP server bindings missing (see module doc)")


def wait_for(condition, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class RtspServer:
    """The GStreamer test server; it binds a free port itself (no probe-then-bind race) and reports it.

    A restart comes back on the same port, as a rebooted camera keeps its address.
    """

    def __init__(self, video: Path) -> None:
        self.video, self.process, self.port = video, None, None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self) -> "RtspServer":
        self.process = subprocess.Popen([SYSTEM_PYTHON, str(SERVER_SCRIPT), str(self.port or 0), str(self.video)],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        word, port = self.process.stdout.readline().split()
        assert word == "ready"
        self.port = int(port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def live_video(tmp_path_factory):
    # 30 s at 10 fps, one person walking slowly; MJPEG so the server only re-packs JPEGs.
    scene = make_scene(n_frames=300, size_wh=(320, 240), people=1, face_width_px=48, step_px=1)
    return write_video(scene, tmp_path_factory.mktemp("rtsp") / "live.avi", fourcc="MJPG")


@pytest.fixture
def rtsp_server(live_video):
    server = RtspServer(live_video).start()
    yield server
    server.stop()


def _watch(url, triton_server, tmp_path, *extra):
    log = open(tmp_path / "watch.log", "w")  # noqa: SIM115 - closed by the test's end
    process = subprocess.Popen(
        [sys.executable, "-m", "facialattr.app.cli", "watch", f"door={url}", "--url", triton_server.config.grpc_url,
         "--events", str(tmp_path / "events.jsonl"), "--rescore-every", "3", "--detector", "haar", "--reconnect-max-s", "1",
         "--log-every", "1", "--camera", "door=47.37,8.54", *extra],
        stdout=log, stderr=subprocess.STDOUT)
    return process, tmp_path / "events.jsonl", tmp_path / "watch.log"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_watcher_survives_an_rtsp_server_restart_and_stops_cleanly_on_ctrl_c(rtsp_server, triton_server, tmp_path):
    process, events, log = _watch(rtsp_server.url, triton_server, tmp_path)
    try:
        wait_for(lambda: len(_lines(events)) >= 3, timeout_s=90, what="events from the live stream")
        rtsp_server.stop()
        wait_for(lambda: "stream lost" in log.read_text(), timeout_s=60, what="the watcher to notice the lost stream")
        before_restart = len(_lines(events))
        rtsp_server.start()
        wait_for(lambda: "reconnected" in log.read_text(), timeout_s=60, what="a reconnect")
        wait_for(lambda: len(_lines(events)) >= before_restart + 3, timeout_s=60, what="events after the reconnect")
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert "stopping (signal 2)" in text
    summary = [line for line in text.splitlines() if "watched" in line][-1]
    assert "1 reconnects" in summary and "dropped" in summary and "frames/s" in summary
    records = [json.loads(line) for line in _lines(events)]  # every line complete
    assert {r["camera"] for r in records} == {"door"}
    assert all(len(r["top10"]) == 10 for r in records)


def test_live_stream_that_ends_for_good_stops_the_watcher_after_give_up_time(rtsp_server, triton_server, tmp_path):
    process, events, log = _watch(rtsp_server.url, triton_server, tmp_path, "--source-give-up-after", "3")
    try:
        wait_for(lambda: len(_lines(events)) >= 1, timeout_s=90, what="events from the live stream")
        rtsp_server.stop()
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "giving up" in log.read_text()
