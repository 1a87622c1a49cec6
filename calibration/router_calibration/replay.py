"""Replay a routing policy over an outcome log with the router's own `decide()`.

`replay()` is the reference: for every prompt it runs the same decision loop as the router, feeding each
decided tier's logged outcome back as an `Attempt`. `cascade_outcomes()` is a vectorized evaluator of a plain
cascade (start at the first tier, accept when confidence >= threshold, last tier always accepts) used by the
calibration search over thousands of candidate policies; it is checked against `replay()` in the unit tests
and every policy the calibrator reports is re-measured with `replay()`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from llm_router.core.decide import Attempt, Classification, Decision, DecisionKind, Overrides, decide
from llm_router.core.policy import INTENTS, Policy, parse_policy

from router_calibration.logs import OutcomeLog


@dataclass
class ReplayResult:
    """Per-prompt outcomes of a policy on a log, and the aggregates the calibrator reports."""

    tiers: list[str]
    final_tier: np.ndarray  # index into `tiers`, -1 when every allowed tier failed
    score: np.ndarray  # score of the returned answer (0 for a failed request)
    cost: np.ndarray  # USD, all calls of the request
    escalations: np.ndarray
    fallbacks: np.ndarray
    calls: np.ndarray  # (n, n_tiers) bool: tier called for the prompt
    tokens_wasted: np.ndarray  # output tokens of discarded answers (NaN tokens count as 0)
    reference_score: np.ndarray  # the most expensive tier's score per prompt
    reference_cost: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.score)

    @property
    def quality(self) -> float:
        return float(np.mean(self.score)) if self.n else math.nan

    @property
    def quality_ratio(self) -> float:
        """Mean score / the most expensive tier's mean score on the same prompts."""
        ref = float(np.nansum(self.reference_score))
        return float(np.sum(self.score)) / ref if ref > 0 else math.nan

    @property
    def cost_ratio(self) -> float:
        ref = float(np.nansum(self.reference_cost))
        return float(np.sum(self.cost)) / ref if ref > 0 else math.nan

    @property
    def escalation_rate(self) -> float:
        """Fraction of prompts that escalated at least once."""
        return float(np.mean(self.escalations > 0)) if self.n else math.nan

    @property
    def failure_rate(self) -> float:
        return float(np.mean(self.final_tier < 0)) if self.n else math.nan

    def tier_usage(self) -> dict[str, float]:
        """Fraction of prompts answered by each tier."""
        return {t: float(np.mean(self.final_tier == i)) for i, t in enumerate(self.tiers)}

    def call_rate(self) -> dict[str, float]:
        """Fraction of prompts for which each tier was called."""
        return {t: float(np.mean(self.calls[:, i])) for i, t in enumerate(self.tiers)}

    def summary(self) -> dict[str, Any]:
        return {
            "prompts": self.n,
            "quality": self.quality,
            "reference_quality": float(np.nanmean(self.reference_score)) if self.n else math.nan,
            "quality_ratio": self.quality_ratio,
            "cost_usd": float(np.sum(self.cost)),
            "reference_cost_usd": float(np.nansum(self.reference_cost)),
            "cost_ratio": self.cost_ratio,
            "escalation_rate": self.escalation_rate,
            "fallback_rate": float(np.mean(self.fallbacks > 0)) if self.n else math.nan,
            "failure_rate": self.failure_rate,
            "tier_usage": self.tier_usage(),
            "call_rate": self.call_rate(),
            "tokens_wasted": int(np.sum(self.tokens_wasted)),
            "tokens_wasted_per_prompt": float(np.mean(self.tokens_wasted)) if self.n else math.nan,
        }


def _classification(log: OutcomeLog, i: int) -> Classification | None:
    intent = log.intents[i] if log.intents else None
    difficulty = None
    if log.difficulty is not None and not math.isnan(log.difficulty[i]):
        difficulty = float(log.difficulty[i])
    if intent is None and difficulty is None:
        return None
    return Classification(intent or "", {}, difficulty)


