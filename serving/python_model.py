"""Triton Python-backend model that runs the repository's ONNX file with onnxruntime.

The embedded tritonserver (from nvidia-pytriton) has no ONNX Runtime backend, so
:mod:`facialattr.serving.embedded` serves the same ``model.onnx`` through this file.
It is copied into a derived repository at start-up; do not import it elsewhere.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """The Python-backend twin of an ONNX model: runs the same model.onnx with ONNX Runtime inside Triton's stub."""

    def initialize(self, args):
        """Triton hook: open the version's model.onnx with the configured intra-op thread count."""
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        # Importable: the launcher makes the stub's interpreter use the launching environment,
        # where facialattr is installed; the session is set up as everywhere else (spinning off:
        # spinning threads starve clients that share the CPU, measured to cost nothing here).
        from facialattr.onnx_runtime import cpu_session

        onnx_path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        # The launcher always sets the thread count (default: facialattr.triton_config.DEFAULT_INTRA_OP_THREADS).
        self.session = cpu_session(onnx_path, threads=int(params["intra_op_thread_count"]))
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        """Triton hook: run the merged batch of ``requests`` once and split the output back per request (an error response each if it fails)."""
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        sizes = [len(a) for a in arrays]
        try:
            batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            output = self.session.run([self.output_name], {self.input_name: batch})[0]
        except Exception as exc:  # one bad batch must not take the server down
            error = pb_utils.TritonError(f"inference failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, offset = [], 0
        for n in sizes:
            tensor = pb_utils.Tensor(self.output_name, np.ascontiguousarray(output[offset : offset + n]))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            offset += n
        return responses
