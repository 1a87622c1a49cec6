"""Drift alarms, pure: the band a policy was fitted with, and when live figures leave it.

A policy version may record per tier what replaying it on its calibration log gave (``Policy.fitted``): the share of
the tier's answered attempts that escalated, the confidence quantiles of those attempts, and how many there were.
The router exports that band as gauges beside the live figures (llm_router.router.metrics); Prometheus rules
(docker/prometheus/rules/router-drift.yml, the Helm chart's PrometheusRule) and the offline ``router-calibrate
drift-check`` raise the same two alarms with the constants below (a unit test checks the rules against them):

* ``escalation_rate``: the tier's live escalation rate is more than ``ESCALATION_RATE_TOLERANCE`` (absolute) away
  from the fitted rate f, and more than ``ESCALATION_RATE_Z`` standard errors sqrt(f (1 - f) / n) of a window of n
  answered attempts (so a small window's noise stays quiet);
* ``confidence``: the live median confidence of the tier's answers is outside the fitted interquartile range
  [p25, p75] (half the answers moved past a fitted quartile).

Each needs at least ``MIN_WINDOW_ATTEMPTS`` answered attempts of the tier in the window (so idle servers and tiers
that escalations rarely reach stay quiet) and a band fitted on at least ``MIN_FITTED_ATTEMPTS``; a policy without a
band raises no alarm. Quantiles are estimated as Prometheus's ``histogram_quantile`` estimates them from the
``router_confidence`` buckets (``CONFIDENCE_BUCKETS``), for the band as for the live window, so the two compare
like with like whatever the bucket resolution.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# the router_confidence histogram's bucket upper bounds (log-prob scale); +Inf is implied
CONFIDENCE_BUCKETS: list[float] = [-8.0, -4.0, -3.0, -2.0, -1.5, -1.0, -0.75, -0.5, -0.25, -0.1]
# fine near 0: a confident tier (e.g. a large hosted model) answers mostly above -0.1, where a shift of its
# confidence is invisible without them (measured in the drift drill: gpt-4o-mini's quartiles all in (-0.1, 0])
CONFIDENCE_BUCKETS += [-0.05, -0.02, -0.01, -0.005, -0.001, 0.0]
# the band's confidence quantiles: policy field name -> quantile (the gauges' `quantile` label is str(q))
QUANTILES: dict[str, float] = {"p10": 0.1, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p90": 0.9}

ESCALATION_RATE_TOLERANCE = 0.10  # absolute: e.g. fitted 0.30, alarm below 0.20 or above 0.40 ...
ESCALATION_RATE_Z = 3.0  # ... and beyond this many binomial standard errors of the fitted rate over the window
CONFIDENCE_LIVE_QUANTILE = 0.5  # the live median ...
CONFIDENCE_BAND = ("p25", "p75")  # ... must stay within the fitted interquartile range
MIN_WINDOW_ATTEMPTS = 30  # answered attempts of a tier in the window (Prometheus: increase over RATE_WINDOW)
MIN_FITTED_ATTEMPTS = 30  # a band fitted on fewer attempts of a tier raises no alarm for it
RATE_WINDOW = "30m"  # Prometheus: the live window (rate/increase range)
ALERT_FOR = "15m"  # Prometheus: how long a breach must last; replay: the same share of its window (FOR_FRACTION)
FOR_FRACTION = 0.5  # ALERT_FOR / RATE_WINDOW

Kind = Literal["escalation_rate", "confidence"]


@dataclass(frozen=True)
class TierAttempt:
    """One answered (OK) attempt: its tier, whether the router escalated after it, and its confidence (None or
    non-finite: no confidence, it counts for the escalation rate only)."""

    tier: str
    escalated: bool
    confidence: float | None = None


@dataclass(frozen=True)
class Breach:
    """One alarm condition that holds over a window: tier, kind, the live figure and the fitted one it left."""

    tier: str
    kind: Kind
    live: float
    fitted: float
    attempts: int


def histogram_quantile(q: float, values: Iterable[float], buckets: Sequence[float] = CONFIDENCE_BUCKETS) -> float:
    """The q-quantile of `values` as Prometheus's histogram_quantile estimates it from cumulative buckets with
    these upper bounds (+Inf added): linear within the bucket, the lowest bucket's upper bound when the rank falls
    in it (its bounds are <= 0), the highest finite bound when it falls in +Inf. NaN without values."""
    counts = [0] * (len(buckets) + 1)
    for v in values:
        counts[bisect.bisect_left(buckets, v)] += 1  # le: v <= bound goes into that bound's bucket
    total = sum(counts)
    if total == 0:
        return math.nan
    cumulative, running = [], 0
    for c in counts:
        running += c
        cumulative.append(running)
    rank = q * total
    b = next(i for i, c in enumerate(cumulative) if c >= rank)  # the last (+Inf) holds all
    if b == len(buckets):
        return buckets[-1]
    if b == 0 and buckets[0] <= 0:
        return buckets[0]
    start, below = (buckets[b - 1], cumulative[b - 1]) if b else (0.0, 0)
    inside = cumulative[b] - below
    return buckets[b] if inside == 0 else start + (buckets[b] - start) * ((rank - below) / inside)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def fitted_band(attempts: Iterable[TierAttempt], tiers: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """The policy's `fitted` mapping from replayed attempts: per tier (in `tiers` order when given) its answered
    attempts, escalation rate and confidence quantiles (absent when none of its answers had a confidence)."""
    by_tier: dict[str, list[TierAttempt]] = {}
    for attempt in attempts:
        by_tier.setdefault(attempt.tier, []).append(attempt)
    order = [t for t in tiers if t in by_tier] if tiers is not None else list(by_tier)
    band: dict[str, dict[str, Any]] = {}
    for tier in order:
        rows = by_tier[tier]
        entry: dict[str, Any] = {
            "attempts": len(rows),
            "escalation_rate": round(sum(a.escalated for a in rows) / len(rows), 6),
        }
        confidences = [float(a.confidence) for a in rows if _finite(a.confidence)]
        if confidences:
            entry["confidence"] = {name: round(histogram_quantile(q, confidences), 6) for name, q in QUANTILES.items()}
        band[tier] = entry
    return band


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def breaches(band: Mapping[str, Any], window: Iterable[TierAttempt]) -> list[Breach]:
    """The alarm conditions that hold for the answered attempts of one live window, against `band` (the policy's
    `fitted`, as models or plain dicts): see the module docstring for the rules."""
    by_tier: dict[str, list[TierAttempt]] = {}
    for attempt in window:
        by_tier.setdefault(attempt.tier, []).append(attempt)
    out: list[Breach] = []
    for tier, fitted in band.items():
        rows = by_tier.get(tier, [])
        if len(rows) < MIN_WINDOW_ATTEMPTS or (_get(fitted, "attempts") or 0) < MIN_FITTED_ATTEMPTS:
            continue
        rate = sum(a.escalated for a in rows) / len(rows)
        fitted_rate = float(_get(fitted, "escalation_rate"))
        gap = abs(rate - fitted_rate)
        noise = ESCALATION_RATE_Z * math.sqrt(fitted_rate * (1 - fitted_rate) / len(rows))
        if gap > ESCALATION_RATE_TOLERANCE and gap > noise:
            out.append(Breach(tier, "escalation_rate", rate, fitted_rate, len(rows)))
        quantiles = _get(fitted, "confidence")
        confidences = [float(a.confidence) for a in rows if _finite(a.confidence)]
        if quantiles is None or not confidences:
            continue
        live = histogram_quantile(CONFIDENCE_LIVE_QUANTILE, confidences)
        low, high = (float(_get(quantiles, name)) for name in CONFIDENCE_BAND)
        if live < low:
            out.append(Breach(tier, "confidence", live, low, len(rows)))
        elif live > high:
            out.append(Breach(tier, "confidence", live, high, len(rows)))
    return out


# -- the Prometheus rules (docker/prometheus/rules/router-drift.yml and the Helm chart's copy, written by
#    deploy/generate.py from this function) --------------------------------------------------------------------
_BY = "namespace, model, tier"  # namespace: set by the Prometheus Operator in Kubernetes, absent under compose


def prometheus_rules() -> dict[str, Any]:
    """The recording and alerting rules of the drift alarms, built from this module's constants."""
    low, high = (QUANTILES[name] for name in CONFIDENCE_BAND)
    gap = f"abs(router:tier_escalation_rate:ratio{RATE_WINDOW} - on ({_BY}) router:fitted_escalation_rate)"
    enough = (
        f"and on ({_BY}) router:tier_attempts:increase{RATE_WINDOW} >= {MIN_WINDOW_ATTEMPTS}\n"
        f"and on ({_BY}) router:fitted_attempts >= {MIN_FITTED_ATTEMPTS}"
    )
    noise = (
        f"{ESCALATION_RATE_Z:g} * sqrt(router:fitted_escalation_rate * (1 - router:fitted_escalation_rate)\n"
        f"  / on ({_BY}) router:tier_attempts:increase{RATE_WINDOW})"
    )
    records = [
        ("router:tier_attempts:increase" + RATE_WINDOW,
         f"sum by ({_BY}) (increase(router_tier_attempts_total[{RATE_WINDOW}]))"),
        ("router:tier_escalation_rate:ratio" + RATE_WINDOW,
         f"sum by ({_BY}) (label_replace(increase(router_escalations_total[{RATE_WINDOW}]), \"tier\", \"$1\", "
         f"\"from_tier\", \"(.*)\"))\n/ on ({_BY}) (router:tier_attempts:increase{RATE_WINDOW} > 0)"),
        (f"router:confidence_p{CONFIDENCE_LIVE_QUANTILE * 100:g}:{RATE_WINDOW}",
         f"histogram_quantile({CONFIDENCE_LIVE_QUANTILE:g}, "
         f"sum by ({_BY}, le) (rate(router_confidence_bucket[{RATE_WINDOW}])))"),
        # one series per (model, tier) whatever the number of replicas (they serve the same policy version)
        ("router:fitted_escalation_rate", f"max by ({_BY}) (router_fitted_escalation_rate)"),
        ("router:fitted_attempts", f"max by ({_BY}) (router_fitted_attempts)"),
        (f"router:fitted_confidence_{CONFIDENCE_BAND[0]}",
         f"max by ({_BY}) (router_fitted_confidence{{quantile=\"{low:g}\"}})"),
        (f"router:fitted_confidence_{CONFIDENCE_BAND[1]}",
         f"max by ({_BY}) (router_fitted_confidence{{quantile=\"{high:g}\"}})"),
    ]  # fmt: skip
    live_q = f"router:confidence_p{CONFIDENCE_LIVE_QUANTILE * 100:g}:{RATE_WINDOW}"
    alerts = [
        {
            "alert": "LLMRouterEscalationRateDrift",
            "expr": f"{gap} > {ESCALATION_RATE_TOLERANCE:g}\nand on ({_BY}) {gap} > {noise}\n{enough}",
            "for": ALERT_FOR,
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ $labels.model }}: escalation rate of {{ $labels.tier }} left its fitted band",
                "description": (
                    f"The share of {{{{ $labels.tier }}}}'s answers that escalate has been more than "
                    f"{ESCALATION_RATE_TOLERANCE:g} away from the rate the policy was fitted with for {ALERT_FOR} "
                    '(now off by {{ $value | printf "%.2f" }}): traffic drifted. '
                    "Check with router-calibrate drift-check on recent records and refit "
                    "(docs/reliability.md, Drift alarms)."
                ),
            },
        },
        {
            "alert": "LLMRouterConfidenceDrift",
            "expr": (
                f"(\n  {live_q} < on ({_BY}) router:fitted_confidence_{CONFIDENCE_BAND[0]}\n"
                f"  or {live_q} > on ({_BY}) router:fitted_confidence_{CONFIDENCE_BAND[1]}\n)\n{enough}"
            ),
            "for": ALERT_FOR,
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ $labels.model }}: confidence of {{ $labels.tier }} left its fitted band",
                "description": (
                    f"The median confidence of {{{{ $labels.tier }}}}'s answers "
                    '({{ $value | printf "%.3f" }}) has '
                    f"been outside the interquartile range the policy was fitted with for {ALERT_FOR}: traffic "
                    "drifted. Check with router-calibrate drift-check on recent records and refit "
                    "(docs/reliability.md, Drift alarms)."
                ),
            },
        },
    ]
    return {
        "groups": [
            {"name": "llm-router-drift.rules", "rules": [{"record": r, "expr": e} for r, e in records]},
            {"name": "llm-router-drift.alerts", "rules": alerts},
        ]
    }


def rules_yaml() -> str:
    """`prometheus_rules()` as the YAML file Prometheus reads (block scalars for the multi-line expressions)."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    header = (
        "# Drift alarms of the LLM router: built by llm_router.core.drift.prometheus_rules() from its constants.\n"
        "# Do not edit: change the constants and run `python deploy/generate.py` (docs/reliability.md, Drift alarms).\n"
    )
    return header + yaml.dump(prometheus_rules(), Dumper=_Dumper, sort_keys=False, width=120)
