"""Reports over the (benchmark, chain) pairs of an outcome log, and the text/JSON forms of calibration reports.

`report_pairs`: every pair split 50/50 by prompt, fitted on one half with every method, evaluated on the other
(`router-calibrate report-pairs`). `peek_bound`: how far a selection could get if it peeked at the eval halves
(`router-calibrate peek-bound`). The study and its figures: docs/calibration.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from llm_router.core.jsonsafe import json_safe

from router_calibration.calibrate import METHODS, calibrate
from router_calibration.fit import candidate_ratios, path_candidates
from router_calibration.logs import build_log, filter_rows, read_any
from router_calibration.plots import plot_report

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "outcomes" / "llm_cascades_train.csv.gz"
REPORT_PAIRS = [(b, c) for b in ("mmlu", "medmcqa", "triviaqa", "truthfulqa") for c in ("llama", "qwen_oai")]
PEEK_LEVELS = (0.95, 0.96, 0.97, 0.98)


def report_pairs(
    path: Path,
    target: float,
    delta: float,
    grid: int,
    seed: int,
    repeats: int,
    plot: Path | None = None,
    method: str = "fst",
    max_chain: int | None = None,
    path_steps: int = 41,
) -> dict[str, Any]:
    """Split every (benchmark, chain) pair by prompt (half/half), fit on one half, evaluate on the other.

    Every method is fitted on the same splits; `method` is the one whose policy, curve and metrics are shown.
    Seeds seed .. seed+repeats-1 give the splits; the first one's figures are the table, all count in the hit rates."""
    rows = read_any(path)
    table: dict[str, Any] = {"target_quality": target, "delta": delta, "seed": seed, "method": method, "pairs": []}
    hits: dict[str, list[list[bool]]] = {m: [] for m in METHODS}
    costs: dict[str, list[list[float]]] = {m: [] for m in METHODS}
    for b, c in REPORT_PAIRS:
        log = build_log(filter_rows(rows, benchmark=b, chain=c), f"{b}/{c}")
        per_seed: dict[str, tuple[list[bool], list[float]]] = {m: ([], []) for m in METHODS}
        for s in range(seed, seed + max(1, repeats)):
            cal, ev = log.split_by_prompt(0.5, s)
            rep = calibrate(
                cal, ev, target, method, delta, grid, max_chain, with_curves=(s == seed), path_steps=path_steps
            )
            parts = {m: (rep if m == method else rep[m]) for m in METHODS}
            for m, part in parts.items():
                per_seed[m][0].append(part["eval"]["quality_ratio"] >= target)
                per_seed[m][1].append(part["eval"]["cost_ratio"])
            if s == seed:
                table["pairs"].append(_pair_entry(b, c, cal.n, ev.n, parts, method))
                if plot is not None and (b, c) == REPORT_PAIRS[0]:
                    plot_report(rep, plot, f"{b} / {c}: fit on {cal.n} prompts, eval on {ev.n} (seed {s})")
        for m in METHODS:
            hits[m].append(per_seed[m][0])
            costs[m].append(per_seed[m][1])
    for m in METHODS:
        h, cst = np.array(hits[m]), np.array(costs[m])  # (pairs, repeats)
        table[f"{m}_summary"] = {
            "pairs_meeting_target_first_split": int(h[:, 0].sum()),
            "mean_eval_cost_ratio_first_split": float(cst[:, 0].mean()),
            "repeats": int(h.shape[1]),
            "hit_rate_over_pairs_and_splits": float(h.mean()),
            "hit_rate_per_pair": [float(x) for x in h.mean(1)],
            "splits_with_all_pairs_meeting_target": float(h.all(0).mean()),
            "mean_eval_cost_ratio_over_splits": float(cst.mean()),
        }
    return table


