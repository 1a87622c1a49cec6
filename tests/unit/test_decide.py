import json
import math

import pytest
from llm_router.core.decide import (
    Attempt,
    Classification,
    DecisionKind,
    Overrides,
    RequestOverrideError,
    decide,
    make_trace,
    start_tier,
    tier_max_tokens,
    validate_overrides,
)
from llm_router.core.policy import INTENTS, parse_policy

S, M, L = "tier_small", "tier_medium", "tier_large"


def _tier(name, cin, cout, threshold):
    t = {
        "name": name,
        "cost_per_1k_input": cin,
        "cost_per_1k_output": cout,
        "max_tokens": 64,
        "deadline_s": 5,
    }
    if threshold is not None:
        t["escalation_threshold"] = threshold
    return t


def make_policy(max_escalations=2, difficulty_rule=True, thresholds=(-1.0, -0.5, None)):
    data = {
        "version": 1,
        "tiers": [
            _tier(S, 0.0001, 0.0002, thresholds[0]),
            _tier(M, 0.0006, 0.0012, thresholds[1]),
            _tier(L, 0.005, 0.015, thresholds[2]),
        ],
        "start_tier_by_intent": {**dict.fromkeys(INTENTS, S), "coding": M, "planning": L},
        "max_escalations": max_escalations,
        "default_start_tier": S,
    }
    if difficulty_rule:
        data["difficulty_rule"] = {"below": 0.3, "min_tier": M}
    return parse_policy(data)


P = make_policy()
QA = Classification("factual_qa", {"factual_qa": 0.8, "reasoning": 0.2}, difficulty=0.9)


def ok(tier, conf, out=10):
    return Attempt(tier, "ok", confidence=conf, input_tokens=100, output_tokens=out, latency_ms=5.0)


def err(tier, outcome="error", why="boom"):
    return Attempt(tier, outcome, error=why)


# -- start tier ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("classification", "overrides", "expected"),
    [
        (QA, Overrides(), S),
        (Classification("coding", {}, 0.9), Overrides(), M),
        (Classification("planning", {}, 0.9), Overrides(), L),
        (None, Overrides(), S),  # classifier unavailable -> default_start_tier
        (Classification("factual_qa", {}, 0.1), Overrides(), M),  # hard prompt: difficulty rule
        (Classification("factual_qa", {}, 0.3), Overrides(), S),  # rule is strict "below"
        (Classification("planning", {}, 0.1), Overrides(), L),  # rule only raises
        (Classification("factual_qa", {}, None), Overrides(), S),  # no difficulty: rule not applied
        (Classification("poetry", {}, 0.9), Overrides(), S),  # unknown intent -> default
        (QA, Overrides(min_tier=M), M),
        (Classification("planning", {}, 0.9), Overrides(max_tier=M), M),
        (QA, Overrides(force_tier=L), L),
    ],
)
def test_start_tier(classification, overrides, expected):
    d = decide(P, classification, [], overrides)
    assert (d.kind, d.tier, d.step) == (DecisionKind.CALL, expected, "start")
    assert start_tier(P, classification, overrides)[0] == expected


def test_start_reason_mentions_rules():
    assert "classifier unavailable" in decide(P, None, []).reason
    assert "difficulty 0.100 < 0.3" in decide(P, Classification("factual_qa", {}, 0.1), []).reason


# -- accept / escalate ---------------------------------------------------------------------------------------


def test_confident_small_answer_accepted():
    d = decide(P, QA, [ok(S, -0.2)])
    assert (d.kind, d.attempt_index, d.tier) == (DecisionKind.ACCEPT, 0, S)
    assert "-0.2 >= threshold -1" in d.reason


def test_threshold_is_inclusive():
    assert decide(P, QA, [ok(S, -1.0)]).kind is DecisionKind.ACCEPT


def test_unsure_small_escalates_then_large_accepted():
    d = decide(P, QA, [ok(S, -2.0)])
    assert (d.kind, d.tier, d.step) == (DecisionKind.CALL, M, "escalate")
    d = decide(P, QA, [ok(S, -2.0), ok(M, -0.9)])
    assert (d.kind, d.tier) == (DecisionKind.CALL, L)
    d = decide(P, QA, [ok(S, -2.0), ok(M, -0.9), ok(L, -5.0)])  # largest tier has no threshold
    assert (d.kind, d.attempt_index) == (DecisionKind.ACCEPT, 2)