def route_prompt(
    policy: Policy,
    log: OutcomeLog,
    i: int,
    overrides: Overrides | None = None,
    simulate_deadlines: bool = False,
    use_classifier: bool = True,
) -> tuple[list[Attempt], list[Decision]]:
    """Route prompt `i` of `log` as the router would: its attempts, and the decisions taken (decision k called
    attempt k; the last one is the final ACCEPT or FAIL). See `replay` for how the log answers each call."""
    col = {t: log.tiers.index(t) for t in log.tiers}
    cls = _classification(log, i) if use_classifier else None
    attempts: list[Attempt] = []
    decisions: list[Decision] = []
    while (d := decide(policy, cls, attempts, overrides)).kind is DecisionKind.CALL:
        decisions.append(d)
        j = col[d.tier]
        tin, tout = log.tokens_in[i, j], log.tokens_out[i, j]
        common = {
            "input_tokens": 0 if math.isnan(tin) else int(tin),
            "output_tokens": 0 if math.isnan(tout) else int(tout),
            "latency_ms": 0.0 if math.isnan(log.latency_ms[i, j]) else float(log.latency_ms[i, j]),
            "cost": 0.0 if math.isnan(log.cost[i, j]) else float(log.cost[i, j]),
        }
        late = simulate_deadlines and common["latency_ms"] > policy.tier(d.tier).deadline_s * 1000
        if not log.ok[i, j]:
            why = "no row in log" if log.outcome[i, j] == "missing" else f"logged {log.outcome[i, j]}"
            outcome = "timeout" if log.outcome[i, j] == "timeout" else "error"
            attempts.append(Attempt(d.tier, outcome, error=why, **common))
        elif late:
            attempts.append(Attempt(d.tier, "timeout", error="logged latency > deadline_s", **common))
        else:
            attempts.append(Attempt(d.tier, "ok", confidence=float(log.confidence[i, j]), **common))
    decisions.append(d)
    return attempts, decisions


def replay(
    policy: Policy,
    log: OutcomeLog,
    overrides: Overrides | None = None,
    simulate_deadlines: bool = False,
    use_classifier: bool = True,
) -> ReplayResult:
    """Run `policy` over every prompt of `log` through `decide()`.

    Each CALL of tier X is answered by the log's row for (prompt, X): OK with its confidence, cost and tokens;
    a missing row or an error/timeout row is an ERROR/TIMEOUT attempt (with `simulate_deadlines`, a call whose
    logged latency exceeds the tier's deadline_s is a TIMEOUT too). Policy tiers must be log tiers.
    Prompts carry the log's intent/difficulty when present (else the classifier counts as unavailable).
    """
    unknown = [t for t in policy.tier_names if t not in log.tiers]
    if unknown:
        raise ValueError(f"policy tiers {unknown} are not in the log (log tiers: {log.tiers})")
    col = {t: log.tiers.index(t) for t in log.tiers}
    n, nt = log.n, len(log.tiers)
    final = np.full(n, -1)
    score = np.zeros(n)
    cost = np.zeros(n)
    esc = np.zeros(n, dtype=int)
    fb = np.zeros(n, dtype=int)
    calls = np.zeros((n, nt), dtype=bool)
    wasted = np.zeros(n)
    for i in range(n):
        attempts, decisions = route_prompt(policy, log, i, overrides, simulate_deadlines, use_classifier)
        d = decisions[-1]
        for step, attempt in zip(decisions, attempts, strict=False):
            calls[i, col[attempt.tier]] = True
            if step.step == "escalate":
                esc[i] += 1
            elif step.step == "fallback":
                fb[i] += 1
        cost[i] = sum(a.cost or 0.0 for a in attempts)
        if d.kind is DecisionKind.ACCEPT:
            j = col[d.tier]
            final[i] = j
            score[i] = log.score[i, j]
            wasted[i] = sum(a.output_tokens for k, a in enumerate(attempts) if k != d.attempt_index)
        else:
            wasted[i] = sum(a.output_tokens for a in attempts)
    return ReplayResult(
        tiers=list(log.tiers),
        final_tier=final,
        score=score,
        cost=cost,
        escalations=esc,
        fallbacks=fb,
        calls=calls,
        tokens_wasted=wasted,
        reference_score=log.score[:, -1],
        reference_cost=log.cost[:, -1],
    )


# -- vectorized plain cascades (for the calibration search) ------------------------------------------------------


