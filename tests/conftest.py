"""Shared fixtures: a tiny real ONNX model in a real repository, served by the real embedded Triton.

Helpers (free_ports, make_tiny_repository, start_server) live in tests/testsupport.py:
``from testsupport import make_tiny_repository``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from testsupport import make_tiny_repository, start_server


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory) -> Path:
    return make_tiny_repository(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def triton_server(tiny_repository):
    """One real embedded Triton for the whole session, serving the tiny model."""
    server = start_server(tiny_repository)
    yield server
    server.stop()