def test_missing_or_nan_confidence_escalates():
    assert decide(P, QA, [ok(S, None)]).kind is DecisionKind.CALL
    assert decide(P, QA, [ok(S, math.nan)]).kind is DecisionKind.CALL


def test_request_threshold_overrides_every_tier():
    ov = validate_overrides(P, confidence_threshold=-3.0)
    assert decide(P, QA, [ok(S, -2.0)], ov).kind is DecisionKind.ACCEPT
    ov = validate_overrides(P, confidence_threshold="0.5")  # unreachable: always escalates
    assert decide(P, QA, [ok(S, -0.01)], ov).tier == M
    # the override applies to the largest tier too; with nowhere to go its answer is accepted
    d = decide(P, QA, [ok(S, -0.01), ok(M, -0.01), ok(L, -0.01)], ov)
    assert (d.kind, d.attempt_index) == (DecisionKind.ACCEPT, 2)
    assert "no higher allowed tier" in d.reason


def test_max_tier_stops_escalation_and_accepts_best():
    ov = validate_overrides(P, max_tier=M)
    d = decide(P, QA, [ok(S, -2.0), ok(M, -3.0)], ov)
    assert (d.kind, d.attempt_index, d.tier) == (DecisionKind.ACCEPT, 1, M)
    assert "no higher allowed tier" in d.reason


def test_max_escalations_used_up():
    p = make_policy(max_escalations=1)
    d = decide(p, QA, [ok(S, -2.0), ok(M, -3.0)])
    assert (d.kind, d.attempt_index) == (DecisionKind.ACCEPT, 1)
    assert "max_escalations=1" in d.reason
    p0 = make_policy(max_escalations=0)
    d = decide(p0, QA, [ok(S, -2.0)])
    assert (d.kind, d.attempt_index) == (DecisionKind.ACCEPT, 0)


def test_force_tier_never_escalates_or_falls_back():
    ov = validate_overrides(P, force_tier=S)
    d = decide(P, QA, [ok(S, -9.0)], ov)
    assert (d.kind, d.attempt_index) == (DecisionKind.ACCEPT, 0) and "force_tier" in d.reason
    d = decide(P, QA, [err(S)], ov)
    assert d.kind is DecisionKind.FAIL and d.failures == ("tier_small: error (boom)",)


# -- fallback ----------------------------------------------------------------------------------------------


def test_error_falls_back_up_without_counting_as_escalation():
    p = make_policy(max_escalations=1)
    d = decide(p, QA, [err(S, "timeout", "deadline 5 s")])
    assert (d.kind, d.tier, d.step) == (DecisionKind.CALL, M, "fallback")
    assert "tier_small: timeout (deadline 5 s)" in d.reason
    # fallback did not use the single escalation: the unsure medium answer may still escalate
    d = decide(p, QA, [err(S), ok(M, -2.0)])
    assert (d.kind, d.tier, d.step) == (DecisionKind.CALL, L, "escalate")


def test_failed_escalation_keeps_the_earlier_answer():
    d = decide(P, QA, [ok(S, -2.0), ok(M, -0.9), err(L, "timeout")])
    assert (d.kind, d.attempt_index, d.tier) == (DecisionKind.ACCEPT, 1, M)
    assert "best available" in d.reason


def test_top_tier_failure_falls_back_down():
    plan = Classification("planning", {}, 0.9)
    d = decide(P, plan, [err(L)])
    assert (d.kind, d.tier, d.step) == (DecisionKind.CALL, M, "fallback")
    assert "fall back down" in d.reason
    d = decide(P, plan, [err(L), ok(M, -5.0)])  # nothing higher untried: accept it
    assert (d.kind, d.attempt_index) == (DecisionKind.ACCEPT, 1)


def test_all_tiers_fail_lists_every_reason():
    attempts = [
        err(S, "error", "CUDA OOM"),
        err(M, "timeout", "deadline 8 s"),
        err(L, "error", "unavailable"),
    ]
    d = decide(P, QA, attempts)
    assert d.kind is DecisionKind.FAIL
    assert d.failures == (
        "tier_small: error (CUDA OOM)",
        "tier_medium: timeout (deadline 8 s)",
        "tier_large: error (unavailable)",
    )
    assert "every allowed tier failed" in d.reason


