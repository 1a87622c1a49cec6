"""Fit a cascade policy to a quality target with a margin that holds on new data, and the curve metrics.

Candidates
    Every chain of log tiers (any non-empty subset, cheapest first; its last tier always accepts) times, for each
    non-final tier, an escalation threshold from a small grid of quantiles of that tier's calibration
    confidences (``grid`` values, default 6). A small family on purpose: the more candidates, the more the
    cheapest one that "passes" on calibration data passed by luck (selection optimism).

Naive method (`select_naive`)
    The cheapest candidate whose calibration quality_ratio >= target. It is what a threshold grid search does;
    it lands right at the target on calibration data, so on new data it misses about half the time.

Margin method (`select_lcb`): risk control in the Learn-then-Test style
    Quality ratio >= tau  <=>  E[D] >= 0 with the paired per-prompt difference D_i = s_i - tau * r_i (s: score of
    the cascade's answer, r: the most expensive tier's score on the same prompt). For every candidate we test
    H0: E[D] < 0 with a one-sided CLT (Student-t) bound, and keep only the candidates whose lower confidence
    bound mean(D) - z_(1-delta) * sd(D) / sqrt(n) is >= 0, then take the cheapest. Why this bound:
    * it is paired: the cascade and the reference answer the SAME prompts, so D is 0 wherever they agree and
      its variance is the disagreement rate, far smaller than the variance of either accuracy; the margin is
      therefore adaptive: large for a candidate that often disagrees with the reference (a shaky cheap tier),
      near zero for one that almost always agrees with it (e.g. the reference itself, which always passes);
    * the target is a ratio of means, which the linear D turns into a mean, so a plain CLT/t bound applies
      (no delta method) and a candidate's test needs only n, mean and sd: 100k candidates take milliseconds;
    * Learn-then-Test (Angelopoulos et al., 2021) gives a family-wise guarantee with a multiplicity correction;
      with n ~ 150 prompts a Bonferroni correction over thousands of candidates has no power, so the
      correction is replaced by the small candidate family, and the procedure is checked empirically by
      repeated random prompt splits (`report.report_pairs`, `router-calibrate report-pairs --repeats N`).
    We tried a bootstrap-calibrated target (naive selection re-run on bootstrap resamples until the chosen
    policy's quality on the original sample holds in 1-delta of them) and fixed-sequence LTT along the
    calibration Pareto front: on the llm_cascades pairs both cost more for the same hit rate on new prompts.

Fixed-sequence method (`select_fst`): the same paired bound, tested along a path fixed before the labels are seen
    The grid family above pays for its size in selection optimism: the cheapest of many candidates that pass
    passed partly by luck, and a finer grid makes it worse. `path_candidates` instead gives every chain ONE path
    of policies indexed by a common escalation quantile a = 1, ..., 0 (`steps` values): at each non-final tier
    the threshold is the a-quantile of that tier's calibration confidences (a = 1 accepts only the most
    confident, a = 0 accepts everything at the first tier). The path depends on the confidences only, not on
    the scores, and runs from safe (expensive) to cheap. Fixed-sequence testing (Bauer 1991; the LTT paper's
    "fixed sequence" procedure) tests H0: E[D] < 0 along it at level delta each and stops at the first
    candidate that fails; every candidate before it is certified without a multiplicity correction, so the
    path can be fine (41 points) at no cost in power. The cheapest certified candidate of each chain competes
    with the other chains' (the correction across chains is, as for the grid, replaced by the empirical check
    of `report-pairs --repeats`). On the 8 llm_cascades pairs it reaches the lcb method's hit rate on new prompts
    at a lower cost (figures in docs/calibration.md). Tried without a gain beyond the noise of 40 splits:
    a finer grid for lcb (more optimism: lower hit rate at the same cost), a second confidence signal (answer
    agreement with the previous tier, ranked before the tier's own confidence), and Bonferroni across chains
    (no power at n ~ 150).

Metrics (`curve_metrics`) over a cost-quality curve: the calibration Pareto front of the candidates, re-measured
on the data at hand. APGR (RouteLLM): the mean, over x = cost between the cheapest single tier (0) and the
reference (1), of PGR = (quality - cheapest quality) / (reference quality - cheapest quality), using the best
quality reachable at or below each cost (the cheapest tier before the first point). CPT(p): the smallest
cost_ratio at which PGR reaches p. AUC: the area under quality_ratio against cost_ratio in [0, 1] (0 before
the cheapest point). Baselines: each single tier; a random mix at equal cost (the upper convex hull of the
single tiers, i.e. sending each prompt at random to one of two tiers); the oracle (cheapest correct tier).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from router_calibration.logs import OutcomeLog
from router_calibration.replay import cascade_outcomes


@dataclass
class Candidates:
    """K candidate cascades and their per-prompt outcomes on one log."""

    chains: list[tuple[int, ...]]
    thresholds: list[tuple[float, ...]]
    score: np.ndarray  # (K, n)
    cost: np.ndarray  # (K, n)
    escalated: np.ndarray  # (K, n) bool
    path: np.ndarray | None = None  # (K,) path id for path families: a path's candidates are in test order

    def __len__(self) -> int:
        return len(self.chains)


@dataclass
class Selection:
    """The chosen cascade: log tier indices (cheapest first) and thresholds for all but the last."""

    chain: tuple[int, ...]
    thresholds: tuple[float, ...]
    method: str
    details: dict[str, Any] = field(default_factory=dict)


def threshold_grid(values: np.ndarray, size: int) -> np.ndarray:
    """`size` quantiles (0 .. 0.95) of the finite values: escalate the least confident 0 .. 95%."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.array([0.0])
    return np.unique(np.quantile(finite, np.linspace(0.0, 0.95, size)))


