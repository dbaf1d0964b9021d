"""The ONNX Runtime thread count has one home (triton_config): a config without it is served with that default."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient
from testsupport import make_tiny_repository, start_server

from facialattr import MODEL_NAME, triton_config


def test_a_config_without_the_thread_parameter_is_served_with_the_core_default(tmp_path):
    repo = make_tiny_repository(tmp_path)
    config_path = repo / MODEL_NAME / "config.pbtxt"
    proto = triton_config.load(config_path)
    del proto.parameters[triton_config.THREADS_PARAMETER]
    config_path.write_text(triton_config.render(proto))

    server = start_server(repo)
    try:
        client = grpcclient.InferenceServerClient(server.config.grpc_url)
        served = client.get_model_config(MODEL_NAME).config
        assert served.parameters[triton_config.THREADS_PARAMETER].string_value == str(
            triton_config.DEFAULT_INTRA_OP_THREADS)
        # The Python-backend model reads it without a default of its own, so it must have loaded and answer.
        tensor = grpcclient.InferInput(triton_config.INPUT_NAME, [1, 64, 64, 3], "UINT8")
        tensor.set_data_from_numpy(np.zeros((1, 64, 64, 3), np.uint8))
        result = client.infer(MODEL_NAME, [tensor])
        assert result.as_numpy(triton_config.OUTPUT_NAME).shape == (1, 40)
        client.close()
    finally:
        server.stop()
