"""``facialattr score --engine ray`` against the single-process command: images/s and CPU per image.

    python benchmarks/ray_vs_single.py --images DIR [--limit 4000] [--rounds 2] [--model-repository model_repository]

Both sides are the real command (a subprocess) on the same JPEGs (the first ``--limit`` under
DIR, searched recursively, in path order) and the same embedded Triton; the Ray side joins a
Ray head this script starts beforehand (``ray start --head --num-cpus <cores>``), as a user with
a running cluster would. After one short warm-up each, runs alternate (single, Ray, single,
Ray, ...) so a noisy host hurts both alike. For every run it prints images/s, the machine-wide
busy CPU per image (all cores, every process, from /proc/stat) and the load average beside
them; for Ray runs also where that CPU went (the driver, the scoring actors, Ray's daemons,
Triton, the rest of the machine). Then the medians and the ratios Ray / single-process.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from facialattr.app.flags import add_model_repository, model_repository

SUMMARY = re.compile(r"(\d+) inputs this run in ([\d.]+) s \(([\d.]+) images/s\)")
RAY_START = re.compile(r"ray engine: start ([\d.]+) s")
JPEG_SUFFIXES = (".jpg", ".jpeg")
WARM_UP_IMAGES = 300
IDLE_SAMPLE_S = 5.0
SAMPLE_EVERY_S = 0.25
# /proc/stat columns that count as busy: user nice system irq softirq steal (not idle, not iowait).
BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)


@dataclass
class Run:
    """One command run: what it scored, in how long, and the CPU the machine spent meanwhile."""

    engine: str
    images: int
    wall_s: float
    own_rate: float  # the command's own images/s (its summary line)
    busy_cpu_s: float  # machine-wide, from /proc/stat
    load: tuple[float, float, float]
    parts_cpu_s: dict[str, float] = field(default_factory=dict)
    start_s: float = 0.0

    @property
    def rate(self) -> float:
        """Images per second of wall time, process start to exit."""
        return self.images / self.wall_s

    @property
    def cpu_ms_per_image(self) -> float:
        """Machine-wide busy CPU milliseconds per image."""
        return 1000 * self.busy_cpu_s / self.images


def busy_cpu_s() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        columns = [int(x) for x in f.readline().split()[1:]]
    return sum(columns[i] for i in BUSY_COLUMNS if i < len(columns)) / os.sysconf("SC_CLK_TCK")


def find_images(folder: Path, limit: int) -> list[Path]:
    """The first ``limit`` JPEGs under ``folder`` (recursively) in path order; exits when there are fewer."""
    found = sorted(Path(root) / name for root, _, names in os.walk(folder) for name in names
                   if name.lower().endswith(JPEG_SUFFIXES))[:limit]
    if len(found) < limit:
        raise SystemExit(f"{folder} holds only {len(found)} JPEGs; need {limit} (--limit)")
    return found


def link_images(files: list[Path], folder: Path) -> Path:
    """A flat folder of symbolic links to ``files`` (numbered: names from subfolders may repeat)."""
    folder.mkdir()
    for i, path in enumerate(files):
        (folder / f"{i:07d}-{path.name}").symlink_to(path.resolve())
    return folder


class ProcessCpu:
    """CPU seconds per part of the machine, from every live process: Triton, Ray's workers and daemons."""

    def __init__(self, *, triton_pid: int | None, ray_pgid: int) -> None:
        self.triton_pid, self.ray_pgid = triton_pid, ray_pgid

    def snapshot(self) -> dict[int, tuple[str, float]]:
        """pid -> (part, CPU seconds so far) for the processes of the parts this benchmark knows."""
        import psutil

        triton = set()
        if self.triton_pid is not None:
            try:
                root = psutil.Process(self.triton_pid)
                triton = {root.pid, *(p.pid for p in root.children(recursive=True))}
            except psutil.NoSuchProcess:
                pass
        procs = {p.pid: p for p in psutil.process_iter(["pid", "ppid", "cmdline"])}
        ray = self._ray_tree(procs)
        out = {}
        for proc in procs.values():
            try:
                part = self._part(proc, triton, ray)
                if part is not None:
                    times = proc.cpu_times()
                    out[proc.pid] = (part, times.user + times.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return out

    def _ray_tree(self, procs: dict) -> set[int]:
        """The head's process group and every descendant (Ray's workers leave the group, not the tree)."""
        children: dict[int, list[int]] = {}
        for proc in procs.values():
            children.setdefault(proc.info["ppid"], []).append(proc.pid)
        tree, todo = set(), []
        for pid in procs:
            try:
                if os.getpgid(pid) == self.ray_pgid:
                    todo.append(pid)
            except ProcessLookupError:
                continue
        while todo:
            pid = todo.pop()
            if pid not in tree:
                tree.add(pid)
                todo.extend(children.get(pid, []))
        return tree

    def _part(self, proc, triton: set[int], ray: set[int]) -> str | None:
        if proc.pid in triton:
            return "triton"
        if proc.pid not in ray:
            return None
        cmdline = " ".join(proc.info["cmdline"] or [])
        return "ray actors/workers" if cmdline.startswith("ray::") or "default_worker.py" in cmdline else "ray daemons"

    @staticmethod
    def diff(before: dict, after: dict) -> dict[str, float]:
        """CPU seconds per part between two snapshots (a process new in ``after`` counts from zero)."""
        parts: dict[str, float] = {}
        for pid, (part, cpu_s) in after.items():
            parts[part] = parts.get(part, 0.0) + cpu_s - before.get(pid, (part, 0.0))[1]
        return parts


class Sampler:
    """Snapshots every SAMPLE_EVERY_S while a run goes: a process that exits before the run ends (a Ray actor
    killed at the end) is counted up to its last sample, not lost."""

    def __init__(self, meter: ProcessCpu) -> None:
        import threading

        self.meter, self.last = meter, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while True:
            self.last.update(self.meter.snapshot())
            if self._stop.wait(SAMPLE_EVERY_S):
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.last.update(self.meter.snapshot())


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children (the command subprocesses and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_command(engine: str, command: list[str], n: int, meter: ProcessCpu) -> Run:
    """Run one ``facialattr score`` command and measure it."""
    load = os.getloadavg()
    before, children, busy = meter.snapshot(), children_cpu_s(), busy_cpu_s()
    started = time.perf_counter()
    with Sampler(meter) as seen:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    busy, children = busy_cpu_s() - busy, children_cpu_s() - children
    parts = ProcessCpu.diff(before, seen.last)
    summary = SUMMARY.search(done.stderr)
    if done.returncode != 0 or not summary or int(summary[1]) != n:
        raise SystemExit(f"facialattr score --engine {engine} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    parts["driver (the command process)"] = children
    parts["rest of the machine"] = busy - sum(parts.values())
    start = RAY_START.search(done.stderr)
    return Run(engine, n, wall, float(summary[3]), busy, load, parts, float(start[1]) if start else 0.0)


def command(engine: str, folder: Path, out: Path, url: str, args: argparse.Namespace, address: str) -> list[str]:
    """The ``facialattr score`` command line of one run."""
    if engine == "single":
        out = out.with_suffix(".parquet")
    line = [sys.executable, "-m", "facialattr.app.cli", "score", str(folder), "--out", str(out), "--url", url,
            "--follow-symlinks", "--overwrite", "--no-progress"]
    if engine == "single":
        return line
    line += ["--engine", "ray", "--ray-address", address, "--shard-size", str(args.shard_size)]
    return line + (["--ray-actors", str(args.ray_actors)] if args.ray_actors else [])


def parse_args(argv=None) -> argparse.Namespace:
    """The benchmark's options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, required=True, metavar="DIR",
                   help="a folder of face JPEGs, searched recursively, e.g. CelebA's img_align_celeba/")
    p.add_argument("--limit", type=int, default=4000, metavar="N", help="images to score per run (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="alternating runs of each engine (default: %(default)s)")
    add_model_repository(p)
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--ray-actors", type=int, default=None, help="default: the engine's (one per CPU of the cluster)")
    p.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs the Ray head offers (default: all cores)")
    args = p.parse_args(argv)
    if args.limit < 1 or args.rounds < 1:
        p.error("--limit and --rounds must be at least 1")
    return args


def main(argv=None) -> int:
    """Command line (see the module docstring); returns the exit status 0."""
    import logging

    from facialattr.client.ray_cluster import start_ray_head, stop_ray_head
    from facialattr.serving.embedded import start_on_free_ports

    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    files = find_images(args.images, args.limit)
    print(f"images: {len(files)} under {args.images}; cores: {os.cpu_count()}; ray head CPUs: {args.cpus}; "
          f"shard size {args.shard_size}; load average at start: {_load(os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ray-bench-", dir="/tmp", ignore_cleanup_errors=True) as tmp:  # short socket paths
        tmp = Path(tmp)
        folder = link_images(files, tmp / "images")
        warm = link_images(files[:WARM_UP_IMAGES], tmp / "warm")
        (tmp / "ray-head").mkdir()
        server = start_on_free_ports(model_repository(args))
        head, address = start_ray_head(tmp / "ray-head", num_cpus=args.cpus)
        try:
            meter = ProcessCpu(triton_pid=server.pid, ray_pgid=head.pid)
            idle = _idle(meter)
            url = server.config.grpc_url
            for engine in ("single", "ray"):  # imports, the cluster's worker processes, the server's first batches
                run_command(engine, command(engine, warm, tmp / f"warm-{engine}", url, args, address),
                            min(len(files), WARM_UP_IMAGES), meter)
            runs = []
            for i in range(args.rounds):
                for engine in ("single", "ray"):
                    runs.append(run_command(engine, command(engine, folder, tmp / engine, url, args, address),
                                            len(files), meter))
                    print(f"round {i + 1}/{args.rounds} {_line(runs[-1])}", flush=True)
        finally:
            stop_ray_head(head)
            server.stop()
    _report(runs, idle)
    print(f"load average at end: {_load(os.getloadavg())}")
    return 0


def _idle(meter: ProcessCpu) -> dict[str, float]:
    """CPU per second the machine and Ray's idle daemons spend with nothing scoring."""
    before, busy = meter.snapshot(), busy_cpu_s()
    time.sleep(IDLE_SAMPLE_S)
    parts = ProcessCpu.diff(before, meter.snapshot())
    idle = {"machine": (busy_cpu_s() - busy) / IDLE_SAMPLE_S,
            **{part: cpu_s / IDLE_SAMPLE_S for part, cpu_s in parts.items()}}
    print("idle, CPU-s per s: " + ", ".join(f"{k} {v:.3f}" for k, v in idle.items()), flush=True)
    return idle


def _line(run: Run) -> str:
    start = f", start {run.start_s:.1f} s" if run.engine == "ray" else ""
    return (f"{run.engine:6s}: {run.rate:.0f} images/s (own {run.own_rate:.0f}{start}), "
            f"{run.cpu_ms_per_image:.2f} busy CPU-ms/image; load average {_load(run.load)}")


def _report(runs: list[Run], idle: dict[str, float]) -> None:
    med = statistics.median
    by = {e: [r for r in runs if r.engine == e] for e in ("single", "ray")}
    rate = {e: med(r.rate for r in rs) for e, rs in by.items()}
    cpu = {e: med(r.cpu_ms_per_image for r in rs) for e, rs in by.items()}
    for engine in ("single", "ray"):
        loads = ", ".join(_load(r.load) for r in by[engine])
        print(f"\nmedian {engine}: {rate[engine]:.0f} images/s, {cpu[engine]:.2f} busy CPU-ms/image "
              f"(load averages at the runs' starts: {loads})")
    print(f"RATIO ray/single images/s: {rate['ray'] / rate['single']:.2f}x")
    print(f"RATIO ray/single busy CPU-ms per image: {cpu['ray'] / cpu['single']:.2f}x")
    print("where the CPU went, median CPU-ms per image:")
    for engine in ("single", "ray"):
        parts = sorted({p for r in by[engine] for p in r.parts_cpu_s})
        print(f"  {engine}: " + ", ".join(
            f"{p} {med(1000 * r.parts_cpu_s.get(p, 0.0) / r.images for r in by[engine]):.2f}" for p in parts))
    _sixteen_cores(by["ray"], rate["ray"], idle)


def _sixteen_cores(ray_runs: list[Run], rate: float, idle: dict[str, float]) -> None:
    """Ray's daemons cost CPU per second more than per image: what they would add per image at 8x the rate."""
    daemons = statistics.median(r.parts_cpu_s.get("ray daemons", 0.0) / r.wall_s for r in ray_runs)
    per_image_ms = statistics.median(1000 * r.parts_cpu_s.get("ray daemons", 0.0) / r.images for r in ray_runs)
    scale = 16 / (os.cpu_count() or 1)
    print(f"ray daemons: {daemons:.3f} CPU-s per s while scoring ({idle.get('ray daemons', 0.0):.3f} idle), "
          f"{per_image_ms:.2f} CPU-ms per image here; on a 16-core node scoring {scale:.0f}x as fast at the same "
          f"daemon CPU per second: about {per_image_ms / scale:.2f} CPU-ms per image (an estimate, not measured)")


def _load(load: tuple[float, ...]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    sys.exit(main())