def chains_of(n_tiers: int, max_len: int | None = None) -> list[tuple[int, ...]]:
    """Every non-empty ordered subset of tiers (cheapest first), up to `max_len` tiers."""
    top = n_tiers if max_len is None else min(max_len, n_tiers)
    return [c for m in range(1, top + 1) for c in itertools.combinations(range(n_tiers), m)]


def _candidates_of(log: OutcomeLog, thresholds_by_chain: list[tuple[tuple[int, ...], np.ndarray]]) -> Candidates:
    """Evaluate each chain's threshold rows on `log`; a chain's rows stay in the given order, tagged by its index."""
    chains, thrs, scores, costs, escs, path = [], [], [], [], [], []
    for pid, (chain, thr) in enumerate(thresholds_by_chain):
        s, c, stop = cascade_outcomes(log, chain, thr)
        chains += [chain] * len(thr)
        thrs += [tuple(float(x) for x in row) for row in thr]
        scores.append(s)
        costs.append(c)
        escs.append(stop > 0)
        path += [pid] * len(thr)
    return Candidates(chains, thrs, np.vstack(scores), np.vstack(costs), np.vstack(escs), np.array(path))


def enumerate_candidates(
    log: OutcomeLog, grid: int = 6, max_chain: int | None = None, grids: dict[int, np.ndarray] | None = None
) -> Candidates:
    """All chains x threshold grids, evaluated on `log` (which must be complete)."""
    grids = grids or {j: threshold_grid(log.confidence[:, j], grid) for j in range(len(log.tiers))}
    rows = []
    for chain in chains_of(len(log.tiers), max_chain):
        thr = np.array(list(itertools.product(*[grids[j] for j in chain[:-1]]))) if len(chain) > 1 else np.zeros((1, 0))
        rows.append((chain, thr))
    cands = _candidates_of(log, rows)
    cands.path = None  # a grid is not a test order
    return cands


def path_quantiles(steps: int) -> np.ndarray:
    """Escalation quantiles of a path, from 1 (accept only the most confident) down to 0 (accept everything)."""
    if steps < 2:
        raise ValueError(f"a path needs at least 2 steps, got {steps}")
    return np.linspace(1.0, 0.0, steps)


def path_candidates(log: OutcomeLog, steps: int = 41, max_chain: int | None = None) -> Candidates:
    """For every chain, one path of `steps` candidates: threshold of each non-final tier = the a-quantile of
    that tier's confidences on `log`, a from 1 down to 0 (the order `select_fst` tests them in)."""
    alphas = path_quantiles(steps)
    rows = []
    for chain in chains_of(len(log.tiers), max_chain):
        cols = []
        for j in chain[:-1]:
            finite = log.confidence[:, j][np.isfinite(log.confidence[:, j])]
            cols.append(np.quantile(finite, alphas) if finite.size else np.zeros(steps))
        rows.append((chain, np.stack(cols, axis=1) if cols else np.zeros((1, 0))))
    return _candidates_of(log, rows)


