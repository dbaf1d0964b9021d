"""The Parquet dataset ``facialattr score --engine ray`` writes: a folder of shards, each written once, atomically.

Layout of ``OUT/``::

    part-000000.parquet ...        one shard per unit of inputs; the single-process Parquet columns
    _manifest/unit-000000.parquet  the inputs of each unit, written by the walk before scoring starts
    _manifest/plan.json            written last, when the walk is complete: the arguments and unit count

The walk goes to disk, not into memory: a unit file holds ``unit_size`` paths, so
no process holds the list of all inputs. A unit file keeps each refused input's
kind and reason, so the task that scores it rebuilds the walk's error as it was.
A shard is written to a dot-named temporary file (0600, as every result file:
facialattr/files.py), fsynced and renamed, so it exists whole or not at all; its name
depends only on its unit, so a unit scored twice (a retried task, a resumed run)
replaces its shard instead of adding rows. A unit is done when its shard exists
and holds no row the server failed (kind ``server``, or the older ``inference``: a
server failure after every retry, which a resumed run scores again). Readers of the
dataset (pyarrow.dataset, ``ray.data.read_parquet``, pandas) skip names that begin
with ``_`` or ``.``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from facialattr.client.paths import Input, Listing, WalkStats, iter_inputs
from facialattr.errors import ErrorKind, InputError
from facialattr.files import TEMPORARY_SUFFIX, atomic_file, make_private_dirs, refuse_link

log = logging.getLogger(__name__)

MANIFEST_DIR = "_manifest"
PLAN_FILE = "plan.json"
SHARD_PREFIX = "part-"


def unit_file(out: Path, unit: int) -> Path:
    """The manifest file listing unit number ``unit``'s inputs, under the dataset folder ``out``."""
    return Path(out) / MANIFEST_DIR / f"unit-{unit:06d}.parquet"


def shard_file(out: Path, unit: int) -> Path:
    """The Parquet shard holding unit number ``unit``'s result rows, in the dataset folder ``out``."""
    return Path(out) / f"{SHARD_PREFIX}{unit:06d}.parquet"


@dataclass(frozen=True)
class Plan:
    """What the walk found: the arguments it walked and how many units of inputs it wrote."""

    paths: list[str]
    recursive: bool
    follow_symlinks: bool
    unit_size: int
    units: int = 0
    inputs: int = 0
    skipped_symlinks: int = 0

    def same_walk(self, other: Plan) -> bool:
        """True when ``other`` walked the same arguments (so its units can be resumed)."""
        return (self.paths, self.recursive, self.follow_symlinks) == (other.paths, other.recursive, other.follow_symlinks)


def check_dataset(out: os.PathLike | str, *, resume: bool, overwrite: bool) -> bool:
    """Whether ``out`` holds a dataset to continue or replace; raises what :func:`open_dataset` would refuse
    (InputError, OutputError) without touching anything, so a run can fail before it creates ``out``."""
    out = Path(out)
    if out.suffix.lower() in (".csv", ".jsonl", ".ndjson"):
        raise InputError(f"{out}: the Ray engine writes a folder of Parquet shards; give a folder name")
    refuse_link(out, what="output folder")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder: the Ray engine writes a folder of Parquet shards")
    existing = out.is_dir() and any(out.iterdir())
    if existing and not (out / MANIFEST_DIR).is_dir():
        raise InputError(f"{out} is a folder that this engine did not write; refusing to use or delete it")
    if existing and not (resume or overwrite):
        raise InputError(f"{out} exists: pass --resume to continue it or --overwrite to replace it")
    return existing


def open_dataset(out: os.PathLike | str, *, resume: bool, overwrite: bool) -> Path:
    """Check ``out`` against --resume/--overwrite, clear what must go, and create it (0700). Raises InputError,
    OutputError for a symbolic link at ``out``. Call it holding ``OutputLock(out)`` (one run per folder)."""
    out = Path(out)
    if check_dataset(out, resume=resume, overwrite=overwrite) and overwrite:
        shutil.rmtree(out)
    make_private_dirs(out)
    make_private_dirs(out / MANIFEST_DIR)
    for folder in (out, out / MANIFEST_DIR):  # temporary files of a run that died writing
        for stale in folder.glob(f".*{TEMPORARY_SUFFIX}"):
            if stale.is_file() and not stale.is_symlink():
                stale.unlink(missing_ok=True)
    return out