def _pair_entry(
    benchmark: str, chain: str, calib_n: int, eval_n: int, parts: dict[str, dict[str, Any]], method: str
) -> dict[str, Any]:
    """One row of the pairs table: each method's policy and its calib/eval figures (curve metrics for `method`)."""
    entry: dict[str, Any] = {"benchmark": benchmark, "chain": chain, "calib_prompts": calib_n, "eval_prompts": eval_n}
    for m, part in parts.items():
        keys: tuple[str, ...] = ("quality_ratio", "cost_ratio", "escalation_rate")
        if m == method:
            keys += ("apgr", "cpt_50", "cpt_80", "auc")
        entry[m] = {"policy": part["policy"]} | {
            split: {k: part[split][k] for k in keys} for split in ("calib", "eval")
        }
    return entry


def peek_bound(
    path: Path, target: float, levels: list[float], repeats: int, path_steps: int = 41
) -> list[dict[str, Any]]:
    """What selecting from the path family could reach on the eval halves if it could PEEK at them.

    Per pair, the cheapest path candidate whose quality_ratio on ALL prompts (both halves) is >= level is
    evaluated on each split's eval half. No honest method, which sees only the calibration half, can do better
    than peeking at the same level; so when even this misses the target on some pair in most splits, the
    target is out of reach of the data (each eval half has ~150 prompts) rather than of the method.
    """
    rows = read_any(path)
    logs = [build_log(filter_rows(rows, benchmark=b, chain=c), f"{b}/{c}") for b, c in REPORT_PAIRS]
    families = [path_candidates(log, path_steps) for log in logs]  # fixed by the confidences: once per pair
    ratios = [candidate_ratios(cands, log) for cands, log in zip(families, logs, strict=True)]
    eval_halves = [[log.split_indices(0.5, seed)[1] for seed in range(repeats)] for log in logs]
    results = []
    for level in levels:
        chosen = []  # per pair: the cheapest candidate reaching `level` on all prompts (the best one if none does)
        for quality, cost in ratios:
            passing = np.flatnonzero(quality >= level)
            chosen.append(passing[np.argmin(cost[passing])] if passing.size else int(np.argmax(quality)))
        hits, all_hit, costs = [], [], []
        for seed in range(repeats):
            split_hits = []
            for log, cands, k, halves in zip(logs, families, chosen, eval_halves, strict=True):
                ev = halves[seed]
                split_hits.append(cands.score[k, ev].sum() / log.score[ev, -1].sum() >= target)
                costs.append(cands.cost[k, ev].sum() / log.cost[ev, -1].sum())
            hits += split_hits
            all_hit.append(all(split_hits))
        results.append(
            {
                "select_at_quality": level,
                "eval_hit_rate": float(np.mean(hits)),
                "all_pairs_hit_rate": float(np.mean(all_hit)),
                "mean_eval_cost_ratio": float(np.mean(costs)),
            }
        )
    return results


# -- text and JSON forms -----------------------------------------------------------------------------------------


