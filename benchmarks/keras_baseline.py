"""What a user would write without the served path, run as separate processes by the baselines.

``predict-loop``: a tf.data pipeline over the JPEG files (decode, crop, area
resize, batch, prefetch; training's own, so the pixels are the contract's) fed to
``model.predict``: the usual Keras way to score a folder. ``one-image``: the seed
repository's way, ``python run.py -i image``: a fresh process that loads the model
and scores one image. Both print one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def predict_loop(model_path: Path, files: list[str], *, size: int, batch_size: int) -> dict:
    """Score JPEG ``files`` with ``model.predict`` over training's tf.data pipeline (the contract's crop, ``size`` px).

    Returns images, seconds (wall, after a warm-up of two batches), images_per_s, batch_size,
    model_load_s and cpu_s (this process's CPU seconds while predicting).
    """
    import keras
    import tensorflow as tf

    from facialattr.training.pipeline import image_dataset

    t_load = time.perf_counter()
    model = keras.models.load_model(model_path, compile=False)
    load_s = time.perf_counter() - t_load

    def dataset():
        return image_dataset(files, (size, size), batch_size=batch_size, parallel_calls=tf.data.AUTOTUNE)

    model.predict(dataset().take(2), verbose=0)  # builds the predict function; not timed
    start, cpu_start = time.perf_counter(), time.process_time()
    probabilities = model.predict(dataset(), verbose=0)
    elapsed, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    return {"images": len(probabilities), "seconds": elapsed, "images_per_s": len(probabilities) / elapsed,
            "batch_size": batch_size, "model_load_s": load_s, "cpu_s": cpu_s}


def one_image(model_path: Path, image: str, *, size: int) -> dict:
    """Load the Keras model and score one image file, prepared by the client's code at ``size`` px.

    Returns the image and the index of its most probable attribute. Raises the client's
    ``DecodeError`` naming the file when it does not decode.
    """
    import keras

    from facialattr.client.preprocess import load_and_prepare
    from facialattr.contract import Preprocessing

    model = keras.models.load_model(model_path, compile=False)
    face = load_and_prepare(image, Preprocessing(size_hw=(size, size)))
    probabilities = model.predict(face[None], verbose=0)[0]
    return {"image": image, "top_attribute_index": int(probabilities.argmax())}


def main(argv: list[str] | None = None) -> None:
    """``predict-loop`` or ``one-image`` (see the module docstring); prints one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    loop = sub.add_parser("predict-loop")
    loop.add_argument("--model", type=Path, required=True)
    loop.add_argument("--file-list", type=Path, required=True, help="text file, one image path a line")
    loop.add_argument("--size", type=int, required=True)
    loop.add_argument("--batch-size", type=int, default=32)
    one = sub.add_parser("one-image")
    one.add_argument("--model", type=Path, required=True)
    one.add_argument("--image", required=True)
    one.add_argument("--size", type=int, required=True)
    args = parser.parse_args(argv)
    if args.mode == "predict-loop":
        files = [line for line in args.file_list.read_text().splitlines() if line]
        result = predict_loop(args.model, files, size=args.size, batch_size=args.batch_size)
    else:
        result = one_image(args.model, args.image, size=args.size)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