def candidate_ratios(cands: Candidates, log: OutcomeLog) -> tuple[np.ndarray, np.ndarray]:
    """(quality_ratio, cost_ratio) of every candidate on `log`."""
    return cands.score.sum(1) / log.score[:, -1].sum(), cands.cost.sum(1) / log.cost[:, -1].sum()


def _cheapest(mask: np.ndarray, cost: np.ndarray, quality: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    # cheapest; among equal cost the best quality
    order = np.lexsort((-quality[idx], cost[idx]))
    return int(idx[order[0]])


def _reference_selection(log: OutcomeLog, method: str, why: str) -> Selection:
    return Selection((len(log.tiers) - 1,), (), method, {"fallback": why})


def select_naive(cands: Candidates, log: OutcomeLog, target: float) -> Selection:
    """Cheapest candidate whose calibration quality_ratio >= target."""
    q, c = candidate_ratios(cands, log)
    k = _cheapest(q >= target, c, q)
    if k is None:
        return _reference_selection(log, "naive", f"no candidate reaches {target}: the reference tier alone")
    return Selection(cands.chains[k], cands.thresholds[k], "naive", {"calib_quality_ratio": float(q[k])})


def lower_bounds(cands: Candidates, log: OutcomeLog, target: float, delta: float) -> np.ndarray:
    """One-sided (1-delta) lower confidence bound of mean(D), D_i = s_i - target * r_i, per candidate."""
    n = log.n
    d = cands.score - target * log.score[:, -1][None, :]
    mean = d.mean(1)
    sd = d.std(1, ddof=1) if n > 1 else np.zeros(len(cands))
    z = NormalDist().inv_cdf(1 - delta)
    return mean - z * sd / math.sqrt(max(n, 1))


def _bounded_selection(
    cands: Candidates,
    log: OutcomeLog,
    target: float,
    delta: float,
    method: str,
    passing: np.ndarray,
    why: str,
    **details: Any,
) -> Selection:
    """The cheapest candidate among `passing` (by the paired lower bound), with its calibration figures."""
    q, c = candidate_ratios(cands, log)
    k = _cheapest(passing, c, q)
    if k is None:
        return _reference_selection(log, method, why)
    lcb = lower_bounds(cands, log, target, delta)
    ref_mean = float(log.score[:, -1].mean())
    return Selection(
        cands.chains[k],
        cands.thresholds[k],
        method,
        {
            "delta": delta,
            "calib_quality_ratio": float(q[k]),
            "calib_quality_ratio_lower_bound": float(target + lcb[k] / ref_mean) if ref_mean > 0 else math.nan,
            **details,
        },
    )


def _check_delta(delta: float) -> None:
    if not 0 < delta < 0.5:
        raise ValueError(f"delta must be in (0, 0.5), got {delta}")


def select_lcb(cands: Candidates, log: OutcomeLog, target: float, delta: float = 0.1) -> Selection:
    """Cheapest candidate whose paired lower confidence bound says quality_ratio >= target (see module doc)."""
    _check_delta(delta)
    passing = lower_bounds(cands, log, target, delta) >= 0
    why = f"no candidate passes the bound at delta={delta}"
    return _bounded_selection(cands, log, target, delta, "lcb", passing, why)


def select_fst(cands: Candidates, log: OutcomeLog, target: float, delta: float = 0.1) -> Selection:
    """Fixed-sequence testing along each path of `cands` (from `path_candidates`), see the module doc: per path
    the candidates before the first one whose lower bound is < 0 are certified; the cheapest certified one of
    all paths is chosen."""
    _check_delta(delta)
    if cands.path is None:
        raise ValueError("select_fst needs path candidates (path_candidates)")
    lcb = lower_bounds(cands, log, target, delta)
    certified = np.zeros(len(cands), dtype=bool)
    tested = 0
    for pid in np.unique(cands.path):
        idx = np.flatnonzero(cands.path == pid)  # in test order
        fails = np.flatnonzero(lcb[idx] < 0)
        stop = fails[0] if fails.size else idx.size
        certified[idx[:stop]] = True
        tested += min(stop + 1, idx.size)
    why = f"no path starts with a candidate that passes at delta={delta}"
    return _bounded_selection(
        cands, log, target, delta, "fst", certified, why,
        certified_candidates=int(certified.sum()), tested_candidates=int(tested),
    )  # fmt: skip


# -- curves and metrics ----------------------------------------------------------------------------------------


def pareto_front(cost: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Indices of the points no cheaper-or-equal point beats, sorted by cost."""
    order = np.lexsort((-quality, cost))
    keep, best = [], -np.inf
    for k in order:
        if quality[k] > best:
            keep.append(k)
            best = quality[k]
    return np.array(keep, dtype=int)


def _envelope(cost: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(cost, kind="stable")
    return cost[order], np.maximum.accumulate(quality[order])


def single_tier_points(log: OutcomeLog) -> list[dict[str, Any]]:
    ref_q, ref_c = log.score[:, -1].sum(), log.cost[:, -1].sum()
    return [
        {
            "tier": t,
            "quality_ratio": float(log.score[:, j].sum() / ref_q),
            "cost_ratio": float(log.cost[:, j].sum() / ref_c),
        }
        for j, t in enumerate(log.tiers)
    ]


def random_mix_quality(points: Sequence[dict[str, Any]], cost_ratio: float) -> float:
    """Best quality of routing each prompt at random between two single tiers at this expected cost."""
    pts = sorted((p["cost_ratio"], p["quality_ratio"]) for p in points)
    best = -math.inf
    for (c1, q1), (c2, q2) in itertools.combinations(pts, 2):
        if c1 <= cost_ratio <= c2:
            w = 0.0 if c2 == c1 else (cost_ratio - c1) / (c2 - c1)
            best = max(best, (1 - w) * q1 + w * q2)
    for c, q in pts:
        if c <= cost_ratio:
            best = max(best, q)
    return best if best > -math.inf else math.nan


def oracle_point(log: OutcomeLog) -> dict[str, float]:
    """Each prompt answered by the cheapest tier with the best score (one call, perfect foresight)."""
    best = log.score.max(1)
    first = np.argmax(log.score >= best[:, None], axis=1)
    rows = np.arange(log.n)
    return {
        "quality_ratio": float(log.score[rows, first].sum() / log.score[:, -1].sum()),
        "cost_ratio": float(log.cost[rows, first].sum() / log.cost[:, -1].sum()),
    }


def curve_metrics(log: OutcomeLog, cost_ratio: np.ndarray, quality_ratio: np.ndarray) -> dict[str, float]:
    """APGR, CPT(50%), CPT(80%) and AUC of a cost-quality curve (see module docstring)."""
    singles = single_tier_points(log)
    cheapest = min(singles, key=lambda p: p["cost_ratio"])
    c0, q0 = cheapest["cost_ratio"], cheapest["quality_ratio"]
    gap = 1.0 - q0
    xs, ys = _envelope(np.append(cost_ratio, [c0, 1.0]), np.append(quality_ratio, [q0, 1.0]))
    grid = np.linspace(0, 1, 1001)
    cost_at = c0 + grid * (1.0 - c0)
    idx = np.searchsorted(xs, cost_at, side="right") - 1
    q_at = np.where(idx >= 0, ys[np.clip(idx, 0, None)], q0)
    pgr = (q_at - q0) / gap if gap > 0 else np.ones_like(q_at)
    out = {"apgr": float(np.mean(pgr))}
    for p in (0.5, 0.8):
        hit = np.flatnonzero(pgr >= p)
        out[f"cpt_{int(p * 100)}"] = float(cost_at[hit[0]]) if hit.size else math.nan
    xgrid = np.linspace(0, 1, 1001)
    idx = np.searchsorted(xs, xgrid, side="right") - 1
    out["auc"] = float(np.mean(np.where(idx >= 0, ys[np.clip(idx, 0, None)], 0.0)))
    return out
