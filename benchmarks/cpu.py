"""CPU seconds spent by this process and a server's process tree: throughput per CPU-second.

On a machine shared with other jobs, wall-clock throughput says as much about the
neighbours as about the code. The CPU time a way of scoring consumes per image is
far steadier, so every measurement also records it, and RESULTS.md shows images per
CPU-second next to images per second.
"""

from __future__ import annotations

import resource
import time


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and all its live descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


class CpuMeter:
    """CPU seconds of this process (all threads), its finished children, and optionally a server tree."""

    def __init__(self, server_pid: int | None = None) -> None:
        self.server_pid = server_pid

    def read(self) -> float:
        """CPU seconds so far (user + system): this process, its finished children and the server tree, if any."""
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = time.process_time() + children.ru_utime + children.ru_stime
        if self.server_pid is not None:
            total += tree_cpu_s(self.server_pid)
        return total