def cascade_outcomes(
    log: OutcomeLog, chain: Sequence[int], thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score, cost and stop position of many plain cascades at once, for a COMPLETE log.

    `chain`: log tier indices, cheapest first. `thresholds`: (K, len(chain)-1), one row per candidate.
    Returns arrays (K, n): score of the accepted answer, total cost, index in `chain` of the accepting tier.
    Same semantics as `decide()` with max_escalations >= len(chain)-1 (NaN confidence = not confident).
    """
    if not log.complete:
        raise ValueError("cascade_outcomes needs a complete log (every tier OK for every prompt); use replay()")
    thresholds = np.atleast_2d(np.asarray(thresholds, dtype=float))
    k, m = thresholds.shape[0], len(chain)
    if thresholds.shape[1] != m - 1:
        raise ValueError(f"need {m - 1} thresholds per candidate, got {thresholds.shape[1]}")
    conf = np.nan_to_num(log.confidence[:, list(chain)], nan=-np.inf)  # (n, m)
    stop = np.full((k, log.n), m - 1)
    undecided = np.ones((k, log.n), dtype=bool)
    for j in range(m - 1):
        accept = undecided & (conf[None, :, j] >= thresholds[:, j, None])
        stop[accept] = j
        undecided &= ~accept
    cum_cost = np.cumsum(log.cost[:, list(chain)], axis=1)  # (n, m)
    scores = log.score[:, list(chain)]
    cols = np.arange(log.n)[None, :]
    return scores[cols, stop], cum_cost[cols, stop], stop


# -- policies for chains of log tiers ----------------------------------------------------------------------------


def _estimate_prices(log: OutcomeLog, j: int) -> tuple[float, float]:
    """USD per 1k input/output tokens that best explain the logged costs (least squares, >= 0)."""
    tin, tout, c = log.tokens_in[:, j], log.tokens_out[:, j], log.cost[:, j]
    good = ~(np.isnan(tin) | np.isnan(tout) | np.isnan(c))
    if good.sum() >= 2:
        a = np.stack([tin[good], tout[good]], axis=1)
        sol, *_ = np.linalg.lstsq(a, c[good], rcond=None)
        if (sol >= 0).all():
            return float(sol[0] * 1000), float(sol[1] * 1000)
        tokens = float(np.sum(tin[good] + tout[good]))
        if tokens > 0:
            blended = float(np.sum(c[good])) / tokens * 1000
            return blended, blended
    return 0.0, float(np.nanmean(c)) if np.isfinite(np.nanmean(c)) else 0.0


def policy_for_chain(
    log: OutcomeLog,
    chain: Sequence[str],
    thresholds: Sequence[float],
    base: Policy | None = None,
    tier_map: dict[str, str] | None = None,
    version: int = 1,
) -> Policy:
    """A policy whose tiers are exactly `chain` (cheapest first), every intent starting at chain[0].

    Tier specs (prices, max_tokens, deadline, confidence function) come from `base` when it has the tier
    (after renaming by `tier_map`, log name -> router tier name); otherwise prices are estimated from the log
    and max_tokens/deadline from its tokens/latency. Thresholds apply to chain[:-1]; the last tier accepts.
    """
    if len(thresholds) != len(chain) - 1:
        raise ValueError(f"need {len(chain) - 1} thresholds for chain {list(chain)}")
    tier_map = tier_map or {}
    specs: list[dict[str, Any]] = []
    for pos, name in enumerate(chain):
        router_name = tier_map.get(name, name)
        thr = None if pos == len(chain) - 1 else min(0.0, float(thresholds[pos]))
        if base is not None and router_name in base.tier_names:
            spec = base.tier(router_name).model_dump(mode="json", exclude_none=True)
        else:
            j = log.tiers.index(name)
            cin, cout = _estimate_prices(log, j)
            tout = log.tokens_out[:, j]
            lat = log.latency_ms[:, j]
            spec = {
                "name": router_name,
                "cost_per_1k_input": cin,
                "cost_per_1k_output": cout,
                "max_tokens": int(np.nanmax(tout)) if np.isfinite(tout).any() else 64,
                "deadline_s": float(max(1.0, math.ceil(2 * np.nanpercentile(lat, 99) / 1000)))
                if np.isfinite(lat).any()
                else 30.0,
            }
        spec.pop("escalation_threshold", None)
        if thr is not None:
            spec["escalation_threshold"] = thr
        specs.append(spec)
    # estimated prices can be noisy: keep the file's "ordered by cost" rule by a running maximum
    for prev, cur in zip(specs, specs[1:], strict=False):
        if (
            cur["cost_per_1k_input"] + cur["cost_per_1k_output"]
            < prev["cost_per_1k_input"] + prev["cost_per_1k_output"]
        ):
            cur["cost_per_1k_input"] = max(cur["cost_per_1k_input"], prev["cost_per_1k_input"])
            cur["cost_per_1k_output"] = max(cur["cost_per_1k_output"], prev["cost_per_1k_output"])
    first = specs[0]["name"]
    data = {
        "version": version,
        "tiers": specs,
        "start_tier_by_intent": dict.fromkeys(INTENTS, first),
        "max_escalations": len(chain) - 1,
        "default_start_tier": first,
        "holdback_tokens": base.holdback_tokens if base is not None else 8,
    }
    return parse_policy(data, source="fitted policy")


def unmap_policy(policy: Policy, tier_map: dict[str, str]) -> Policy:
    """`policy` with router tier names mapped back to log tier names (for replaying a fitted policy)."""
    back = {v: k for k, v in tier_map.items()}
    data = policy.to_dict()
    for t in data["tiers"]:
        t["name"] = back.get(t["name"], t["name"])
    data["start_tier_by_intent"] = {k: back.get(v, v) for k, v in data["start_tier_by_intent"].items()}
    data["default_start_tier"] = back.get(data["default_start_tier"], data["default_start_tier"])
    if "fitted" in data:
        data["fitted"] = {back.get(k, k): v for k, v in data["fitted"].items()}
    if "difficulty_rule" in data:
        data["difficulty_rule"]["min_tier"] = back.get(
            data["difficulty_rule"]["min_tier"], data["difficulty_rule"]["min_tier"]
        )
    return parse_policy(data)
