"""RESULTS.md names the images folder as $IMAGES: the measuring machine's path means nothing to a reader."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from facialattr.benchmarks import report

RESULTS_JSON = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "results.json"


@pytest.mark.parametrize("folder", ["/somewhere/on/the/measuring/machine/img_align_celeba", "/with space/faces"])
def test_results_md_shows_the_images_folder_as_a_variable_and_by_its_name(folder, tmp_path):
    data = json.loads(RESULTS_JSON.read_text())  # the committed run's results, with the folder replaced
    data["command"] = data["command"].replace(data["images"]["folder"], shlex.quote(folder))
    data["images"]["folder"] = folder
    text = report.write_results_md(data, tmp_path / "RESULTS.md").read_text()
    assert folder not in text
    assert 'python benchmarks/run_all.py --images "$IMAGES" ' in text
    assert f"JPEGs of `$IMAGES`, here `{Path(folder).name}/`" in text


def test_the_committed_results_md_header_is_what_the_report_writes(tmp_path):
    written = report.write_results_md(json.loads(RESULTS_JSON.read_text()), tmp_path / "RESULTS.md").read_text()
    committed = (RESULTS_JSON.parents[1] / "RESULTS.md").read_text()
    header = written[:written.index("## Targets")]
    assert committed.startswith(header)
