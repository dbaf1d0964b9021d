"""notebooks/walkthrough.ipynb: stored without outputs, and run top to bottom against the real embedded Triton."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

RUNNER_PATH = Path(__file__).resolve().parents[2] / "notebooks" / "execute_walkthrough.py"


def load_runner():
    """notebooks/execute_walkthrough.py, the one way to run the notebook (``make notebook`` runs it too)."""
    spec = importlib.util.spec_from_file_location("execute_walkthrough", RUNNER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = load_runner()
NOTEBOOK = runner.NOTEBOOK


def read_notebook():
    import nbformat

    return nbformat.read(NOTEBOOK, as_version=4)


def test_notebook_is_stored_without_outputs_or_execution_counts():
    nb = read_notebook()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the walkthrough has code cells"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
    assert "widgets" not in nb.metadata


def test_notebook_has_a_parameters_cell_that_defaults_to_data_made_at_run_time():
    nb = read_notebook()
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert "CELEBA_DIR = None" in tagged[0].source and "WORK_DIR = None" in tagged[0].source


def outputs_text(cell) -> str:
    return "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/plain", "")) for o in cell.outputs)


def images_in(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.outputs)


def test_a_failing_cell_still_leaves_the_executed_copy_with_the_work_dir_and_the_error(tmp_path):
    import nbformat
    from nbclient.exceptions import CellExecutionError

    notebook = tmp_path / "failing.ipynb"
    parameters = nbformat.v4.new_code_cell("WORK_DIR = None")
    parameters.metadata["tags"] = ["parameters"]
    nbformat.write(nbformat.v4.new_notebook(cells=[parameters, nbformat.v4.new_code_cell("print(WORK_DIR)\n1 / 0")]),
                   notebook)
    out = tmp_path / "out" / "failing.executed.ipynb"
    with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
        runner.execute(out, work_dir=tmp_path / "work", notebook=notebook, timeout_s=60)
    ran = nbformat.read(out, as_version=4)
    assert outputs_text(ran.cells[2]) == f"{tmp_path / 'work'}\n"  # the injected WORK_DIR, printed
    assert ran.cells[2].outputs[-1]["ename"] == "ZeroDivisionError"


@pytest.mark.timeout(runner.RUN_TIMEOUT_S + 60)
def test_notebook_runs_top_to_bottom_training_exporting_serving_and_watching(tmp_path):
    # The executed copy is written even when a cell fails, for reading after a failure.
    nb = runner.execute(tmp_path / "walkthrough.executed.ipynb", work_dir=tmp_path / "work")

    text = "\n".join(outputs_text(c) for c in nb.cells if c.cell_type == "code")
    assert sum(images_in(c) for c in nb.cells if c.cell_type == "code") == 4  # imbalance, curves, faces, CCTV
    assert "parity gate passed" in text
    assert "8 inputs this run" in text and "7 scored, 1 failed" in text
    assert "corrupt or truncated image" in text  # the broken download is an error row, the run went on
    work = tmp_path / "work"
    assert (work / "run" / "model.keras").is_file()
    assert sorted(p.name for p in (work / "model_repository" / "facial_attributes").iterdir()) >= ["1", "config.pbtxt"]
    events = [json.loads(line) for line in (work / "events.jsonl").read_text().splitlines()]
    assert events and {e["camera"] for e in events} == {"lobby"}
    assert len({e["track_id"] for e in events}) >= 2  # two people walk through the clip
    assert all(len(e["top10"]) == 10 for e in events)
    recommended = [r for e in events for r in e["recommendations"]]
    assert recommended and {r["provider"] for r in recommended} == {"Lobby Portraits (fictional)"}
    assert "recommendation events:" in text and "-> Lobby Portraits (fictional)" in text
    assert (work / "lobby_annotated.mp4").stat().st_size > 0
    assert "server stopped" in text