def test_min_tier_bounds_downward_fallback():
    ov = validate_overrides(P, min_tier=M)
    plan = Classification("planning", {}, 0.9)
    d = decide(P, plan, [err(L), err(M)], ov)
    assert d.kind is DecisionKind.FAIL and len(d.failures) == 2


def test_bad_attempt_sequences_rejected():
    with pytest.raises(ValueError, match="attempted twice"):
        decide(P, QA, [ok(S, -2.0), ok(S, -2.0)])
    with pytest.raises(ValueError, match="unknown tier"):
        decide(P, QA, [ok("tier_xl", -2.0)])


# -- overrides ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"force_tier": "tier_xl"}, "force_tier: unknown tier 'tier_xl'"),
        ({"min_tier": ""}, "min_tier: must be a tier name"),
        ({"max_tier": 3}, "max_tier: must be a tier name"),
        ({"min_tier": L, "max_tier": S}, "min_tier 'tier_large' is above max_tier 'tier_small'"),
        ({"force_tier": L, "max_tier": M}, "force_tier 'tier_large' is outside [min_tier, max_tier]"),
        ({"confidence_threshold": "nan"}, "confidence_threshold: must be a finite number"),
        ({"confidence_threshold": float("-inf")}, "confidence_threshold: must be a finite number"),
        ({"confidence_threshold": "high"}, "confidence_threshold: must be a finite number, got 'high'"),
        ({"confidence_threshold": True}, "confidence_threshold: must be a finite number"),
    ],
)
def test_bad_overrides(kwargs, message):
    with pytest.raises(RequestOverrideError) as e:
        validate_overrides(P, **kwargs)
    assert message in str(e.value)


def test_good_overrides():
    ov = validate_overrides(P, min_tier=S, max_tier=S, confidence_threshold=-2)
    assert ov == Overrides(min_tier=S, max_tier=S, confidence_threshold=-2.0)


def test_tier_max_tokens():
    assert tier_max_tokens(P, S, None) == 64
    assert tier_max_tokens(P, S, 16) == 16
    assert tier_max_tokens(P, S, 1000) == 64
    with pytest.raises(RequestOverrideError, match="max_tokens"):
        tier_max_tokens(P, S, 0)


# -- trace --------------------------------------------------------------------------------------------------


def test_trace_of_escalation_then_fallback():
    attempts = [
        ok(S, -2.0, out=12),
        Attempt(M, "timeout", input_tokens=100, output_tokens=3, error="8 s"),
        ok(L, -0.1, out=20),
    ]
    final, trace = make_trace(P, QA, attempts)
    assert final.kind is DecisionKind.ACCEPT and trace.final_tier == L
    assert [a.step for a in trace.attempts] == ["start", "escalate", "fallback"]
    assert [a.result for a in trace.attempts] == ["escalated (answer discarded)", "failed", "accepted"]
    assert (trace.escalations, trace.fallbacks, trace.escalated) == (1, 1, True)
    assert trace.tokens_wasted == 12 + 3
    small = (100 * 0.0001 + 12 * 0.0002) / 1000
    medium = (100 * 0.0006 + 3 * 0.0012) / 1000
    large = (100 * 0.005 + 20 * 0.015) / 1000
    assert trace.cost == pytest.approx(small + medium + large)
    assert trace.largest_tier_cost == pytest.approx(large)
    assert trace.cost_saved == pytest.approx(-(small + medium))
    data = json.loads(trace.to_json())
    assert data["intent"] == "factual_qa" and data["intent_probs"]["factual_qa"] == 0.8
    assert data["attempts"][0]["confidence"] == -2.0 and data["attempts"][0]["threshold"] == -1.0


def test_trace_uses_given_cost_and_handles_failure_and_no_classifier():
    attempts = [Attempt(S, "ok", confidence=-0.1, output_tokens=5, cost=0.25)]
    _, trace = make_trace(P, None, attempts)
    assert trace.cost == 0.25 and trace.classifier == "unavailable" and not trace.escalated
    assert trace.tokens_wasted == 0
    final, trace = make_trace(P, QA, [err(S), err(M), err(L)])
    assert final.kind is DecisionKind.FAIL and trace.status == "failed" and trace.cost_saved is None
    assert json.loads(trace.to_json())["status"] == "failed"


def test_trace_json_handles_infinite_confidence():
    _, trace = make_trace(P, QA, [ok(S, -math.inf), ok(M, -0.1)])
    assert json.loads(trace.to_json())["attempts"][0]["confidence"] == "-inf"
