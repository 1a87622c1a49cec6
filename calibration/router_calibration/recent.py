"""Recalibrate from a small labelled recent sample, with the older outcome log as a prior.

When traffic drifts, a policy fitted once on an old log stops keeping its promise, and a fresh fit on the
~100 labelled recent prompts one can afford is noisy. `fit_recent` uses both:

Weighted paired bound (the statistic of `fit.select_fst`, on a weighted sample): shrinkage toward the recent sample
    Every recent prompt weighs 1; the whole old log weighs `prior` recent prompts (default: as much as the recent
    sample, and never more than 1 per old prompt), spread evenly over its prompts. Each candidate's estimate of
    mean(D), D_i = s_i - target * r_i, is then a weighted average of the recent sample's and the old log's, pulled
    toward the recent one as the recent sample grows; its lower bound uses the weighted (sandwich) standard error
    sqrt(sum w_i^2 (D_i - m)^2) / sum w_i, so the prior tightens the bound only as far as its effective size allows.
    (Plain pooling is prior = old.n: a large old log then outvotes the recent sample.)
The recent sample's veto
    A candidate is certified only when, besides the weighted bound, the recent sample alone does not contradict
    it: its own mean margin mean(D) over the recent prompts is >= 0 (`recent_delta` 0.5; a smaller value asks
    for a one-sided bound at that level). This keeps a prior from an older, easier traffic mix from certifying a
    policy that the recent prompts already show misses the target.
Fixed-sequence test
    The candidates are `fit.path_candidates` of the pooled prompts (thresholds = common quantiles of the pooled
    confidences), tested per chain from safe to cheap and stopped at the first failure, as in `select_fst`.
How many labelled recent prompts the promise needs
    `samples_needed`: for the chosen policy, the smallest n at which its paired bound on recent data ALONE, with
    the recent sample's mean and spread, would pass: n >= (z_(1-delta) * sd(D) / mean(D))^2 (none when
    mean(D) <= 0); small when the policy has a wide margin on the recent prompts, large when the prior carries it.
    `sample_size_curve` (with an eval log) measures it: fits from random recent subsamples of growing size,
    scored on the eval log (hit rate of the target, worst quality, mean cost).
Tried on the drill (`drill.py`) and left out: importance-weighting the old prompts toward the recent ones (a
logistic regression on log prompt length and the tiers' confidences; its weights concentrate on a few old prompts
and it held fewer pairs at the same cost), and a per-candidate composite estimator that weighs the old mean by
its estimated drift (inverse MSE, James-Stein style; no gain beyond the noise of the drill).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from router_calibration.calibrate import fitted_policy, measure, policy_summary
from router_calibration.fit import Candidates, Selection, _check_delta, _reference_selection, path_candidates
from router_calibration.logs import OutcomeLog, OutcomeLogError, load_log
from router_calibration.replay import cascade_outcomes
from router_calibration.report import summary_line
from router_calibration.versioning import parse_tier_map, write_policy_version

DEFAULT_SIZES = (25, 50, 75, 100, 150, 200, 300)
PRIOR_PER_RECENT = 1.0  # default weight of the old log: the recent sample's size (at most 1 per old prompt)
RECENT_DELTA = 0.5  # the recent sample alone must not contradict a certified candidate: its mean margin >= 0


def concat_logs(first: OutcomeLog, second: OutcomeLog, name: str | None = None) -> OutcomeLog:
    """The prompts of two logs with the same tiers in one table (first's, then second's)."""
    if first.tiers != second.tiers:
        raise OutcomeLogError(f"{first.name} tiers {first.tiers} differ from {second.name} tiers {second.tiers}")

    def cat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([a, b], axis=0)

    diff = None
    if first.difficulty is not None or second.difficulty is not None:
        diff = cat(
            first.difficulty if first.difficulty is not None else np.full(first.n, np.nan),
            second.difficulty if second.difficulty is not None else np.full(second.n, np.nan),
        )
    intents = (first.intents or [None] * first.n) + (second.intents or [None] * second.n)
    return OutcomeLog(
        name=name or f"{first.name} + {second.name}",
        tiers=list(first.tiers),
        prompt_ids=first.prompt_ids + second.prompt_ids,
        prompts=first.prompts + second.prompts,
        score=cat(first.score, second.score),
        confidence=cat(first.confidence, second.confidence),
        cost=cat(first.cost, second.cost),
        tokens_in=cat(first.tokens_in, second.tokens_in),
        tokens_out=cat(first.tokens_out, second.tokens_out),
        latency_ms=cat(first.latency_ms, second.latency_ms),
        ok=cat(first.ok, second.ok),
        outcome=cat(first.outcome, second.outcome),
        intents=intents if any(intents) else [],
        difficulty=diff,
    )


def weighted_lower_bounds(
    score: np.ndarray, reference: np.ndarray, weights: np.ndarray, target: float, delta: float
) -> np.ndarray:
    """One-sided (1-delta) lower bound of the weighted mean of D = score - target * reference, per row of
    `score` (K, n); standard error sqrt(sum w^2 (D - mean)^2) / sum w (equal weights: the plain sd/sqrt(n),
    up to the n/(n-1) of the sample sd)."""
    w = np.asarray(weights, dtype=float)
    d = score - target * reference[None, :]
    total = w.sum()
    mean = d @ w / total
    n = int((w > 0).sum())
    resid2 = ((d - mean[:, None]) ** 2) @ (w**2)
    se = np.sqrt(resid2 * n / max(n - 1, 1)) / total
    return mean - NormalDist().inv_cdf(1 - delta) * se


def select_weighted_fst(
    cands: Candidates,
    log: OutcomeLog,
    weights: np.ndarray,
    target: float,
    delta: float,
    method: str = "recent",
    check: np.ndarray | None = None,
) -> Selection:
    """`fit.select_fst` on a weighted sample: per path, the candidates before the first whose weighted bound
    fails are certified; the cheapest certified one (by weighted cost) is chosen."""
    _check_delta(delta)
    lcb = weighted_lower_bounds(cands.score, log.score[:, -1], weights, target, delta)
    return select_by_bounds(cands, log, lcb, weights, target, delta, method, check)


def select_by_bounds(
    cands: Candidates,
    log: OutcomeLog,
    lcb: np.ndarray,
    weights: np.ndarray,
    target: float,
    delta: float,
    method: str = "recent",
    check: np.ndarray | None = None,
) -> Selection:
    """Fixed-sequence selection along the paths of `cands` given each candidate's lower bound of mean(D)."""
    if cands.path is None:
        raise ValueError("fixed-sequence selection needs path candidates (path_candidates)")
    ref = log.score[:, -1]
    passes = lcb >= 0 if check is None else (lcb >= 0) & check
    certified = np.zeros(len(cands), dtype=bool)
    for pid in np.unique(cands.path):
        idx = np.flatnonzero(cands.path == pid)
        fails = np.flatnonzero(~passes[idx])
        certified[idx[: fails[0] if fails.size else idx.size]] = True
    if not certified.any():
        return _reference_selection(log, method, f"no path starts with a candidate that passes at delta={delta}")
    quality = cands.score @ weights / (ref @ weights)
    cost = cands.cost @ weights / (log.cost[:, -1] @ weights)
    idx = np.flatnonzero(certified)
    k = int(idx[np.lexsort((-quality[idx], cost[idx]))[0]])
    ref_mean = float(ref @ weights / weights.sum())
    return Selection(
        cands.chains[k],
        cands.thresholds[k],
        method,
        {
            "delta": delta,
            "weighted_quality_ratio": float(quality[k]),
            "weighted_quality_ratio_lower_bound": float(target + lcb[k] / ref_mean) if ref_mean > 0 else math.nan,
            "certified_candidates": int(certified.sum()),
        },
    )


