"""Summaries (the --json object), the outcome log file and the accuracy-coverage plot."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router_eval.metrics import accuracy_at_coverage, auroc, coverage_curve
from router_eval.runner import RouterOutcome, TierOutcome


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def tier_summary(outcomes: Sequence[TierOutcome], policy_key: str) -> dict[str, Any]:
    """n, accuracy, AUROC and accuracy at coverage of the policy's confidence, and every other confidence's."""
    correct = [o.correct for o in outcomes]
    conf = [o.policy_confidence for o in outcomes]
    by_source: dict[str, list[bool]] = {}
    for o in outcomes:
        by_source.setdefault(o.row.source or "", []).append(o.correct)
    keys = list(dict.fromkeys(k for o in outcomes for k in o.confidences))
    latencies = [o.latency_ms for o in outcomes if o.answer.outcome == "ok"]
    return {
        "n": len(outcomes),
        "accuracy": _rounded(float(np.mean(correct))) if outcomes else None,
        "confidence_function": policy_key,
        "auroc": _rounded(auroc(conf, correct)),
        "accuracy_at_coverage": {k: _rounded(v) for k, v in accuracy_at_coverage(conf, correct).items()},
        "confidences": {
            key: {"auroc": _rounded(auroc([o.confidences.get(key, math.nan) for o in outcomes], correct))}
            for key in keys
        },
        "errors": sum(o.answer.outcome != "ok" for o in outcomes),
        "cost_usd": _rounded(sum(o.cost_usd for o in outcomes), 8),
        "tokens_out_mean": _rounded(float(np.mean([o.answer.output_tokens for o in outcomes]))) if outcomes else None,
        "latency_ms_p50": _rounded(float(np.percentile(latencies, 50)), 1) if latencies else None,
        "by_source": {s: {"n": len(v), "accuracy": _rounded(float(np.mean(v)))} for s, v in sorted(by_source.items())},
    }


def router_summary(outcomes: Sequence[RouterOutcome]) -> dict[str, Any]:
    """n, accuracy, cost, escalation rate, tier mix and latency of the router's answers."""
    ok = [o for o in outcomes if o.outcome == "ok"]
    mix: dict[str, int] = {}
    for o in ok:
        mix[o.tier or ""] = mix.get(o.tier or "", 0) + 1
    return {
        "n": len(outcomes),
        "accuracy": _rounded(float(np.mean([o.correct for o in outcomes]))) if outcomes else None,
        "errors": len(outcomes) - len(ok),
        "escalation_rate": _rounded(float(np.mean([o.escalated for o in ok]))) if ok else None,
        "tier_mix": dict(sorted(mix.items())),
        "cost_usd": _rounded(sum(o.cost_usd for o in outcomes), 8),
        "latency_ms_p50": _rounded(float(np.percentile([o.latency_ms for o in ok], 50)), 1) if ok else None,
    }


def format_summary(report: dict[str, Any]) -> list[str]:
    """The human-readable table (what --json prints as one object)."""
    lines = [f"{'tier':<12} {'n':>5} {'accuracy':>9} {'auroc':>7}  confidence   acc@50%  acc@100%  errors"]
    for name, s in report.get("tiers", {}).items():
        cov = s["accuracy_at_coverage"]
        lines.append(
            f"{name:<12} {s['n']:>5} {_fmt(s['accuracy']):>9} {_fmt(s['auroc']):>7}  {s['confidence_function']:<12} "
            f"{_fmt(cov.get('0.5')):>7} {_fmt(cov.get('1')):>9} {s['errors']:>7}"
        )
        for key, c in s["confidences"].items():
            lines.append(f"{'':<12} {'':>5} {'':>9} {_fmt(c['auroc']):>7}  {key}")
    if "router" in report:
        r = report["router"]
        lines.append(
            f"router: n={r['n']} accuracy={_fmt(r['accuracy'])} escalation_rate={_fmt(r['escalation_rate'])} "
            f"cost=${r['cost_usd']} tiers={r['tier_mix']} errors={r['errors']}"
        )
    return lines


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def write_log(outcomes: dict[str, list[TierOutcome]], policy_keys: dict[str, str], path: Path) -> int:
    """Write the outcome log (JSONL, CSV, optionally .gz, by the file name); returns the number of rows."""
    rows = [o.log_row(policy_keys[tier]) for tier, items in outcomes.items() for o in items]
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.lower().removesuffix(".gz")
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="") as fh:
        if name.endswith(".jsonl"):
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")  # -inf is written as -Infinity
        elif name.endswith(".csv"):
            columns = list(dict.fromkeys(k for row in rows for k in row))
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=columns)
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
            fh.write(buf.getvalue())
        else:
            raise ValueError(f"{path}: the outcome log must be .jsonl, .csv, .jsonl.gz or .csv.gz")
    return len(rows)


def plot_coverage(
    outcomes: dict[str, list[TierOutcome]], policy_keys: dict[str, str], path: Path, title: str = "router-eval"
) -> None:
    """Accuracy of the most confident answers against the share answered (coverage), one line per tier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for tier, items in outcomes.items():
        cov, acc = coverage_curve([o.policy_confidence for o in items], [o.correct for o in items])
        ax.plot(cov, acc, label=f"{tier} ({policy_keys[tier]})")
    ax.set_xlabel("coverage (share of answers kept, most confident first)")
    ax.set_ylabel("accuracy of the kept answers")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
