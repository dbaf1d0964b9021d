"""The bytes model's Triton Python-backend implementation (:mod:`facialattr.encoded`).

The repository's ``facial_attributes_bytes/1/model.py`` imports :class:`TritonPythonModel`
from here, in the embedded server (whose stub runs this environment) and in the official
container (with facialattr installed there, docs/SERVER_DECODE.md). Each row is decoded
and prepared by :func:`facialattr.decoding.decode_and_prepare` with the core's limits,
the rows that decoded run through the network in one batch, and a row that did not
gets its error instead of probabilities: one bad image never fails the others' requests.
Only a failure of the network itself fails the requests of its batch (the client retries them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facialattr import encoded, triton_config
from facialattr.contract import ModelContract, Preprocessing
from facialattr.decoding import DecodeError, decode_and_prepare


def decode_rows(rows: Sequence[bytes], preprocessing: Preprocessing) -> tuple[list[np.ndarray | None], list[DecodeError | None]]:
    """Each encoded row as the model's input, or the :class:`DecodeError` that replaced it (never raises for a row)."""
    images: list[np.ndarray | None] = []
    errors: list[DecodeError | None] = []
    for i, data in enumerate(rows):
        try:
            images.append(decode_and_prepare(bytes(data), preprocessing, path=f"row {i}"))
            errors.append(None)
        except DecodeError as exc:
            images.append(None)
            errors.append(exc)
    return images, errors


def row_outputs(images: Sequence[np.ndarray | None], errors: Sequence[DecodeError | None], run, *,
                num_attributes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities [N, A], error kinds [N, 1], errors [N, 1]) of decoded rows; ``run`` maps a uint8 batch to probabilities.

    Rows that failed to decode get zeros and their error's kind and reason; the others empty strings.
    BYTES outputs are ``np.object_`` arrays: ``np.bytes_`` would drop trailing zero bytes (Triton server#2524).
    """
    n = len(images)
    probabilities = np.zeros((n, num_attributes), np.float32)
    ok = [i for i, image in enumerate(images) if image is not None]
    if ok:
        probabilities[ok] = run(np.stack([images[i] for i in ok]))
    # The kind's value (an ErrorKind is a str): the bytes every client version reads.
    kinds = np.array([[b"" if e is None else e.kind.value.encode()] for e in errors], dtype=np.object_).reshape(n, 1)
    reasons = np.array([[b"" if e is None else e.reason.encode("utf-8", "replace")] for e in errors],
                       dtype=np.object_).reshape(n, 1)
    return probabilities, kinds, reasons


class TritonPythonModel:
    """Decode each row, run the pixel model's network once per merged batch, answer per row."""

    def initialize(self, args):
        """Triton hook: read the contract and the inference mode from the config; open ONNX Runtime in "onnx" mode."""
        config_json = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config_json.get("parameters", {}).items()}
        self.contract = ModelContract.from_parameters(params)
        self.pixel_model = params[encoded.PIXEL_MODEL_PARAMETER]
        self.max_batch_size = int(config_json["max_batch_size"])
        self.inference = params.get(encoded.INFERENCE_PARAMETER, encoded.DEFAULT_INFERENCE)
        self.session = None
        if self.inference == "onnx":
            from facialattr.onnx_runtime import cpu_session

            # The pixel model's folder beside this one: its newest version is the one Triton serves.
            pixel_dir = Path(args["model_repository"]).parent / self.pixel_model
            version = max(int(p.name) for p in pixel_dir.iterdir() if p.name.isdigit())
            self.session = cpu_session(pixel_dir / str(version) / triton_config.ONNX_FILENAME,
                                       threads=triton_config.DEFAULT_INTRA_OP_THREADS)

    def execute(self, requests):
        """Triton hook: one response per request, each with a row per image it sent."""
        import triton_python_backend_utils as pb_utils

        rows = [pb_utils.get_input_tensor_by_name(r, encoded.INPUT_NAME).as_numpy().reshape(-1) for r in requests]
        images, errors = decode_rows(np.concatenate(rows) if len(rows) > 1 else rows[0], self.contract.preprocessing)
        try:
            probabilities, kinds, reasons = row_outputs(images, errors, self._run,
                                                        num_attributes=self.contract.num_attributes)
        except Exception as exc:  # the network failed: the server's fault, so every request of the batch is retried
            error = pb_utils.TritonError(f"inference failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, offset = [], 0
        for request_rows in rows:
            part = slice(offset, offset + len(request_rows))
            offset += len(request_rows)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(encoded.OUTPUT_NAME, np.ascontiguousarray(probabilities[part])),
                pb_utils.Tensor(encoded.ERROR_KIND_NAME, kinds[part]),
                pb_utils.Tensor(encoded.ERROR_NAME, reasons[part]),
            ]))
        return responses

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.session is not None:
            return self.session.run([triton_config.OUTPUT_NAME], {triton_config.INPUT_NAME: batch})[0]
        import triton_python_backend_utils as pb_utils

        parts = []
        for start in range(0, len(batch), self.max_batch_size):
            request = pb_utils.InferenceRequest(
                model_name=self.pixel_model, requested_output_names=[triton_config.OUTPUT_NAME],
                inputs=[pb_utils.Tensor(triton_config.INPUT_NAME, batch[start : start + self.max_batch_size])])
            response = request.exec()
            if response.has_error():
                raise RuntimeError(f"{self.pixel_model}: {response.error().message()}")
            parts.append(pb_utils.get_output_tensor_by_name(response, triton_config.OUTPUT_NAME).as_numpy())
        return np.concatenate(parts) if len(parts) > 1 else parts[0]
