"""Fit a cascade policy on one outcome log with all three methods and measure it on that log and another.

Every figure for a fitted policy comes from replaying it with the router's own `decide()` (`replay`), cross-checked
against the vectorized evaluator that the search used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from llm_router.core.policy import Policy

from router_calibration.fit import (
    Candidates,
    Selection,
    candidate_ratios,
    curve_metrics,
    enumerate_candidates,
    oracle_point,
    pareto_front,
    path_candidates,
    random_mix_quality,
    select_fst,
    select_lcb,
    select_naive,
    single_tier_points,
    threshold_grid,
)
from router_calibration.logs import OutcomeLog, OutcomeLogError
from router_calibration.replay import cascade_outcomes, policy_for_chain, replay

METHODS = ("fst", "lcb", "naive")


def policy_summary(sel: Selection, log: OutcomeLog) -> dict[str, Any]:
    """The report's `policy` entry: method, chain and thresholds by log tier name, plus the selection's details."""
    return {
        "method": sel.method,
        "chain": [log.tiers[j] for j in sel.chain],
        "thresholds": {log.tiers[j]: t for j, t in zip(sel.chain[:-1], sel.thresholds, strict=True)},
        **sel.details,
    }


def fitted_policy(
    sel: Selection,
    log: OutcomeLog,
    base: Policy | None = None,
    tier_map: Mapping[str, str] | None = None,
    version: int = 1,
) -> Policy:
    """The router policy of a selection (see `replay.policy_for_chain`)."""
    chain = [log.tiers[j] for j in sel.chain]
    return policy_for_chain(log, chain, sel.thresholds, base, dict(tier_map or {}), version)


def measure(policy: Policy, log: OutcomeLog, sel: Selection) -> dict[str, Any]:
    """Replay with decide(); cross-checked against the vectorized evaluator the search used."""
    res = replay(policy, log)
    s, c, _ = cascade_outcomes(log, sel.chain, np.array([sel.thresholds]).reshape(1, -1))
    if not (np.allclose(res.score, s[0]) and np.allclose(res.cost, c[0])):
        raise AssertionError("replay() and the vectorized evaluator disagree: a bug in one of them")
    return res.summary()


def front_points(cands: Candidates, calib: OutcomeLog, other: OutcomeLog) -> tuple[np.ndarray, np.ndarray]:
    """The calibration Pareto front's candidates re-measured on `other` (cost_ratio, quality_ratio)."""
    q, c = candidate_ratios(cands, calib)
    front = pareto_front(c, q)
    qs, cs = [], []
    for k in front:
        s, cc, _ = cascade_outcomes(other, cands.chains[k], np.array([cands.thresholds[k]]).reshape(1, -1))
        qs.append(s[0].sum() / other.score[:, -1].sum())
        cs.append(cc[0].sum() / other.cost[:, -1].sum())
    return np.array(cs), np.array(qs)


def baselines(log: OutcomeLog, at_cost: float) -> dict[str, Any]:
    """Single tiers, a random mix of two tiers at the fitted policy's cost, and the oracle."""
    singles = single_tier_points(log)
    return {
        "single_tiers": singles,
        "random_mix_at_equal_cost": {"cost_ratio": at_cost, "quality_ratio": random_mix_quality(singles, at_cost)},
        "oracle": oracle_point(log),
    }


def calibrate(
    calib: OutcomeLog,
    evaluation: OutcomeLog | None,
    target: float,
    method: str = "fst",
    delta: float = 0.1,
    grid: int = 6,
    max_chain: int | None = None,
    with_curves: bool = True,
    path_steps: int = 41,
) -> dict[str, Any]:
    """Fit on `calib` (method 'fst', 'lcb' or 'naive'), measure on both logs; the JSON report as a dict.

    The report's top level is `method`'s result (and its `Selection` under "selection"); the other two methods'
    results are under their names."""
    for log in (calib, evaluation):
        if log is not None:
            log.require_labels()
        if log is not None and not log.complete:
            raise OutcomeLogError(f"{log.name}: every tier must have an OK row for every prompt to calibrate")
    if evaluation is not None and evaluation.tiers != calib.tiers:
        raise OutcomeLogError(f"calib tiers {calib.tiers} differ from eval tiers {evaluation.tiers}")
    grids = {j: threshold_grid(calib.confidence[:, j], grid) for j in range(len(calib.tiers))}
    cands = enumerate_candidates(calib, grid, max_chain, grids)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} ({', '.join(METHODS)})")
    path = path_candidates(calib, path_steps, max_chain)
    selections = {
        "naive": select_naive(cands, calib, target),
        "lcb": select_lcb(cands, calib, target, delta),
        "fst": select_fst(path, calib, target, delta),
    }
    report: dict[str, Any] = {
        "target_quality": target,
        "method": method,
        "candidates": len(cands),
        "path_candidates": len(path),
        "tiers": calib.tiers,
    }
    for name, sel in selections.items():
        policy = fitted_policy(sel, calib)
        part = {"policy": policy_summary(sel, calib), "calib": measure(policy, calib, sel)}
        if evaluation is not None:
            part["eval"] = measure(policy, evaluation, sel)
        if name == method:
            report.update(part)
            report["selection"] = sel
        else:
            report[name] = part
    for split, log in (("calib", calib), ("eval", evaluation)):
        if log is None:
            continue
        section = report[split]
        section["baselines"] = baselines(log, section["cost_ratio"])
        if with_curves:
            cs, qs = front_points(cands, calib, log)
            section["curve"] = {"cost_ratio": cs.tolist(), "quality_ratio": qs.tolist()}
            section.update(curve_metrics(log, cs, qs))
    return report
