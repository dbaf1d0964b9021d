"""docker-compose.yml: no Docker engine here, so the file is checked as data (and by the CLI where it exists)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
# Triton container release -> server version; the embedded server is 2.51.0 (nvidia-pytriton 0.7.0).
CONTAINER_FOR_SERVER = {"2.51.0": "24.10"}


@pytest.fixture(scope="module")
def triton_service() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]["triton"]


def test_image_is_the_official_container_matching_the_embedded_server(triton_service):
    assert triton_service["image"] == f"nvcr.io/nvidia/tritonserver:{CONTAINER_FOR_SERVER['2.51.0']}-py3"


def test_pixel_models_are_mounted_read_only_and_served_without_model_control(triton_service):
    # The bytes twin needs the facialattr package, which the official container lacks.
    assert triton_service["volumes"] == [f"./model_repository/{name}:/models/{name}:ro"
                                         for name in ("facial_attributes", "facial_attributes_int8")]
    assert "--model-repository=/models" in triton_service["command"]
    assert "--model-control-mode=none" in triton_service["command"]


def test_grpc_requests_are_not_pooled_like_in_the_embedded_server(triton_service):
    """A pooled request object keeps the memory of the largest request it held (SECURITY.md)."""
    from facialattr.serving.embedded import ServerConfig

    pool_size = ServerConfig(ROOT).grpc_infer_allocation_pool_size
    assert f"--grpc-infer-allocation-pool-size={pool_size}" in triton_service["command"]


def test_ports_are_tritons_and_published_on_loopback_only(triton_service):
    assert sorted(triton_service["ports"]) == [f"127.0.0.1:{p}:{p}" for p in (8000, 8001, 8002)]


def test_one_gpu_is_reserved_and_readiness_is_health_checked(triton_service):
    device = triton_service["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == 1
    assert any("/v2/health/ready" in part for part in triton_service["healthcheck"]["test"])


def test_docker_compose_config_accepts_the_file_where_the_cli_exists():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no docker compose CLI on this machine (checked as data above)")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
