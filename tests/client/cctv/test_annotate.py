"""The annotated video: boxes and labels drawn inside the frame, one readable file per camera, frame size kept."""

import cv2
import numpy as np
import pytest

from facialattr.client.cctv.annotate import AnnotatedVideo, draw_tracks, label_scale, place_label


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


FRAME_HW = (480, 640)
NAMES = ["Mouth_Slightly_Open 0.99", "Wearing_Lipstick 0.97", "Heavy_Makeup 0.95"]


@pytest.fixture(scope="module")
def real_frame():
    """A 640x480 frame of the synthetic CCTV scene: the astronaut photo over a textured background."""
    from facialattr.client.cctv.synthetic import make_scene

    frame = make_scene(n_frames=1, size_wh=(FRAME_HW[1], FRAME_HW[0]), people=1).frames_bgr[0]
    assert frame.shape[:2] == FRAME_HW
    return frame


def label_ink(frame, box, names):
    """The pixels draw_tracks changed off the box outline (the label's ink), and the label's placement."""
    outline = np.zeros(frame.shape[:2], np.uint8)
    cv2.rectangle(outline, box[:2], box[2:], 255, 2)
    out = draw_tracks(frame, [(1, box, names)])
    ink = (out != frame).any(axis=2) & (outline == 0)
    placement = place_label(frame.shape[:2], box, ["#1", *names], scale=label_scale(frame.shape[:2]))
    return ink, placement


# (case, face box xyxy in the 640x480 frame, where the label must go relative to the box)
EDGE_CASES = [
    ("right edge", (560, 150, 639, 229), "below"),
    ("left edge", (0, 150, 79, 229), "below"),
    ("top edge", (280, 0, 359, 79), "below"),
    ("bottom edge", (280, 400, 359, 479), "above"),
    ("bottom-right corner", (560, 400, 639, 479), "above"),
    ("a face filling the frame", (0, 0, 639, 479), "inside"),
]


@pytest.mark.parametrize(("case", "box", "side"), EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_a_label_stays_inside_the_frame_wherever_the_face_is(case, box, side):
    placement = place_label(FRAME_HW, box, ["#1", *NAMES], scale=label_scale(FRAME_HW))
    x1, y1, x2, y2 = placement.rect_xyxy
    assert 0 <= x1 < x2 <= FRAME_HW[1] and 0 <= y1 < y2 <= FRAME_HW[0], (case, placement.rect_xyxy)
    assert {"below": y1 > box[3], "above": y2 < box[1], "inside": box[1] <= y1 < y2 <= box[3]}[side], placement


@pytest.mark.parametrize(("case", "box", "side"), EDGE_CASES[:5], ids=[c[0] for c in EDGE_CASES[:5]])
def test_a_label_drawn_at_the_frame_edge_keeps_all_its_ink_inside_its_rectangle(real_frame, case, box, side):
    # Reference: the same label under a face in the middle of a plain frame of the same size, where nothing is cut.
    plain = np.full_like(real_frame, 90)
    reference_ink, _ = label_ink(plain, (280, 150, 359, 229), NAMES)
    ink, placement = label_ink(real_frame, box, NAMES)
    x1, y1, x2, y2 = placement.rect_xyxy
    ys, xs = np.nonzero(ink)
    assert xs.min() >= x1 and xs.max() < x2 and ys.min() >= y1 and ys.max() < y2, case
    # A label cut at the edge loses its far end; a few pixels may match the textured background by chance.
    assert ink.sum() >= 0.97 * reference_ink.sum(), (case, ink.sum(), reference_ink.sum())
