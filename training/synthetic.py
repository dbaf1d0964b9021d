"""A small synthetic data set in CelebA's native layout, made at run time (tests, the notebook walkthrough).

Each 178x218 JPEG is grey noise; a bright band across the top of the face crop
means ``Bangs``, a red tint means ``Male``, a dark bottom band means ``Goatee``.
Every other attribute is a noisy copy of one of those three, so a tiny model can
learn something and the labels are imbalanced the way a real set's are not:
these are pictures of nobody, only the folder layout and file formats are CelebA's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facialattr.contract import CELEBA_ATTRIBUTES

LEARNABLE = ("Bangs", "Male", "Goatee")


def make_celeba(root: Path, *, n_train: int = 96, n_val: int = 48, seed: int = 0, identities: bool = True) -> Path:
    """Write ``img_align_celeba/``, ``list_attr_celeba.txt``, ``list_eval_partition.txt`` (and identities) under ``root``.

    ``n_train`` and ``n_val`` images go to partitions 0 and 1; returns ``root``.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    n = n_train + n_val
    # The learnable three are drawn; every other attribute copies one of them with 10 % of
    # its labels flipped, so validation means reflect learning rather than 37 coin flips.
    drawn = (rng.random((n, len(LEARNABLE))) < 0.4).astype(int)
    source = [LEARNABLE.index(a) if a in LEARNABLE else i % len(LEARNABLE) for i, a in enumerate(CELEBA_ATTRIBUTES)]
    flips = (rng.random((n, len(CELEBA_ATTRIBUTES))) < 0.1) & ~np.isin(CELEBA_ATTRIBUTES, LEARNABLE)
    labels = drawn[:, source] ^ flips.astype(int)
    files = [f"{i + 1:06d}.jpg" for i in range(n)]
    for i, name in enumerate(files):
        Image.fromarray(_pixels(labels[i], rng)).save(root / "img_align_celeba" / name, quality=92)
    rows = [f"{f} " + " ".join("1" if v else "-1" for v in row) for f, row in zip(files, labels, strict=True)]
    (root / "list_attr_celeba.txt").write_text(f"{n}\n" + " ".join(CELEBA_ATTRIBUTES) + "\n" + "\n".join(rows) + "\n")
    (root / "list_eval_partition.txt").write_text(
        "\n".join(f"{f} {0 if i < n_train else 1}" for i, f in enumerate(files)) + "\n")
    if identities:
        (root / "identity_CelebA.txt").write_text("\n".join(f"{f} {i // 2 + 1}" for i, f in enumerate(files)) + "\n")
    return root


def _pixels(row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = rng.normal(110, 25, (218, 178, 3))
    attr = dict(zip(CELEBA_ATTRIBUTES, row, strict=True))
    if attr["Bangs"]:
        img[20:80] += 110
    if attr["Male"]:
        img[..., 0] += 90
    if attr["Goatee"]:
        img[140:198] -= 90
    return np.clip(img, 0, 255).astype(np.uint8)
