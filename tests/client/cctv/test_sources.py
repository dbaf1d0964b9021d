"""Frame sources: what a SOURCE argument means, and reading real files and folders."""

import cv2
import numpy as np
import pytest

from facialattr.client.cctv.sources import FrameSource, parse_source
from facialattr.client.cctv.synthetic import make_scene, write_folder, write_video
from facialattr.errors import InputError


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    scene = make_scene(n_frames=8, size_wh=(160, 120), face_width_px=24, step_px=4)
    return scene, write_video(scene, root / "clip.avi", fourcc="MJPG"), write_folder(scene, root / "frames", suffix=".png")


@pytest.mark.parametrize(
    "text, name, target, kind",
    [
        ("rtsp://127.0.0.1:8554/cam", "cam3", "rtsp://127.0.0.1:8554/cam", "url"),
        ("door=rtsp://10.0.0.2/live?user=a", "door", "rtsp://10.0.0.2/live?user=a", "url"),
        ("http://host/mjpeg?x=1", "cam3", "http://host/mjpeg?x=1", "url"),
        ("0", "cam3", 0, "webcam"),
        ("lobby=2", "lobby", 2, "webcam"),
    ],
)
def test_source_text_names_a_url_or_webcam(text, name, target, kind):
    spec = parse_source(text, default_name="cam3")
    assert (spec.name, spec.target, spec.kind, spec.live) == (name, target, kind, True)


def test_files_and_folders_are_recorded_sources_not_live(media):
    _, video, folder = media
    assert parse_source(str(video), default_name="a").kind == "file"
    assert parse_source(f"gate={folder}", default_name="a").kind == "folder"
    assert not parse_source(str(folder), default_name="a").live


def test_missing_path_is_an_input_error_naming_it():
    with pytest.raises(InputError, match="nowhere.mp4"):
        parse_source("nowhere.mp4", default_name="cam0")


def _drain(source):
    frames = []
    while not source.finished:
        frame = source.get(timeout_s=0.5)
        if frame is not None:
            frames.append(frame)
    source.stop()
    return frames


@pytest.mark.parametrize("which", ["video", "folder"])
def test_recorded_source_hands_over_every_frame_in_order(media, which):
    scene, video, folder = media
    spec = parse_source(str(video if which == "video" else folder), default_name="cam0")
    frames = _drain(FrameSource(spec).start())
    assert [f.index for f in frames] == list(range(len(scene.frames_bgr)))
    # MJPG is lossy; PNG is exact.
    tolerance = 12 if which == "video" else 0
    for frame, original in zip(frames, scene.frames_bgr, strict=True):
        assert np.abs(frame.image_bgr.astype(int) - original).mean() <= tolerance


def test_unreadable_file_in_a_folder_is_skipped_and_the_rest_still_read(media, tmp_path):
    scene, _, folder = media
    for path in sorted(folder.iterdir())[:3]:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "frame_00001.png").write_bytes(b"not a png")
    source = FrameSource(parse_source(str(tmp_path), default_name="cam0")).start()
    frames = _drain(source)
    assert len(frames) == 2 and source.frames_unreadable == 1
    assert cv2.absdiff(frames[1].image_bgr, scene.frames_bgr[2]).max() == 0


def test_folder_frames_are_decoded_by_the_client_decoder_upright_and_in_bgr(tmp_path):
    from PIL import Image

    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned 90 degrees clockwise
    Image.fromarray(rgb).save(tmp_path / "frame_00000.jpg", quality=95, exif=exif)
    Image.fromarray(rgb).save(tmp_path / "frame_00001.png")
    # Over the decoder's pixel limit (50 MP) by its header alone: refused before decoding, skipped.
    Image.new("L", (8000, 8000)).save(tmp_path / "frame_00002.png", optimize=False)
    source = FrameSource(parse_source(str(tmp_path), default_name="cam0")).start()
    frames = _drain(source)
    upright, plain = (f.image_bgr for f in frames)
    assert upright.shape == (40, 20, 3) and plain.shape == (20, 40, 3)
    assert upright[5, 10].tolist()[2] > 200 and upright[5, 10].tolist()[0] < 60  # top now red, in BGR order
    assert plain[10, 5].tolist() == [0, 0, 255]
    assert source.frames_unreadable == 1


def test_unreadable_video_file_ends_its_source_with_an_error_naming_it(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"this is not a video")
    source = FrameSource(parse_source(str(tmp_path / "broken.mp4"), default_name="cam0")).start()
    assert _drain(source) == []
    assert "broken.mp4" in source.error
