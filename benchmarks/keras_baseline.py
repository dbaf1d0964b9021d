"""What a user would write without this project, run as separate processes by the baselines.

``predict-loop``: a tf.data pipeline over the JPEG files (decode, crop, area
resize, batch, prefetch) fed to ``model.predict``: the usual Keras way to score a
folder. ``one-image``: the seed repository's way, ``python run.py -i image``: a
fresh process that loads the model and scores one image. Both print one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _crop_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    from facialattr.client.preprocess import crop_box_pixels

    from facialattr.contract import Preprocessing

    return crop_box_pixels(height, width, Preprocessing(size_hw=(size, size)))


def predict_loop(model_path: Path, files: list[str], *, size: int, batch_size: int) -> dict:
    import keras
    import tensorflow as tf

    t_load = time.perf_counter()
    model = keras.models.load_model(model_path, compile=False)
    load_s = time.perf_counter() - t_load
    first = tf.io.decode_jpeg(tf.io.read_file(files[0]), channels=3)
    top, left, crop_h, crop_w = _crop_box(int(first.shape[0]), int(first.shape[1]), size)

    def load(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        image = tf.image.crop_to_bounding_box(image, top, left, crop_h, crop_w)
        image = tf.image.resize(image, (size, size), method="area")
        return tf.cast(tf.round(image), tf.uint8)

    def dataset():
        return (tf.data.Dataset.from_tensor_slices(files)
                .map(load, num_parallel_calls=tf.data.AUTOTUNE)
                .batch(batch_size).prefetch(tf.data.AUTOTUNE))

    model.predict(dataset().take(2), verbose=0)  # builds the predict function; not timed
    start, cpu_start = time.perf_counter(), time.process_time()
    probabilities = model.predict(dataset(), verbose=0)
    elapsed, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    return {"images": len(probabilities), "seconds": elapsed, "images_per_s": len(probabilities) / elapsed,
            "batch_size": batch_size, "model_load_s": load_s, "cpu_s": cpu_s}


def one_image(model_path: Path, image: str, *, size: int) -> dict:
    import keras
    import numpy as np
    from PIL import Image

    model = keras.models.load_model(model_path, compile=False)
    rgb = np.asarray(Image.open(image).convert("RGB"))
    top, left, crop_h, crop_w = _crop_box(rgb.shape[0], rgb.shape[1], size)
    face = Image.fromarray(rgb[top:top + crop_h, left:left + crop_w]).resize((size, size), Image.BOX)
    probabilities = model.predict(np.asarray(face)[None], verbose=0)[0]
    return {"image": image, "top_attribute_index": int(probabilities.argmax())}


def main(argv: list[str] | None = None) -> None:
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
