"""run_all.py end to end in its --quick form (tiny model, a few generated JPEGs, no Keras model), and the
command it records: no path of the measuring machine."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
from PIL import Image

from facialattr.benchmarks import report, run_all


@pytest.fixture
def face_folder(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        # CelebA framing (178x218), smooth enough to compress like a photo.
        base = rng.integers(0, 256, size=(28, 22, 3), dtype=np.uint8)
        Image.fromarray(base).resize((178, 218), Image.BILINEAR).save(folder / f"{i:06d}.jpg", quality=90)
    return folder


@pytest.mark.slow
def test_quick_run_writes_results_md_with_targets_plots_and_a_soak_placeholder(tiny_repository, face_folder, tmp_path):
    out, md = tmp_path / "results", tmp_path / "RESULTS.md"
    code = run_all.main(["--images", str(face_folder), "--model-repository", str(tiny_repository), "--quick",
                         "--duration-s", "0.5", "--locust-s", "3", "--out", str(out), "--results-md", str(md)])
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert data["images"] == {"folder": "faces", "count": 40} and not data["model"]["stand_in"]
    # Every path given was absolute, and outside the working directory: each is recorded by its name.
    assert str(tmp_path.parent) not in (out / "results.json").read_text()
    assert data["command"].startswith("python benchmarks/run_all.py --images faces --model-repository ")
    assert data["bulk"]["images"] == 40
    assert all(p["errors"] == 0 and p["requests"] > 0 for p in data["sweep"])
    assert len(data["paired"]["rounds"]) == 2 and data["paired"]["errors"] == 0
    assert {t["name"].split(" ")[0] for t in data["targets"]} >= {"embedded", "16", "p99"}
    assert data["targets"][0]["passed_cpu"] is not None and data["bulk"]["images_per_cpu_s"] > 0
    assert int(data["locust"]["rows"][-1]["Request Count"]) > 0
    for png in ("sweep.png", "baselines.png", "settings_trial.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    text = md.read_text()
    assert "## Targets (one run)" in text and "results/sweep.png" in text
    assert report.SOAK_BEGIN in text and "GPU: not measured" in text

    md.unlink()
    assert run_all.main(["--render-only", "--out", str(out), "--results-md", str(md)]) == 0
    assert md.read_text() == text


RUN = "python benchmarks/run_all.py"


@pytest.mark.parametrize(
    ("argv", "recorded"),
    [
        ("--images /data/celeba/img_align_celeba --per-image-sample 3",
         f"{RUN} --images img_align_celeba --per-image-sample 3"),
        ("--images=/data/celeba/img_align_celeba/ --quick", f"{RUN} --images=img_align_celeba --quick"),
        ("--images ../data/img_align_celeba --keras-model runs/r128_wbce/model.keras",
         f"{RUN} --images img_align_celeba --keras-model runs/r128_wbce/model.keras"),
        ("--images faces --model-repository /srv/models/repo --out=/var/tmp/run/results",
         f"{RUN} --images faces --model-repository repo --out=results"),
        ("--images faces --keras-model {cwd}/runs/r128/model.keras", f"{RUN} --images faces --keras-model runs/r128/model.keras"),
        ("--images '/with space/my faces'", f"{RUN} --images 'my faces'"),
    ],
)
def test_the_recorded_command_names_the_images_folder_by_name_and_no_absolute_path(argv, recorded, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(argv.format(cwd=tmp_path))
    assert run_all.recorded_command(argv, images=run_all.parse_args(argv).images) == recorded
