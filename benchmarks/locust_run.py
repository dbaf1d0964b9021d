"""Run benchmarks/locustfile.py headless in a child process and read its CSV summary.

A child process because Locust monkey-patches the standard library with gevent
at import, which must not happen inside a program that also runs threads and a server.
"""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from facialattr.errors import FacialAttrError

log = logging.getLogger(__name__)

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass(frozen=True)
class LocustRun:
    """One headless Locust run: the command shown to readers, its statistics rows, its exit status."""

    command: str
    rows: list[dict[str, str]]  # locust's *_stats.csv rows, the "Aggregated" row last
    returncode: int

    @property
    def aggregated(self) -> dict[str, str]:
        """The "Aggregated" statistics row (all request types)."""
        return self.rows[-1]

    @property
    def requests(self) -> int:
        """Requests Locust counted over the run (all request types)."""
        return int(self.aggregated["Request Count"])

    @property
    def failures(self) -> int:
        """Failed requests Locust counted over the run."""
        return int(self.aggregated["Failure Count"])


def locust_command(host: str, *, users: int, run_time_s: int, csv_prefix: Path, html: Path | None = None,
                   user_classes: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> list[str]:
    """The argv of a headless Locust run of ``benchmarks/locustfile.py`` against ``host`` (gRPC HOST:PORT).

    ``users`` spawned at once, ``run_time_s`` seconds, CSV statistics under ``csv_prefix``, optional HTML report.
    """
    args = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users), "-r", str(users),
            "-t", f"{run_time_s}s", "--host", host, "--csv", str(csv_prefix), "--only-summary",
            "--stop-timeout", "10", *extra]
    if html:
        args += ["--html", str(html)]
    return args + list(user_classes)


def run_locust(host: str, *, users: int, run_time_s: int, csv_prefix: Path, html: Path | None = None,
               user_classes: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> LocustRun:
    """Headless Locust for ``run_time_s`` seconds; raises if it produced no statistics."""
    csv_prefix.parent.mkdir(parents=True, exist_ok=True)
    args = locust_command(host, users=users, run_time_s=run_time_s, csv_prefix=csv_prefix, html=html,
                          user_classes=user_classes, extra=extra)
    log.info("locust: %d users for %d s against %s", users, run_time_s, host)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=run_time_s + 120)
    rows = read_stats(csv_prefix, stderr=proc.stderr)
    printable = " ".join(["locust", *args[3:]]).replace(str(LOCUSTFILE), "benchmarks/locustfile.py")
    return LocustRun(command=printable, rows=rows, returncode=proc.returncode)


def read_stats(csv_prefix: Path, *, stderr: str = "") -> list[dict[str, str]]:
    """Rows of ``<csv_prefix>_stats.csv`` (the "Aggregated" row last)."""
    stats = Path(f"{csv_prefix}_stats.csv")
    if not stats.is_file():
        raise FacialAttrError(f"locust wrote no statistics ({stats} missing):\n{stderr[-2000:]}")
    with stats.open(newline="") as f:
        return list(csv.DictReader(f))
