"""Run notebooks/walkthrough.ipynb top to bottom, headless, and write the executed copy to open anywhere.

    .venv/bin/python notebooks/execute_walkthrough.py [--out notebooks/walkthrough.executed.ipynb] [--work-dir DIR]

``make notebook`` runs this, and tests/notebooks/test_walkthrough.py calls ``execute``: one way to run
the notebook. It needs the kernel's packages (the ``all`` extra: nbclient and ipykernel come with ``dev``),
not a Jupyter front end. The copy holds every output (charts, tables, the CCTV frames); the stored
notebook stays without outputs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"
EXECUTED = NOTEBOOK.with_name("walkthrough.executed.ipynb")
# Per cell; training dominates, measured well under this on 2 busy cores (see the report of issue 15).
RUN_TIMEOUT_S = 1200

log = logging.getLogger("walkthrough")


def execute(out_path: Path, *, work_dir: Path | None = None, timeout_s: float = RUN_TIMEOUT_S,
            notebook: Path = NOTEBOOK):
    """Run the notebook in a fresh ``python3`` kernel from the repository root and write it, outputs and
    all, to ``out_path``, also when a cell fails (nbclient's CellExecutionError is then raised after the
    write, so the copy shows what ran). ``work_dir`` becomes the notebook's WORK_DIR (None: the notebook
    makes a temporary folder). Returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    if work_dir is not None:
        params = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        # After the parameters cell, as papermill injects parameters, so the defaults stay readable above it.
        injected = nbformat.v4.new_code_cell(f"WORK_DIR = {str(Path(work_dir).resolve())!r}")
        injected.metadata["tags"] = ["injected-parameters"]
        nb.cells.insert(params + 1, injected)
    code_cells = sum(c.cell_type == "code" for c in nb.cells)
    started = time.monotonic()

    def cell_started(cell, cell_index: int) -> None:
        if cell.cell_type == "code":
            first_line = cell.source.splitlines()[0] if cell.source else ""
            log.info("cell %d of %d (%.0f s so far): %s", cell_index + 1, len(nb.cells),
                     time.monotonic() - started, first_line[:70])

    log.info("running %s: %d code cells", Path(notebook).name, code_cells)
    client = NotebookClient(nb, timeout=timeout_s, kernel_name="python3", on_cell_start=cell_started,
                            resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute()
    finally:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out_path)
    return nb


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring); 0 when every cell ran, 1 when one failed."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=EXECUTED, help="the executed copy (default: %(default)s)")
    p.add_argument("--work-dir", type=Path, help="the notebook's WORK_DIR (default: a new temporary folder)")
    p.add_argument("--timeout-s", type=float, default=RUN_TIMEOUT_S, help="per cell (default: %(default)s)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from nbclient.exceptions import CellExecutionError

    try:
        execute(args.out, work_dir=args.work_dir, timeout_s=args.timeout_s)
    except CellExecutionError as exc:
        log.error("%s\na cell failed; the executed copy up to it: %s", exc, args.out)
        return 1
    log.info("executed notebook, outputs included: %s (open it in JupyterLab, VS Code or any notebook viewer)",
             args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
