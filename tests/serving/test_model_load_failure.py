"""A model that cannot load stops `serve` at once with the model and the cause, not a wait for readiness."""

from __future__ import annotations

import time

import pytest
from testsupport import make_tiny_repository

from facialattr import MODEL_NAME
from facialattr.errors import ServerError
from facialattr.serving.embedded import EmbeddedTriton, ServerConfig
from facialattr.serving.process import model_load_failures

# Rows as tritonserver 2.51 prints its start-up table (the stub failure seen in a container without libpython).
LOG = """\
+-------------------------+---------+--------------------------------------------------+
| Model                   | Version | Status                                           |
+-------------------------+---------+--------------------------------------------------+
| facial_attributes       | 1       | UNAVAILABLE: Internal: Failed to give execute permission to triton_python_backend_stub |
| facial_attributes_int8  | 2       | READY                                            |
+-------------------------+---------+--------------------------------------------------+
| server_version                   | 2.51.0                                           |
"""


def test_unavailable_rows_of_the_model_table_become_one_line_per_model_with_its_cause():
    assert model_load_failures(LOG) == [
        "model facial_attributes (version 1) did not load: Internal: Failed to give execute permission to "
        "triton_python_backend_stub",
    ]


def test_a_log_without_failed_models_names_none():
    assert model_load_failures("I1204 server.cc] ready\n| facial_attributes | 1 | READY |\n") == []


def test_model_whose_onnx_file_is_corrupt_fails_the_start_fast_naming_the_model(tmp_path):
    repo = make_tiny_repository(tmp_path)
    (repo / MODEL_NAME / "1" / "model.onnx").write_bytes(b"not an onnx file")
    started = time.monotonic()
    with pytest.raises(ServerError, match=rf"model {MODEL_NAME} \(version 1\) did not load: .+"):
        EmbeddedTriton(ServerConfig(repo, grpc_port=0, metrics_port=0, startup_timeout_s=120)).start()
    assert time.monotonic() - started < 60
