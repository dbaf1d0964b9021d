"""Choose the CCTV face detector by the numbers, and calibrate its CelebA framing.

Evaluate (default): recall, precision and time per frame of every installed
detector on labelled test videos made of a real face photo (see
facialattr.client.cctv.synthetic) under four face sizes and four conditions
(clean, sensor noise, dim light, defocus), written through the mp4v codec and
read back, over a real cluttered photo (skimage's coffee cup) as background. A
detection counts as true when its IoU with a pasted face is >= 0.5 (0.4 for
MTCNN-style tall boxes would change nothing here: see the printed IoU medians).

Calibrate (``--calibrate DIR``): runs each detector on aligned CelebA images
(178x218) and prints where its box falls in that frame, the FrameMargins that
facialattr.client.cctv.detect uses. CelebA images are only read, never stored.

    python benchmarks/cctv_detectors.py
    python benchmarks/cctv_detectors.py --calibrate CELEBA_DIR/img_align_celeba --images 400
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from facialattr.client.cctv.detect import iou, make_detector
from facialattr.client.cctv.synthetic import make_scene, write_video

CANDIDATES = ("haar", "haar-alt2", "skimage-lbp", "mtcnn")
FACE_WIDTHS_PX = (28, 40, 56, 80)


def _degrade(frame: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    if condition == "noise":
        return np.clip(frame + rng.normal(0, 12, frame.shape), 0, 255).astype(np.uint8)
    if condition == "dim":
        return (frame * 0.45).astype(np.uint8)
    if condition == "blur":
        return cv2.GaussianBlur(frame, (0, 0), 1.5)
    return frame


def labelled_videos(folder: Path, *, frames_per_video: int):
    """(condition, face width, frames read back from the mp4, truth boxes) per test video."""
    from skimage.data import coffee

    rng = np.random.default_rng(0)
    for condition in ("clean", "noise", "dim", "blur"):
        for width in FACE_WIDTHS_PX:
            scene = make_scene(n_frames=frames_per_video, size_wh=(480, 360), face_width_px=width,
                               step_px=(480 - 2 * width) // frames_per_video, background_rgb=coffee())
            frames = [_degrade(f, condition, rng) for f in scene.frames_bgr]
            path = write_video(type(scene)(frames, scene.truth, scene.fps), folder / f"{condition}_{width}.mp4")
            cap = cv2.VideoCapture(str(path))
            decoded = [cap.read()[1] for _ in frames]
            cap.release()
            yield condition, width, decoded, [[box for _, box in t] for t in scene.truth]


def evaluate(detector_names, *, frames_per_video: int) -> None:
    """Print each detector's hits, false positives, IoU and ms/frame on the synthetic test videos (a Markdown table).

    A detector whose package is missing is reported and skipped, not fatal.
    """
    detectors = {}
    for name in detector_names:
        try:
            detectors[name] = make_detector(name)
        except Exception as exc:  # a detector whose package is missing is reported, not fatal
            print(f"skipping {name}: {exc}")
    totals = {n: {"tp": 0, "fp": 0, "fn": 0, "s": 0.0, "frames": 0, "ious": []} for n in detectors}
    per_condition: dict[tuple[str, str], list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for condition, width, frames, truth in labelled_videos(Path(tmp), frames_per_video=frames_per_video):
            for name, detector in detectors.items():
                t = totals[name]
                cell = per_condition.setdefault((name, f"{condition}/{width}px"), [0, 0])
                for frame, boxes in zip(frames, truth, strict=True):
                    start = time.perf_counter()
                    found = [d.box_xyxy for d in detector.detect(frame)]
                    t["s"] += time.perf_counter() - start
                    t["frames"] += 1
                    hits = _match(boxes, found)
                    t["ious"].extend(hits)
                    t["tp"] += len(hits)
                    t["fn"] += len(boxes) - len(hits)
                    t["fp"] += len(found) - len(hits)
                    cell[0] += len(hits)
                    cell[1] += len(boxes)
    _print_tables(totals, per_condition)


def _match(truth, found) -> list[float]:
    """IoUs of greedy one-to-one matches with IoU >= 0.5."""
    pairs = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    used_t, used_f, out = set(), set(), []
    for overlap, i, j in pairs:
        if overlap >= 0.5 and i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
            out.append(overlap)
    return out


def _print_tables(totals, per_condition) -> None:
    print("\n| detector | recall | precision | false positives | ms/frame (480x360) | median IoU |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, t in totals.items():
        recall = t["tp"] / max(1, t["tp"] + t["fn"])
        precision = t["tp"] / max(1, t["tp"] + t["fp"])
        print(f"| {name} | {recall:.3f} | {precision:.3f} | {t['fp']} | {1000 * t['s'] / max(1, t['frames']):.0f} | "
              f"{np.median(t['ious']) if t['ious'] else 0:.2f} |")
    columns = sorted({c for _, c in per_condition}, key=lambda c: (c.split("/")[0], int(c.split("/")[1][:-2])))
    print("\nRecall per condition/face width:\n")
    print("| detector | " + " | ".join(columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for name in totals:
        cells = [per_condition[(name, c)] for c in columns]
        print(f"| {name} | " + " | ".join(f"{hit / max(1, n):.2f}" for hit, n in cells) + " |")


def calibrate(folder: Path, detector_names, *, images: int) -> None:
    """Print where each detector's single-face box sits in the first ``images`` aligned CelebA JPEGs of ``folder``.

    The ratios (frame size / box width, box top / box width) are what ``crop_celeba_frame`` needs per detector.
    """
    files = sorted(folder.glob("*.jpg"))[:images]
    print(f"\n{len(files)} aligned CelebA images from {folder}\n")
    print("| detector | single-face hits | box width px | frame width / box | frame height / box | box top / box width | box centre x px |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in detector_names:
        try:
            detector = make_detector(name)
        except Exception as exc:
            print(f"skipping {name}: {exc}")
            continue
        rows = []
        for path in files:
            image = cv2.imread(str(path))
            found = detector.detect(image)
            if len(found) == 1:
                rows.append(found[0].box_xyxy)
        if not rows:
            continue
        b = np.array(rows, float)
        w = b[:, 2] - b[:, 0]
        h_img, w_img = 218, 178
        print(f"| {name} | {len(rows)} | {np.median(w):.0f} | {np.median(w_img / w):.3f} | {np.median(h_img / w):.3f} | "
              f"{np.median(b[:, 1] / w):.3f} | {np.median((b[:, 0] + b[:, 2]) / 2):.1f} |")


def main() -> None:
    """Command line: ``--calibrate DIR`` measures box geometry on CelebA, otherwise detectors are evaluated on test videos."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", nargs="+", default=list(CANDIDATES))
    parser.add_argument("--frames-per-video", type=int, default=12)
    parser.add_argument("--calibrate", type=Path, metavar="CELEBA_ALIGNED_DIR")
    parser.add_argument("--images", type=int, default=400)
    args = parser.parse_args()
    if args.calibrate:
        calibrate(args.calibrate, args.detectors, images=args.images)
    else:
        evaluate(args.detectors, frames_per_video=args.frames_per_video)


if __name__ == "__main__":
    main()
