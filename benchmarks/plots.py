"""PNG pictures of benchmark results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def throughput_latency(points: list[dict[str, Any]], path: Path, *, title: str, ceiling: float | None = None) -> Path:
    """Images/s against p99 latency, one curve per client batch size, one point per concurrency."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for batch in sorted({p["batch_size"] for p in points}):
        series = sorted((p for p in points if p["batch_size"] == batch), key=lambda p: p["concurrency"])
        xs = [p["p99_ms"] for p in series]
        ys = [p["images_per_s"] for p in series]
        ax.plot(xs, ys, marker="o", label=f"batch {batch}")
        for p in series:
            ax.annotate(f"x{p['concurrency']}", (p["p99_ms"], p["images_per_s"]), textcoords="offset points",
                        xytext=(4, 3), fontsize=7)
    if ceiling:
        ax.axhline(ceiling, color="grey", linestyle="--", linewidth=1, label="ONNX Runtime in-process (best)")
    ax.set_xscale("log")
    ax.set_xlabel("p99 latency per request (ms, log scale)")
    ax.set_ylabel("images / s")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, title="client batch (xN = concurrent clients)", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def bars(rows: list[tuple[str, float, bool]], path: Path, *, title: str, xlabel: str = "images / s") -> Path:
    """Horizontal bars (label, value, hatched-if-extrapolated), values printed at the bar ends."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(rows) + 1.4))
    labels = [r[0] for r in rows]
    values = [r[1] for r in rows]
    drawn = ax.barh(labels, values, color="#4c72b0")
    for bar, (_, value, extrapolated) in zip(drawn, rows, strict=True):
        if extrapolated:
            bar.set_hatch("//")
            bar.set_facecolor("#c0c0c0")
        text = f"{value:,.1f}" if value >= 1 else f"{value:.3f}" + (" (extrapolated)" if extrapolated else "")
        ax.annotate(text, (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(xlabel + " (log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def trial_chart(trials: list[dict[str, Any]], path: Path, *, title: str, p99_budget_ms: float) -> Path:
    """Per serving setting: concurrent-users throughput against p99, bulk throughput in the label."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    markers = "osD^vP*X"
    for i, t in enumerate(trials):
        users = t["users"]
        ax.scatter(users["p99_ms"], users["images_per_s"], s=50, marker=markers[i % len(markers)],
                   label=f"{t['settings']['label']} (bulk {t['bulk']['images_per_s']:.0f}/s)")
    ax.axvline(p99_budget_ms, color="red", linestyle=":", linewidth=1, label=f"p99 budget {p99_budget_ms:g} ms")
    ax.set_xlabel("p99 latency, concurrent single-face users (ms)")
    ax.set_ylabel("images / s")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def rss_over_time(samples: list[dict[str, float]], path: Path, *, title: str) -> Path:
    """Plot resident memory (MiB) of the server tree against minutes under load into ``path`` (PNG); returns ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    ax.plot([s["elapsed_s"] / 60 for s in samples], [s["rss_mib"] for s in samples], marker=".")
    ax.set_xlabel("minutes under load")
    ax.set_ylabel("RSS of tritonserver + stubs (MiB)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