def plan_units(out: Path, paths: Sequence[os.PathLike | str], *, recursive: bool, follow_symlinks: bool,
               unit_size: int, stats: WalkStats | None = None) -> Plan:
    """Walk ``paths`` into unit files under ``out`` (or reuse a complete walk of the same arguments).

    Memory: one unit of paths at a time. Raises InputError when ``out`` holds a walk of other arguments.
    """
    if unit_size < 1:
        raise InputError(f"--shard-size must be at least 1, got {unit_size}")
    wanted = Plan([os.fsdecode(p) for p in paths], recursive, follow_symlinks, unit_size)
    existing = read_plan(out)
    if existing is not None:
        if not existing.same_walk(wanted):
            raise InputError(f"{out} was started with other PATH arguments or walk options ({existing.paths}); "
                             "resume with the same ones or write to a new folder")
        return existing
    stats = stats if stats is not None else WalkStats()
    units = inputs = 0
    unit: list[Input] = []
    for item in iter_inputs(paths, recursive=recursive, follow_symlinks=follow_symlinks, stats=stats):
        unit.append(item)
        if len(unit) == unit_size:
            _write_unit(out, units, unit)
            units, inputs, unit = units + 1, inputs + len(unit), []
    if unit:
        _write_unit(out, units, unit)
        units, inputs = units + 1, inputs + len(unit)
    plan = Plan(**{**asdict(wanted), "units": units, "inputs": inputs, "skipped_symlinks": stats.skipped_symlinks})
    with atomic_file(Path(out) / MANIFEST_DIR / PLAN_FILE, text=True) as f:
        f.write(json.dumps(asdict(plan)))
    return plan


def read_plan(out: Path) -> Plan | None:
    """The complete walk recorded in ``out``; None when there is none (a walk that died is redone)."""
    path = Path(out) / MANIFEST_DIR / PLAN_FILE
    if not path.exists():
        return None
    try:
        return Plan(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path} is damaged ({exc}); write to a new folder") from None


def _write_unit(out: Path, unit: int, items: list[Input]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # The inode of each listed file (not the device: several machines that mount one file system number it
    # differently), so a task reading the unit checks what it opens against what the walk saw.
    listed = [i.listed for i in items]
    table = pa.table({
        "path_bytes": pa.array([os.fsencode(i.path) for i in items], pa.binary()),
        "refused_kind": pa.array([i.refused.kind.value if i.refused else None for i in items], pa.string()),
        "refused_reason": pa.array([i.refused.reason if i.refused else None for i in items], pa.string()),
        "listed_inode": pa.array([entry.inode if entry else None for entry in listed], pa.uint64()),
        "listed_via_link": pa.array([entry.via_link if entry else None for entry in listed], pa.bool_()),
    })
    with atomic_file(unit_file(out, unit)) as f:
        pq.write_table(table, f)


def read_unit(out: Path, unit: int) -> list[Input]:
    """The inputs of one unit, in walk order, as the walk yielded them: a refused input with its error
    rebuilt (same path, reason and kind), a listing without its device."""
    import pyarrow.parquet as pq

    table = pq.read_table(unit_file(out, unit))
    columns = [table.column(c).to_pylist() for c in ("path_bytes", "refused_kind", "refused_reason")]
    # Units written before listings were kept have no listing columns: their files are read as named.
    n = table.num_rows
    inodes = table.column("listed_inode").to_pylist() if "listed_inode" in table.column_names else [None] * n
    via_links = table.column("listed_via_link").to_pylist() if "listed_via_link" in table.column_names else [None] * n
    return [Input.refusal(os.fsdecode(raw), reason, kind=ErrorKind.of(kind)) if kind is not None else
            Input(os.fsdecode(raw), listed=Listing(None, inode, via_link) if inode is not None else None)
            for raw, kind, reason, inode, via_link in zip(*columns, inodes, via_links, strict=True)]


def done_rows(out: Path, unit: int) -> int | None:
    """Rows of the unit's shard when the unit is done; None when it must be scored (again)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = shard_file(out, unit)
    if not path.exists():
        return None
    kinds = pq.read_table(path, columns=["error_kind"]).column("error_kind")
    retryable = pa.array([kind.value for kind in ErrorKind if kind.retryable], pa.string())
    if pc.any(pc.is_in(kinds, value_set=retryable)).as_py():
        return None
    return len(kinds)


def write_shard(out: Path, unit: int, table) -> None:
    """Write one unit's rows as its shard: whole or not at all, replacing an earlier one, 0600."""
    import pyarrow.parquet as pq

    with atomic_file(shard_file(out, unit)) as f:
        pq.write_table(table, f)
