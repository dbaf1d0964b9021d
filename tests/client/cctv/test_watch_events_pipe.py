"""``facialattr watch ... --events - | head -n 1``: a reader that goes away ends the watch quietly, as a Unix filter."""

from __future__ import annotations

import json
import subprocess
import sys

from facialattr.client.cctv.synthetic import make_scene, write_video
from facialattr.errors import EXIT_BROKEN_PIPE


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