@dataclass
class RecentFit:
    """A policy fitted from a recent sample with an old log as the prior, and what went into it."""

    selection: Selection
    pooled: OutcomeLog  # old prompts, then recent ones
    weights: np.ndarray  # per pooled prompt
    prior: float  # total weight of the old log, in recent prompts
    recent_n: int  # the last recent_n pooled prompts are the recent sample

    def summary(self) -> dict[str, Any]:
        w_old = self.weights[: self.pooled.n - self.recent_n]
        return {
            "prior_weight": self.prior,
            "recent_prompts": self.recent_n,
            "old_prompts": int(len(w_old)),
            "effective_prompts": float(self.weights.sum() ** 2 / (self.weights**2).sum()),
            "old_weight_per_prompt": float(w_old[0]) if len(w_old) else 0.0,
        }


def fit_recent(
    old: OutcomeLog,
    recent: OutcomeLog,
    target: float,
    delta: float = 0.1,
    prior: float | None = None,
    recent_delta: float | None = RECENT_DELTA,
    path_steps: int = 41,
    max_chain: int | None = None,
) -> RecentFit:
    """Fit to the recent sample's distribution with the old log as a prior (module doc). `prior`: total weight
    of the old log in recent prompts (default: PRIOR_PER_RECENT x the recent sample's size, at most old.n);
    `recent_delta`: the
    recent sample's veto (None: none)."""
    for log in (old, recent):
        log.require_labels()  # live records without feedback cannot be fitted on
        if not log.complete:
            raise OutcomeLogError(f"{log.name}: every tier must have an OK row for every prompt to calibrate")
    if recent.n < 2:
        raise OutcomeLogError(f"{recent.name}: the recent sample needs at least 2 prompts, has {recent.n}")
    prior = float(min(PRIOR_PER_RECENT * recent.n, old.n) if prior is None else prior)
    if prior < 0:
        raise ValueError(f"the prior weight must be >= 0, got {prior}")
    pooled = concat_logs(old, recent)
    weights = np.r_[np.full(old.n, prior / old.n if old.n else 0.0), np.ones(recent.n)]
    cands = path_candidates(pooled, path_steps, max_chain)
    check = None
    if recent_delta is not None:
        only = np.r_[np.zeros(old.n), np.ones(recent.n)]
        check = weighted_lower_bounds(cands.score, pooled.score[:, -1], only, target, recent_delta) >= 0
    sel = select_weighted_fst(cands, pooled, weights, target, delta, check=check)
    return RecentFit(sel, pooled, weights, prior, recent.n)


