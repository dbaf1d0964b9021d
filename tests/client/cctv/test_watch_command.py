"""The watch command's arguments: bad values are clear errors before anything starts."""

import pytest

from facialattr.app.cli import build_parser, main
from facialattr.errors import EXIT_FATAL


def test_default_detector_is_the_one_the_measurements_chose():
    from facialattr.client.cctv.detect import DEFAULT_DETECTOR

    assert build_parser().parse_args(["watch", "0"]).detector == DEFAULT_DETECTOR == "mtcnn"


def test_watch_is_registered_with_its_options():
    args = build_parser().parse_args(["watch", "0", "--events", "out.jsonl", "--metrics-port", "9100"])
    assert args.sources == ["0"] and args.events == "out.jsonl" and args.metrics_port == 9100
    assert args.save_faces is None  # privacy: nothing stored unless asked


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--rescore-every", "0"], "--rescore-every"),
        (["--ema-alpha", "1.5"], "--ema-alpha"),
        (["--max-frames", "0"], "--max-frames"),
        (["--camera", "lobby"], "NAME=LAT,LON"),
        (["--detector", "nope"], "unknown detector"),
    ],
)
def test_bad_watch_arguments_fail_with_a_message_naming_the_option(tmp_path, caplog, extra, message):
    (tmp_path / "frames").mkdir()
    assert main(["watch", str(tmp_path / "frames"), "--url", "127.0.0.1:1", *extra]) == EXIT_FATAL
    assert message in caplog.text


def test_two_sources_with_the_same_camera_name_are_rejected(tmp_path, caplog):
    (tmp_path / "a").mkdir()
    assert main(["watch", f"x={tmp_path / 'a'}", f"x={tmp_path / 'a'}", "--url", "127.0.0.1:1"]) == EXIT_FATAL
    assert "unique" in caplog.text