def format_pairs(table: dict[str, Any]) -> list[str]:
    """The pairs table as text lines: the other methods' eval figures, then the shown method's with its policy."""
    t, main_m = table["target_quality"], table["method"]
    others = [m for m in ("naive", "lcb", "fst") if m != main_m]
    lines = [
        f"target quality_ratio >= {t} on eval; split by prompt 50/50, seed {table['seed']}; delta {table['delta']};"
        f" policy shown: {main_m}"
    ]
    head = (
        f"{'benchmark':<11}{'chain':<9}|"
        + "".join(f" {m + ' q':>8}{m + ' c':>8} |" for m in others)
        + f" {main_m + ' q':>8}{main_m + ' c':>8}{'esc':>6}{'APGR':>6}{'CPT50':>7}{'CPT80':>7}"
        + f" | {main_m} chain : thresholds"
    )
    lines += [head, "-" * len(head)]

    def mark(q: float) -> str:
        return "*" if q < t else " "

    for p in table["pairs"]:
        line = f"{p['benchmark']:<11}{p['chain']:<9}|"
        for m in others:
            e = p[m]["eval"]
            line += f" {e['quality_ratio']:>7.3f}{mark(e['quality_ratio'])}{e['cost_ratio']:>8.3f} |"
        e, pol = p[main_m]["eval"], p[main_m]["policy"]
        thr = ", ".join(f"{v:.3g}" for v in pol["thresholds"].values())
        line += (
            f" {e['quality_ratio']:>7.3f}{mark(e['quality_ratio'])}{e['cost_ratio']:>8.3f}{e['escalation_rate']:>6.2f}"
            f"{e['apgr']:>6.2f}{e['cpt_50']:>7.3f}{e['cpt_80']:>7.3f} | {' > '.join(pol['chain'])} : {thr}"
        )
        lines.append(line)
    for m in ("naive", "lcb", "fst"):
        s = table[f"{m}_summary"]
        lines.append(
            f"{m:>5}: {s['pairs_meeting_target_first_split']}/8 pairs meet the target, mean eval cost_ratio "
            f"{s['mean_eval_cost_ratio_first_split']:.3f};  over {s['repeats']} random splits: hit rate "
            f"{s['hit_rate_over_pairs_and_splits']:.2f}, all 8 in {s['splits_with_all_pairs_meeting_target']:.0%}"
            f" of splits, mean cost_ratio {s['mean_eval_cost_ratio_over_splits']:.3f}"
        )
    lines.append("(* = below target; q = quality_ratio, c = cost_ratio on the held-out half)")
    return lines


def format_peek_bound(rows: list[dict[str, Any]], target: float) -> list[str]:
    """One line per selection level of `peek_bound`."""
    return [
        f"peek-select at quality {row['select_at_quality']:.2f} on all prompts -> eval quality >= "
        f"{target}: pair hit rate {row['eval_hit_rate']:.2f}, all 8 pairs in "
        f"{row['all_pairs_hit_rate']:.0%} of splits, mean eval cost_ratio {row['mean_eval_cost_ratio']:.3f}"
        for row in rows
    ]


def summary_line(name: str, sec: dict[str, Any]) -> str:
    """One split's (or method's) figures of a `calibrate` report on one line."""
    extra = (
        f"  APGR {sec['apgr']:.3f}  CPT50 {sec['cpt_50']:.3f}  CPT80 {sec['cpt_80']:.3f}  AUC {sec['auc']:.3f}"
        if "apgr" in sec
        else ""
    )
    return (
        f"{name:<6} quality_ratio {sec['quality_ratio']:.3f}  cost_ratio {sec['cost_ratio']:.3f}  "
        f"escalation_rate {sec['escalation_rate']:.3f}  tokens_wasted {sec['tokens_wasted']}{extra}"
    )


def format_calibration(report: dict[str, Any]) -> list[str]:
    """A `calibrate` report as text: tiers, the fitted policy, calib/eval figures and the other methods' eval."""
    pol = report["policy"]
    lines = [
        f"tiers: {' < '.join(report['tiers'])}",
        f"policy ({pol['method']}): chain {' > '.join(pol['chain'])}, thresholds {pol['thresholds']}",
        summary_line("calib", report["calib"]),
    ]
    if "eval" in report:
        lines.append(summary_line("eval", report["eval"]))
        for m in METHODS:
            if m in report:
                other = report[m]
                lines.append(summary_line(m, other["eval"]) + f"   ({m} chain {' > '.join(other['policy']['chain'])})")
    lines += [f"wrote {report[key]}" for key in ("policy_out", "plot") if key in report]
    return lines


def to_json(value: Any, indent: int | None = None) -> str:
    """Strict JSON (NaN -> null, +/-inf -> "inf"/"-inf", numpy scalars as numbers; anything else as its str)."""
    return json.dumps(json_safe(value), indent=indent, default=str, allow_nan=False)
