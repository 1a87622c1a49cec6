"""Drift alarms in replay: the band a fitted policy records, and when a recent log would have raised the alarms.

`band_for(policy, log)` replays `policy` on `log` with the router's own `decide()` (replay.route_prompt) and returns
the `fitted` mapping written into the policy (`with_band`, used by `router-calibrate fit --policy-out`).
`replay_alarms(policy, log, window)` replays a recent log in arrival order and slides a window of `window` prompts
over it: the alarm rules and constants are those of the Prometheus rules (llm_router.core.drift), the window of
prompts standing for Prometheus's time window and `for:` for FOR_FRACTION of it.

    router-calibrate drift-check --policy POLICY.yaml --log RECENT_LOG [--window 100] [--tier-map ...] [--json]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from llm_router.core.decide import Attempt, Decision
from llm_router.core.drift import (
    CONFIDENCE_BAND,
    ESCALATION_RATE_TOLERANCE,
    ESCALATION_RATE_Z,
    FOR_FRACTION,
    MIN_FITTED_ATTEMPTS,
    MIN_WINDOW_ATTEMPTS,
    TierAttempt,
    breaches,
    fitted_band,
)
from llm_router.core.policy import Policy, parse_policy

from router_calibration.logs import OutcomeLog
from router_calibration.replay import route_prompt, unmap_policy


@dataclass(frozen=True)
class Alarm:
    """An alarm that replay raised: `tier`, `kind` (escalation_rate | confidence), the start index (prompt, in
    arrival order) of the window it fired on, the live figure there and the fitted figure it left (the rate, or
    the crossed quartile), and the tier's answered attempts in that window."""

    tier: str
    kind: str
    start: int
    live: float
    fitted: float
    attempts: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tier_attempts(attempts: list[Attempt], decisions: list[Decision]) -> list[TierAttempt]:
    """The answered attempts of one routed prompt, each marked escalated when the next decision escalated."""
    out = []
    for k, attempt in enumerate(attempts):
        if attempt.ok:
            escalated = k + 1 < len(decisions) and decisions[k + 1].step == "escalate"
            out.append(TierAttempt(attempt.tier, escalated, attempt.confidence))
    return out


def replay_attempts(policy: Policy, log: OutcomeLog) -> list[list[TierAttempt]]:
    """Per prompt (in log order), the answered attempts when `policy` routes it (tiers named as in the log)."""
    return [tier_attempts(*route_prompt(policy, log, i)) for i in range(log.n)]


def band_for(policy: Policy, log: OutcomeLog) -> dict[str, dict[str, Any]]:
    """The `fitted` mapping of `policy` (log tier names) replayed on `log`."""
    return fitted_band((a for prompt in replay_attempts(policy, log) for a in prompt), policy.tier_names)


def with_band(policy: Policy, log: OutcomeLog, tier_map: Mapping[str, str] | None = None) -> Policy:
    """`policy` (router tier names, `tier_map`: log name -> router name) with the band replay gives on `log`."""
    tier_map = dict(tier_map or {})
    band = band_for(unmap_policy(policy, tier_map), log)
    data = policy.to_dict()
    data["fitted"] = {tier_map.get(name, name): entry for name, entry in band.items()}
    return parse_policy(data, source="fitted policy")


def replay_alarms(
    policy: Policy,
    log: OutcomeLog,
    window: int = 100,
    step: int | None = None,
    tier_map: Mapping[str, str] | None = None,
) -> list[Alarm]:
    """Replay `log` in arrival order through `policy` (with its `fitted` band) and slide a window of `window`
    prompts by `step` (default window // 10): an alarm fires once a breach has held over FOR_FRACTION of a window
    (Prometheus's `for:`), and fires again only after it cleared. No band, or a log shorter than a window: none."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    step = step or max(1, window // 10)
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    if not policy.fitted:
        return []
    routed = unmap_policy(policy, dict(tier_map or {}))
    band = routed.fitted or {}
    prompts = replay_attempts(routed, log)
    hold = math.ceil(FOR_FRACTION * window / step)  # window positions a breach must persist before it fires
    alarms: list[Alarm] = []
    held: dict[tuple[str, str], int] = {}  # (tier, kind) -> consecutive positions in breach
    fired: set[tuple[str, str]] = set()
    for start in range(0, log.n - window + 1, step):
        found = {(b.tier, b.kind): b for b in breaches(band, (a for p in prompts[start : start + window] for a in p))}
        for key in list(held):
            if key not in found:
                held.pop(key)
                fired.discard(key)
        for key, breach in found.items():
            held[key] = held.get(key, 0) + 1
            if held[key] > hold and key not in fired:
                fired.add(key)
                name = (tier_map or {}).get(breach.tier, breach.tier)  # the router's tier name
                alarms.append(Alarm(name, breach.kind, start, breach.live, breach.fitted, breach.attempts))
    return alarms


def rules_summary() -> dict[str, Any]:
    """The alarm thresholds (the same as the Prometheus rules')."""
    return {
        "escalation_rate_tolerance": ESCALATION_RATE_TOLERANCE,
        "escalation_rate_z": ESCALATION_RATE_Z,
        "confidence_band": list(CONFIDENCE_BAND),
        "min_window_attempts": MIN_WINDOW_ATTEMPTS,
        "min_fitted_attempts": MIN_FITTED_ATTEMPTS,
        "for_fraction": FOR_FRACTION,
    }


def format_alarms(alarms: list[Alarm], policy: Policy, log: OutcomeLog, window: int) -> list[str]:
    """Text report of `replay_alarms`."""
    if not policy.fitted:
        return [f"{log.name}: the policy has no fitted band (`fitted`): no drift alarm can fire"]
    head = f"{log.name}: {log.n} prompts, windows of {window}, policy version {policy.version}"
    if not alarms:
        return [head, "no alarm: every tier stayed within its fitted band"]
    lines = [head, f"{len(alarms)} alarm(s):"]
    for a in alarms:
        what = "escalation rate" if a.kind == "escalation_rate" else "median confidence"
        lines.append(
            f"  prompts {a.start}-{a.start + window - 1}: {a.tier} {what} {a.live:.3f} vs fitted {a.fitted:.3f} "
            f"({a.attempts} answered attempts)"
        )
    return lines
