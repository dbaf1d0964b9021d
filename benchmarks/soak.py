"""Soak: 10 minutes of Locust load on the embedded server; does memory grow, do requests fail?

    nice python benchmarks/soak.py --model-repository model_repository --minutes 10

Samples the resident memory (psutil) of tritonserver and its Python-backend stub
processes before, during and after the load, counts errors, and writes a section
between the soak markers of benchmarks/RESULTS.md (plus soak.json and soak_rss.png).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from facialattr.app.flags import add_model_repository, model_repository
from facialattr.benchmarks import locust_run, plots, report
from facialattr.benchmarks.standin import is_standin
from facialattr.benchmarks.sweep import ServingSettings, serve_with, settings_of

log = logging.getLogger("facialattr.benchmarks.soak")


def server_rss_mib(pid: int) -> tuple[float, int]:
    """(RSS of tritonserver + all its child processes in MiB, number of processes)."""
    import psutil

    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    total = 0
    for p in processes:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20, len(processes)


def soak(server, *, minutes: float, users: int, out: Path, sample_every_s: float = 15.0) -> dict[str, Any]:
    """Locust load on ``server`` for ``minutes``, sampling its memory every ``sample_every_s`` seconds.

    Returns the samples (RSS in MiB), request and failure counts and whether the server survived; the Locust
    files go under ``out``.
    """
    url = server.config.grpc_url
    # A short warm-up so "before" is the steady state after the first batches, not a cold start.
    locust_run.run_locust(url, users=users, run_time_s=10, csv_prefix=out / "soak_warmup")
    before, nproc = server_rss_mib(server.pid)
    run_time_s = int(minutes * 60)
    args = locust_run.locust_command(url, users=users, run_time_s=run_time_s, csv_prefix=out / "soak",
                                     extra=("--bulk-batch", "16"))
    start = time.monotonic()
    with open(out / "soak_locust.log", "wb") as locust_log:
        proc = subprocess.Popen(args, stdout=locust_log, stderr=subprocess.STDOUT)
    samples = [{"elapsed_s": 0.0, "rss_mib": before}]
    while proc.poll() is None:
        time.sleep(sample_every_s)
        if not server.is_running():
            proc.kill()
            break
        samples.append({"elapsed_s": time.monotonic() - start, "rss_mib": server_rss_mib(server.pid)[0]})
    proc.wait()
    alive = server.is_running()
    after, nproc_after = server_rss_mib(server.pid) if alive else (float("nan"), 0)
    stats = locust_run.read_stats(out / "soak", stderr=(out / "soak_locust.log").read_text(errors="replace"))
    total = stats[-1]
    requests, failures = int(total["Request Count"]), int(total["Failure Count"])
    return {
        "minutes": minutes, "users": users, "server_alive": alive, "processes": [nproc, nproc_after],
        "rss_before_mib": before, "rss_after_mib": after, "rss_peak_mib": max(s["rss_mib"] for s in samples),
        "requests": requests, "failures": failures, "error_rate": failures / requests if requests else float("nan"),
        "rows": stats, "samples": samples,
        "command": " ".join(["nice python benchmarks/soak.py", *sys.argv[1:]]),
        "load_average_end": os.getloadavg(),
    }


def steady_growth(samples: list[dict[str, float]]) -> float:
    """MiB of resident memory gained from the first minute to the end (NaN for a run shorter than that)."""
    later = [s for s in samples if s["elapsed_s"] >= 60]
    return later[-1]["rss_mib"] - later[0]["rss_mib"] if len(later) >= 2 else float("nan")


def section(result: dict[str, Any], settings: ServingSettings, model: str, *, plot: str) -> str:
    """The RESULTS.md soak section (Markdown) for a ``soak`` result."""
    growth = result["rss_after_mib"] - result["rss_before_mib"]
    rows = "\n".join(f"| {r['Name']} | {r['Request Count']} | {r['Failure Count']} | {float(r['Requests/s']):.1f} "
                     f"| {r['50%']} | {r['99%']} |" for r in result["rows"])
    return f"""## Soak ({result['minutes']:g} minutes of Locust load)

`{result['command']}`: {result['users']} Locust users (CCTV single faces and bulk batches of 16, 4:1) against
the embedded server ({settings.label}) on {model}, measured {time.strftime('%Y-%m-%d %H:%M %Z')}.

| | value |
| --- | --- |
| requests / failures | {result['requests']:,} / {result['failures']:,} (error rate {result['error_rate']:.4%}) |
| RSS of tritonserver + stubs before (after a 10 s warm-up) | {result['rss_before_mib']:.0f} MiB ({result['processes'][0]} processes) |
| RSS after | {result['rss_after_mib']:.0f} MiB ({result['processes'][1]} processes) |
| change / peak | {growth:+.0f} MiB / {result['rss_peak_mib']:.0f} MiB |
| change from minute 1 to the end | {steady_growth(result['samples']):+.0f} MiB |
| server still running | {'yes' if result['server_alive'] else '**no**'} |

| request | requests | failures | requests/s | p50 ms | p99 ms |
| --- | --- | --- | --- | --- | --- |
{rows}

Load average at the end: {result['load_average_end'][1]:.1f} (5 min) on {os.cpu_count()} cores; the soak runs
niced next to whatever else the machine does, so its request rate is not a throughput figure.

![RSS during the soak]({plot})
"""


def main(argv: list[str] | None = None) -> int:
    """Command line (see ``--help``); returns 0 when the server survived with no failed request, else 1."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_repository(p)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--results-md", type=Path, default=Path("benchmarks/RESULTS.md"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    from facialattr import repository

    repo = model_repository(args)
    entry = repository.load_model(repo)
    settings = settings_of(entry.config)
    model = ("the untrained stand-in" if is_standin(entry.contract) else "the shipped model") + \
        f" ({'x'.join(map(str, entry.contract.preprocessing.size_hw))})"
    with serve_with(repo, settings) as server:
        result = soak(server, minutes=args.minutes, users=args.users, out=args.out)
    (args.out / "soak.json").write_text(json.dumps(result, indent=2))
    plots.rss_over_time(result["samples"], args.out / "soak_rss.png", title="tritonserver + stubs RSS under load")
    plot = os.path.relpath(args.out / "soak_rss.png", args.results_md.parent)
    report.replace_soak_section(args.results_md, section(result, settings, model, plot=plot))
    print(f"soak: {result['requests']} requests, {result['failures']} failures, RSS "
          f"{result['rss_before_mib']:.0f} -> {result['rss_after_mib']:.0f} MiB; wrote {args.results_md}")
    return 0 if result["server_alive"] and result["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