def samples_needed(sel: Selection, recent: OutcomeLog, target: float, delta: float) -> dict[str, Any]:
    """How many labelled recent prompts would certify `sel` on recent data alone (module doc)."""
    s, _, _ = cascade_outcomes(recent, sel.chain, np.array([sel.thresholds]).reshape(1, -1))
    d = s[0] - target * recent.score[:, -1]
    mean, sd = float(d.mean()), float(d.std(ddof=1)) if recent.n > 1 else 0.0
    z = NormalDist().inv_cdf(1 - delta)
    if mean <= 0:
        need = None
    elif sd == 0:
        need = 2
    else:
        need = max(2, math.ceil((z * sd / mean) ** 2))
    return {
        "recent_mean_margin": mean,
        "recent_sd": sd,
        "delta": delta,
        "prompts_needed": need,
        "recent_prompts": recent.n,
        "certified_by_recent_alone": need is not None and need <= recent.n,
    }


def evaluate_selection(sel: Selection, log: OutcomeLog) -> tuple[float, float]:
    """(quality_ratio, cost_ratio) of a plain-cascade selection on a complete log (vectorized evaluator)."""
    s, c, _ = cascade_outcomes(log, sel.chain, np.array([sel.thresholds]).reshape(1, -1))
    return float(s[0].sum() / log.score[:, -1].sum()), float(c[0].sum() / log.cost[:, -1].sum())


def sample_size_curve(
    old: OutcomeLog,
    recent: OutcomeLog,
    evaluation: OutcomeLog,
    target: float,
    delta: float = 0.1,
    sizes: tuple[int, ...] = DEFAULT_SIZES,
    repeats: int = 10,
    seed: int = 0,
    path_steps: int = 41,
    max_chain: int | None = None,
) -> list[dict[str, Any]]:
    """For each n <= recent.n: fit from `repeats` random n-prompt subsamples of `recent`, score on `evaluation`."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sorted({min(s, recent.n) for s in sizes if s >= 2}):
        hits, costs, quals = [], [], []
        for _ in range(repeats if n < recent.n else 1):
            sub = recent.subset(np.sort(rng.choice(recent.n, n, replace=False)))
            fit = fit_recent(old, sub, target, delta, path_steps=path_steps, max_chain=max_chain)
            q, c = evaluate_selection(fit.selection, evaluation)
            hits.append(q >= target)
            quals.append(q)
            costs.append(c)
        rows.append(
            {
                "recent_prompts": n,
                "fits": len(hits),
                "hit_rate": float(np.mean(hits)),
                "worst_quality_ratio": float(np.min(quals)),
                "mean_cost_ratio": float(np.mean(costs)),
            }
        )
    return rows


# -- `router-calibrate fit --calib OLD --recent RECENT [--eval FILE]` ---------------------------------------------


def add_arguments(fit: argparse.ArgumentParser) -> None:
    """`fit`'s options for recalibrating from a recent sample (--calib is then the old log)."""
    fit.add_argument(
        "--recent",
        type=Path,
        metavar="RECENT_LOG",
        help="labelled recent sample: fit to its distribution with --calib (the older log) as the prior",
    )
    fit.add_argument(
        "--prior",
        type=float,
        help="with --recent: weight of the whole --calib log in recent prompts (default: as many as --recent has)",
    )
    fit.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=list(DEFAULT_SIZES),
        metavar="N",
        help="with --recent and --eval: recent sample sizes of the sample-size curve",
    )
    fit.add_argument("--size-repeats", type=int, default=10, help="random subsamples per size (default 10)")


