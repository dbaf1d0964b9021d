"""ONNX Runtime sessions, set up one way for every caller: the served model, the parity gate,
INT8 quantization checks, benchmarks and tests.

Kept in the core with only a lazy ``onnxruntime`` import, so any part may use it
(including ``serving/python_model.py`` inside Triton's Python-backend stub) and a
client-only install never loads onnxruntime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def cpu_session(onnx_path: str | Path, *, threads: int = 2, spinning: bool = False) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU provider for ``onnx_path``.

    ``threads`` intra-op threads and one inter-op thread. Spinning (busy-waiting) intra-op
    threads are off unless asked: they starve clients sharing the CPU and measured to cost
    nothing in serving. Raises ImportError without onnxruntime, and onnxruntime's own
    exceptions (naming the file) when the model cannot be loaded.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
