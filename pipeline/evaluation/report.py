"""Per-sequence bar plot written beside the evaluation CSVs (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.core.atomic import atomic_write_bytes


def plot_bars(rows: list[tuple[str, float, float]], path: str | Path, title: str,
              labels: tuple[str, str] = ("J-Mean", "F-Mean")) -> Path:
    """Grouped bars (two values per row) saved as a PNG; NaN values are drawn as gaps."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    names = [r[0] for r in rows]
    a = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=float)
    b = np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=float)
    x = np.arange(len(rows))
    width = 0.4
    fig_w = max(6.0, 0.35 * len(rows) + 2.0)
    fig, ax = plt.subplots(figsize=(fig_w, 4.5), dpi=100)
    ax.bar(x - width / 2, np.nan_to_num(a), width, label=labels[0], color="#4C72B0")
    ax.bar(x + width / 2, np.nan_to_num(b), width, label=labels[1], color="#DD8452")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=70, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    mean_a = np.nanmean(a) if np.any(np.isfinite(a)) else math.nan
    mean_b = np.nanmean(b) if np.any(np.isfinite(b)) else math.nan
    ax.set_title(f"{title}  ({labels[0]} {mean_a:.3f}, {labels[1]} {mean_b:.3f})", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_per_sequence(report, path: str | Path) -> Path:
    """Bar plot of J-Mean and F-Mean per row of a :class:`~.davis.DavisReport`."""
    g = report.global_row()
    title = f"DAVIS {report.year} {report.split}: J&F {g[0]:.3f}"
    return plot_bars(report.per_sequence_rows(), path, title)


def plot_categories(rows: list[tuple[str, float, int]], path: str | Path, title: str) -> Path:
    """Bar plot of mean IoU per category (YouTube-Objects)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    names = [r[0] for r in rows]
    v = np.array([r[1] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(rows) + 2.0), 4.0), dpi=100)
    ax.bar(np.arange(len(rows)), np.nan_to_num(v), 0.6, color="#4C72B0")
    ax.set_xticks(np.arange(len(rows)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=9)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean IoU")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    """Write the figure as a PNG atomically and close it."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