def run_fit(args: argparse.Namespace) -> dict[str, Any]:
    """`fit --recent`: the report (policy, figures by replay on the recent sample and --eval, prompts needed)."""
    if args.split_by_prompt is not None:
        raise ValueError("--recent and --split-by-prompt exclude each other: give the evaluation log as --eval")
    if args.size_repeats < 1:
        raise ValueError(f"--size-repeats must be >= 1, got {args.size_repeats}")
    old = load_log(args.calib, args.format, args.benchmark, args.chain)
    recent = load_log(args.recent, args.format, args.benchmark, args.chain)
    evaluation = load_log(args.eval, args.format, args.benchmark, args.chain) if args.eval is not None else None
    for log in (old, recent, evaluation):
        if log is not None and log.tiers != old.tiers:
            raise OutcomeLogError(f"{log.name} tiers {log.tiers} differ from {old.name} tiers {old.tiers}")
    fit = fit_recent(old, recent, args.target_quality, args.delta, args.prior, path_steps=args.path_steps,
                     max_chain=args.max_chain)  # fmt: skip
    sel = fit.selection
    policy = fitted_policy(sel, fit.pooled)
    report: dict[str, Any] = {
        "target_quality": args.target_quality,
        "method": "recent",
        "tiers": old.tiers,
        "policy": policy_summary(sel, fit.pooled),
        "prior": fit.summary(),
        "calib": measure(policy, recent, sel),  # the recent sample: what the fit was pulled toward
        "old": measure(policy, old, sel),
        "samples_needed": samples_needed(sel, recent, args.target_quality, args.delta),
    }
    if evaluation is not None:
        report["eval"] = measure(policy, evaluation, sel)
        report["sample_size_curve"] = sample_size_curve(
            old, recent, evaluation, args.target_quality, args.delta, tuple(args.sizes), args.size_repeats,
            args.seed, args.path_steps, args.max_chain,
        )  # fmt: skip
        curve = report["sample_size_curve"]  # the whole sample is one fit: no hit rate to speak of
        enough = [r["recent_prompts"] for r in curve if r["fits"] > 1 and r["hit_rate"] >= 1 - args.delta]
        report["prompts_needed_by_curve"] = enough[0] if enough else None
    if args.policy_out is not None:
        header = (
            f"fitted by router-calibrate on the recent sample {recent.name} ({recent.n} prompts) with {old.name} "
            f"({old.n} prompts, weight {fit.prior:g}) as the prior: target quality_ratio {args.target_quality}, "
            f"delta {args.delta}; confidences must be on the log's scale"
        )
        # the drift band: what the new policy does on the recent traffic it was fitted to
        tier_map = parse_tier_map(args.tier_map)
        out = write_policy_version(args.policy_out, sel, fit.pooled, tier_map, header, band_log=recent)
        report["policy_out"] = str(out / "policy.yaml")
    return report


def format_fit(report: dict[str, Any]) -> list[str]:
    """`fit --recent` as text."""
    pol, need, prior = report["policy"], report["samples_needed"], report["prior"]
    lines = [
        f"tiers: {' < '.join(report['tiers'])}",
        f"policy (recent, prior weight {prior['prior_weight']:g} on {prior['old_prompts']} old prompts, "
        f"{prior['recent_prompts']} recent): chain {' > '.join(pol['chain'])}, thresholds {pol['thresholds']}",
        summary_line("recent", report["calib"]),
        summary_line("old", report["old"]),
    ]
    if "eval" in report:
        lines.append(summary_line("eval", report["eval"]))
    n = need["prompts_needed"]
    lines.append(
        f"labelled recent prompts to certify this policy on recent data alone (delta {need['delta']}): "
        + (f"{n} (have {need['recent_prompts']})" if n is not None else "none suffices: its recent margin is <= 0")
    )
    for row in report.get("sample_size_curve", []):
        lines.append(
            f"  n={row['recent_prompts']:>4}: eval hit rate {row['hit_rate']:.2f} over {row['fits']} fits, worst "
            f"quality_ratio {row['worst_quality_ratio']:.3f}, mean cost_ratio {row['mean_cost_ratio']:.3f}"
        )
    if "sample_size_curve" in report:
        n = report["prompts_needed_by_curve"]
        lines.append(
            f"smallest recent sample whose fits held the target on --eval in >= {1 - need['delta']:.0%} of draws: "
            + (f"{n}" if n is not None else "none of the subsample sizes tried")
        )
    lines += [f"wrote {report['policy_out']}"] if "policy_out" in report else []
    return lines
