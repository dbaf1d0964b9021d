"""The annotated video: boxes and labels drawn, one readable file per camera, frame size kept."""

import cv2
import numpy as np

from facialattr.client.cctv.annotate import AnnotatedVideo, draw_tracks


def test_track_box_and_labels_are_drawn_on_a_copy():
    frame = np.full((120, 160, 3), 90, np.uint8)
    out = draw_tracks(frame, [(3, (20, 10, 60, 50), ["Smiling 0.91"])])
    assert (frame == 90).all()  # the original frame is untouched
    assert (out[10, 20:61] != 90).any(axis=1).all()  # top edge of the box
    assert (out[55:, 20:] != 90).any()  # labels under the box


def test_each_camera_gets_its_own_video_and_a_resized_frame_keeps_the_first_size(tmp_path):
    video = AnnotatedVideo(tmp_path / "out.avi", ["a", "b"], fps=5)
    for size in ((120, 160), (120, 160), (240, 320)):
        video.write("a", np.zeros((*size, 3), np.uint8))
    video.write("b", np.zeros((120, 160, 3), np.uint8))
    video.close()
    assert sorted(p.name for p in video.paths()) == ["out_a.avi", "out_b.avi"]
    cap = cv2.VideoCapture(str(tmp_path / "out_a.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (160, 120)
