"""The cached-backbone schedule's cache: frozen lower-backbone activations on disk.

Running the frozen lower part of MobileNetV2 costs most of a forward pass, so it
runs once: K randomly augmented views of every training image and the plain view
of every validation image, stored as float16 ``.npy`` memmaps. The upper blocks and
the head then train on the cache for many cheap epochs. Building resumes where it
stopped (rows are flushed in chunks and counted in a progress file), and a cache
whose recipe differs from the requested one is refused rather than reused.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from facialattr.errors import FacialAttrError

log = logging.getLogger(__name__)

CHUNK_BATCHES = 8


def cache_recipe(spec, augmentation, *, views: int, seed: int, counts: dict[str, int]) -> dict:
    """What a cache is built from (model spec, augmentation, views, seed, images per split), as stored beside it.

    :func:`ensure_cache` refuses a cache whose stored recipe differs from this one.
    """
    return {"size_hw": list(spec.size_hw), "alpha": spec.alpha, "weights": str(spec.weights),
            "split_layer": spec.split_layer, "views": views, "seed": seed,
            "augmentation": asdict(augmentation), "counts": counts}


def ensure_cache(cache_dir: Path, model, splits, *, augmentation, views: int, seed: int,
                 batch_size: int = 64) -> dict[str, list[Path]]:
    """Build (or finish, or reuse) the cache; returns the .npy files per split name."""
    from facialattr.training.model import split_shape

    cache_dir.mkdir(parents=True, exist_ok=True)
    recipe = cache_recipe(model.spec, augmentation, views=views, seed=seed,
                          counts={s.name: len(s) for s in splits})
    manifest = cache_dir / "manifest.json"
    if manifest.exists():
        existing = json.loads(manifest.read_text())
        if existing != json.loads(json.dumps(recipe)):
            raise FacialAttrError(f"{cache_dir} holds a cache for another recipe ({manifest}); "
                                  "use another cache directory or delete it")
    else:
        manifest.write_text(json.dumps(recipe, indent=2))
    shape = split_shape(model)
    files: dict[str, list[Path]] = {}
    for split in splits:
        n_views = views if split.name == "train" else 1
        files[split.name] = []
        for view in range(n_views):
            path = cache_dir / f"{split.name}_view{view}.npy"
            aug = augmentation if split.name == "train" else None
            _fill(path, model, split, shape, augmentation=aug, seed=seed * 1000 + view, batch_size=batch_size)
            files[split.name].append(path)
    return files


def _fill(path: Path, model, split, shape, *, augmentation, seed: int, batch_size: int) -> None:
    from facialattr.training.pipeline import image_dataset

    progress = path.with_suffix(".progress.json")
    n = len(split)
    if path.exists() and not progress.exists():
        return  # complete
    done = json.loads(progress.read_text())["rows"] if progress.exists() and path.exists() else 0
    array = (np.lib.format.open_memmap(path, mode="r+") if done else
             np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, *shape)))
    progress.write_text(json.dumps({"rows": done}))
    if done:
        log.info("resuming %s at row %d of %d", path.name, done, n)
    ds = image_dataset(split.paths[done:], model.spec.size_hw, batch_size=batch_size,
                       augmentation=augmentation, aug_seed=seed + done)
    row, start, last_log = done, time.monotonic(), 0.0
    for i, images in enumerate(ds, start=1):
        out = model.lower(images, training=False).numpy().astype(np.float16)
        array[row:row + len(out)] = out
        row += len(out)
        if i % CHUNK_BATCHES == 0 or row == n:
            array.flush()
            progress.write_text(json.dumps({"rows": row}))
        if time.monotonic() - last_log > 30 or row == n:
            last_log = time.monotonic()
            rate = (row - done) / max(last_log - start, 1e-6)
            log.info("caching %s: %d/%d images (%.0f img/s)", path.name, row, n, rate)
    array.flush()
    del array
    progress.unlink()


def load_cache(files: list[Path]) -> np.ndarray:
    """All views of one split, stacked [views, N, ...], read into memory (float16)."""
    return np.stack([np.load(p, mmap_mode="r") for p in files])
