"""The accuracy benchmark's plots, drawn from a ``report.json`` alone (``accuracy_proxy.py
--replot REPORT`` redraws them, e.g. the README's copies):

* ``iterations.png``: J against online iterations (Table 4) for each variant segmented at several
  steps, with its 95% interval band (two-stage bootstrap over sequences x seeds), and the other
  variants' J after all iterations as points with their intervals;
* ``components.png``: Table 3's four variants, J and F as bars with their intervals, T (lower is
  better) beside them, the paper's figures as markers.
"""

from __future__ import annotations

import math
from pathlib import Path

from _ablations import PAPER_TABLE3, TABLE3_COLUMNS, VARIANTS


def _ok(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def plot_iterations(report: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats, n = report["ablations"], report["iterations"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v, rows in stats["table4"].items():
        rows = [r for r in rows if _ok(r["J"])]
        if not rows:
            continue
        x = [r["iterations"] for r in rows]
        line, = ax.plot(x, [r["J"] for r in rows], marker="o", label=v)
        ax.fill_between(x, [r["low"] for r in rows], [r["high"] for r in rows],
                        color=line.get_color(), alpha=0.2, linewidth=0)
    snap = set(stats["table4"])
    others = [v.name for v in VARIANTS if v.name not in snap]
    for i, v in enumerate(others):
        c = stats["means"].get(v, {}).get("final", {}).get("J")
        if not c or not _ok(c["value"]):
            continue
        if v == "copy_first":        # no tuning: a level, not a point
            ax.axhline(c["value"], color="grey", linestyle="--", label=v)
            continue
        x = n * (1.0 + 0.02 * (i + 1))
        err = [[c["value"] - c["low"]], [c["high"] - c["value"]]] if _ok(c["low"]) else None
        ax.errorbar([x], [c["value"]], yerr=err, marker="s", linestyle="none", capsize=3,
                    label=f"{v} (@{n})")
    ax.set_xlabel("online tuning iterations")
    ax.set_ylabel("J (mean over sequences x seeds)")
    ax.set_title("J against online iterations (95% interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_components(report: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = report["ablations"]["means"]
    fig, (ax, axt) = plt.subplots(1, 2, figsize=(10, 4.2),
                                  gridspec_kw={"width_ratios": [2, 1]})
    labels = [label for label, _, _ in TABLE3_COLUMNS]
    for panel, metrics in ((ax, "JF"), (axt, "T")):
        width = 0.8 / len(metrics)
        for j, m in enumerate(metrics):
            xs, ys, lo, hi, paper = [], [], [], [], []
            for i, (_, v, p) in enumerate(TABLE3_COLUMNS):
                c = means.get(v, {}).get(p, {}).get(m)
                x = i + (j - (len(metrics) - 1) / 2) * width
                paper.append((x, PAPER_TABLE3[v][m]))
                if c and _ok(c["value"]):
                    xs.append(x)
                    ys.append(c["value"])
                    lo.append(c["value"] - c["low"] if _ok(c["low"]) else 0.0)
                    hi.append(c["high"] - c["value"] if _ok(c["high"]) else 0.0)
            panel.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=f"{m} (ours)")
            panel.plot([x for x, _ in paper], [y for _, y in paper], linestyle="none",
                       marker="_", markersize=14, color="black",
                       label="paper" if j == len(metrics) - 1 else None)
        panel.set_xticks(range(len(labels)))
        panel.set_xticklabels(labels, rotation=20, fontsize=8)
        panel.grid(axis="y", alpha=0.3)
        panel.legend(fontsize=8)
    ax.set_ylabel("J, F (higher is better)")
    axt.set_ylabel("T (lower is better)")
    fig.suptitle("Table 3: components (95% interval; paper: black marks)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(report: dict, folder: Path) -> list[Path]:
    """Both plots under ``folder``."""
    folder = Path(folder)
    return [plot_iterations(report, folder / "iterations.png"),
            plot_components(report, folder / "components.png")]
