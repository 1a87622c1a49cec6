"""The calibration plot: a title that names both splits, tier labels that do not overlap, a legend off the points."""

from __future__ import annotations

import itertools
from pathlib import Path

from router_calibration.plots import plot_report, plot_title, report_figure


def _section(cost: float, quality: float) -> dict:
    singles = [
        {"tier": "llama3.2-1b", "cost_ratio": 0.05, "quality_ratio": 0.62},
        {"tier": "llama3.2-3b", "cost_ratio": 0.07, "quality_ratio": 0.63},  # right next to the 1b point
        {"tier": "llama3.1-8b", "cost_ratio": 0.09, "quality_ratio": 0.64},
        {"tier": "llama3.1-70b", "cost_ratio": 1.0, "quality_ratio": 1.0},
    ]
    return {
        "cost_ratio": cost,
        "quality_ratio": quality,
        "curve": {"cost_ratio": [0.05, 0.3, 0.6, 1.0], "quality_ratio": [0.62, 0.8, 0.95, 1.0]},
        "baselines": {"single_tiers": singles, "oracle": {"cost_ratio": 0.3, "quality_ratio": 1.1}},
    }


REPORT = {"target_quality": 0.95, "calib": _section(0.55, 0.96), "eval": _section(0.57, 0.94)}


def test_the_title_says_which_splits_are_shown() -> None:
    assert plot_title(REPORT, "mmlu: target 0.95").splitlines() == [
        "mmlu: target 0.95", "fitted on calib (blue), evaluated on held-out eval (orange)"
    ]  # fmt: skip
    assert "calib only" in plot_title({"calib": REPORT["calib"]}, "t")


def test_tier_labels_do_not_overlap_and_the_legend_is_below_the_axes(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = report_figure(REPORT, "mmlu: target 0.95")
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    tiers = [p["tier"] for p in REPORT["eval"]["baselines"]["single_tiers"]]
    assert sorted(t.get_text() for t in ax.texts) == sorted(tiers)
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    assert ax.get_legend().get_window_extent(renderer).y1 < ax.get_window_extent(renderer).y0
    plt.close(fig)
    plot_report(REPORT, tmp_path / "plot.png", "mmlu")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
