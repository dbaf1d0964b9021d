"""benchmarks/input_size.py: the same network at several input sizes, timed side by side."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facialattr.benchmarks import input_size


@pytest.mark.slow
def test_each_size_gets_a_speed_and_a_ratio_to_the_reference_size(tmp_path, capsys):
    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(faces / f"{i:06d}.jpg")
    code = input_size.main(["--images", str(faces), "--sizes", "32", "64", "--batch-size", "4", "--rounds", "2",
                            "--limit", "6", "--standin-dir", str(tmp_path / "standin")])
    assert code == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| 32x32") or
            line.startswith("| 64x64")]
    assert [row[2] for row in rows][0] == "1.00x |"
    speeds = [float(row[1]) for row in rows]
    assert len(speeds) == 2 and all(s > 0 for s in speeds)
    assert (tmp_path / "standin" / "64" / "repository").is_dir()  # built where asked, not in the working tree
