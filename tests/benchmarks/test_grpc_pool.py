"""benchmarks/grpc_pool.py: two real servers, one per gRPC allocation pool size, loaded in alternating windows."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facialattr.benchmarks import grpc_pool


@pytest.mark.slow
def test_each_pool_size_gets_a_speed_per_round_and_a_ratio_to_the_first(tiny_repository, tmp_path, capsys):
    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(faces / f"{i:06d}.jpg")
    code = grpc_pool.main(["--model-repository", str(tiny_repository), "--images", str(faces), "--pool-sizes", "0",
                           "4", "--batch-size", "4", "--concurrency", "2", "--duration-s", "1", "--rounds", "2",
                           "--limit", "8"])
    assert code == 0
    rows = {line.split(" | ")[0]: line.split(" | ") for line in capsys.readouterr().out.splitlines()
            if line.startswith(("| 0 |", "| 4 |"))}
    assert rows["| 0"][3] == "1.000x |"
    for row in rows.values():
        per_round = [float(v) for v in row[1].split(" / ")]
        assert len(per_round) == 2 and all(v > 0 for v in per_round)
