"""The cost-quality plot of a calibration report (`router-calibrate ... --plot PNG`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from router_calibration.fit import random_mix_quality

COLORS = {"calib": "tab:blue", "eval": "tab:orange"}
# offsets (points) tried in turn for a single tier's label until it overlaps no label placed before it
LABEL_OFFSETS = ((5, -11), (5, 5), (-5, 5), (-5, -11), (5, -22), (5, 16))


def plot_title(report: dict[str, Any], title: str) -> str:
    """The title, with a second line that says which splits the plot shows (the fit is on calib)."""
    if "eval" in report:
        return f"{title}\nfitted on calib (blue), evaluated on held-out eval (orange)"
    return f"{title}\ncalib only (no eval split): measured on the data it was fitted on"


def report_figure(report: dict[str, Any], title: str) -> Any:
    """Cost-quality curve (calibration front measured on calib and eval) with baselines and the chosen policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 6))
    for split in ("calib", "eval"):
        if split in report:
            _plot_split(ax, report, split)
    base = report.get("eval", report["calib"])["baselines"]
    singles = sorted(base["single_tiers"], key=lambda p: p["cost_ratio"])
    ax.scatter(
        [p["cost_ratio"] for p in singles],
        [p["quality_ratio"] for p in singles],
        color="k",
        zorder=4,
        label="single tiers (eval)" if "eval" in report else "single tiers",
    )
    xs = np.linspace(0, 1, 200)
    ax.plot(xs, [random_mix_quality(singles, x) for x in xs], "k:", label="random mix at equal cost")
    orc = base["oracle"]
    ax.scatter([orc["cost_ratio"]], [orc["quality_ratio"]], marker="D", color="tab:green", zorder=4, label="oracle")
    ax.axhline(report["target_quality"], color="tab:red", ls="--", lw=1, label=f"target {report['target_quality']}")
    ax.set_xlabel("cost ratio (vs. the most expensive tier)")
    ax.set_ylabel("quality ratio (vs. the most expensive tier)")
    ax.set_xlim(0, 1.05)
    ax.set_title(plot_title(report, title), fontsize=10)
    ax.grid(alpha=0.3)
    # below the axes, so that it covers no point
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    fig.tight_layout()
    _label_tiers(fig, ax, singles)
    return fig


def plot_report(report: dict[str, Any], path: Path, title: str) -> None:
    """Write report_figure as a PNG."""
    import matplotlib.pyplot as plt

    fig = report_figure(report, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _label_tiers(fig: Any, ax: Any, singles: list[dict[str, Any]]) -> None:
    """Name each single tier next to its point, at the first offset where the label overlaps no earlier label."""
    renderer = fig.canvas.get_renderer()
    placed: list[Any] = []
    for p in singles:
        # near the right edge (the most expensive tier sits at cost 1.0) a label goes left of its point
        offsets = sorted(LABEL_OFFSETS, key=lambda o: o[0] > 0) if p["cost_ratio"] > 0.85 else LABEL_OFFSETS
        for offset in offsets:
            text = ax.annotate(
                p["tier"], (p["cost_ratio"], p["quality_ratio"]), fontsize=7, xytext=offset,
                textcoords="offset points", ha="left" if offset[0] > 0 else "right",
            )  # fmt: skip
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed) or offset == offsets[-1]:
                placed.append(box)
                break
            text.remove()


def _plot_split(ax: Any, report: dict[str, Any], split: str) -> None:
    """One split's cascade front, fitted policy and naive grid-search point."""
    sec, color = report[split], COLORS[split]
    if "curve" in sec:
        order = np.argsort(sec["curve"]["cost_ratio"])
        ax.step(
            np.array(sec["curve"]["cost_ratio"])[order],
            np.array(sec["curve"]["quality_ratio"])[order],
            where="post",
            color=color,
            alpha=0.6,
            label=f"cascade front ({split})",
        )
    _mark(ax, sec, f"fitted policy ({split})", marker="*", s=220, color=color, edgecolor="k")
    if "naive" in report and split in report["naive"]:
        _mark(ax, report["naive"][split], f"naive grid search ({split})", marker="x", s=90, color=color)


def _mark(ax: Any, point: dict[str, Any], label: str, **style: Any) -> None:
    """One operating point of the report (its cost_ratio, quality_ratio) as a marker above the curves."""
    ax.scatter([point["cost_ratio"]], [point["quality_ratio"]], zorder=5, label=label, **style)
