"""The batch x concurrency sweep against the real embedded Triton (tiny 64x64 model)."""

from __future__ import annotations

import json

from facialattr import repository
from facialattr.app.cli import main as cli_main
from facialattr.benchmarks import images
from facialattr.benchmarks.load import LoadSpec, run_load
from facialattr.benchmarks.sweep import ServingSettings, configured_repository, run_sweep, settings_of


def test_sweep_measures_every_point_with_server_statistics(triton_server):
    frames = images.synthetic_images(32, (64, 64))
    points = run_sweep(triton_server.config.grpc_url, frames, batch_sizes=[1, 4, 32], concurrencies=[1, 3],
                       duration_s=1.0, warmup_s=0.3, max_batch_size=16, server_pid=triton_server.pid)

    assert [(p.batch_size, p.concurrency) for p in points] == [(1, 1), (1, 3), (4, 1), (4, 3)]  # 32 > max batch
    for p in points:
        assert p.errors == 0 and p.requests > 0
        assert p.images_per_s > 0 and p.p50_ms <= p.p95_ms <= p.p99_ms
        assert p.server.requests > 0 and p.server.formed_batches
        assert p.server.mean_formed_batch >= p.batch_size
        assert max(p.server.formed_batches) <= 16
        assert p.cpu_s > 0 and p.images_per_cpu_s > 0


def test_a_request_the_server_rejects_is_counted_as_an_error_not_a_crash(triton_server):
    wrong_size = images.synthetic_images(4, (32, 32))
    result = run_load(triton_server.config.grpc_url, wrong_size, LoadSpec(batch_size=1, concurrency=1,
                                                                          duration_s=0.5, warmup_s=0.1))
    assert result.requests == 0 and result.errors > 0
    assert result.cpu_s is None  # no server pid: CPU cannot be accounted


def test_configured_repository_carries_the_settings_and_keeps_the_contract(tiny_repository, tmp_path):
    settings = ServingSettings(instances=2, intra_op_threads=1, max_queue_delay_us=500)
    copy = configured_repository(tiny_repository, tmp_path / "repo", settings)
    original, entry = repository.load_model(tiny_repository), repository.load_model(copy)
    assert settings_of(entry.config) == settings
    assert entry.contract == original.contract
    assert settings_of(original.config) == ServingSettings()  # the source is left alone


def test_bench_command_against_a_url_writes_json_and_plot(triton_server, tmp_path):
    code = cli_main(["bench", "--url", triton_server.config.grpc_url, "--batch-sizes", "2",
                     "--concurrency", "2", "--duration-s", "0.5", "--warmup-s", "0.2", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert [(p["batch_size"], p["concurrency"]) for p in data["points"]] == [(2, 2)]
    assert data["model"]["size_hw"] == [64, 64] and data["settings"] is None
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_command_starts_its_own_server_with_overridden_settings(tiny_repository, tmp_path):
    code = cli_main(["bench", "--model-repository", str(tiny_repository), "--batch-sizes", "1",
                     "--concurrency", "1", "--duration-s", "0.5", "--warmup-s", "0.2",
                     "--queue-delay-us", "100", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert data["settings"]["max_queue_delay_us"] == 100
    assert data["points"][0]["requests"] > 0
