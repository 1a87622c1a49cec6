import json
import math

import pytest
from llm_router.core.confidence import compute_confidence
from llm_router.core.decide import (
    STREAMED_REASON,
    Attempt,
    Classification,
    DecisionKind,
    Overrides,
    RequestOverrideError,
    RouterFacts,
    Step,
    Verification,
    check_max_tokens,
    decide,
    make_trace,
    start_tier,
    tier_max_tokens,
    validate_overrides,
)
from llm_router.core.policy import INTENTS, parse_policy
from llm_router.core.self_verify import NO_VERDICT, Verdict

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
        data["difficulty_rule"] = {"above": 0.7, "min_tier": M}
    return parse_policy(data)


P = make_policy()
QA = Classification("factual_qa", {"factual_qa": 0.8, "reasoning": 0.2}, difficulty=0.1)


def ok(tier, conf, out=10):
    return Attempt(tier, "ok", confidence=conf, input_tokens=100, output_tokens=out, latency_ms=5.0)


def err(tier, outcome="error", why="boom"):
    return Attempt(tier, outcome, error=why)


# -- start tier ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("classification", "overrides", "expected"),
    [
        (QA, Overrides(), S),
        (Classification("coding", {}, 0.1), Overrides(), M),
        (Classification("planning", {}, 0.1), Overrides(), L),
        (None, Overrides(), S),  # classifier unavailable -> default_start_tier
        (Classification("factual_qa", {}, 0.9), Overrides(), M),  # hard prompt: difficulty rule
        (Classification("factual_qa", {}, 0.7), Overrides(), S),  # rule is strict "above"
        (Classification("planning", {}, 0.9), Overrides(), L),  # rule only raises
        (Classification("factual_qa", {}, None), Overrides(), S),  # no difficulty: rule not applied
        (Classification("poetry", {}, 0.1), Overrides(), S),  # unknown intent -> default
        (QA, Overrides(min_tier=M), M),
        (Classification("planning", {}, 0.1), Overrides(max_tier=M), M),
        (QA, Overrides(force_tier=L), L),
    ],
)
def test_start_tier(classification, overrides, expected):
    d = decide(P, classification, [], overrides)
    assert (d.kind, d.tier, d.step) == (DecisionKind.CALL, expected, "start")
    assert start_tier(P, classification, overrides)[0] == expected


def test_start_reason_mentions_rules():
    assert "classifier unavailable" in decide(P, None, []).reason
    assert "difficulty 0.900 > 0.7" in decide(P, Classification("factual_qa", {}, 0.9), []).reason


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
    ov = validate_overrides(P, confidence_threshold="-1e-3")  # above every answer here: always escalates
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


def test_steps_are_an_enum_that_reads_as_text():
    d = decide(P, QA, [ok(S, -2.0)])
    assert d.step is Step.ESCALATE and d.step == "escalate"
    assert json.loads(json.dumps({"step": d.step})) == {"step": "escalate"}


def test_offline_trace_has_no_router_fields():
    _, trace = make_trace(P, QA, [ok(S, -0.1)])
    data = trace.to_dict()
    assert not {"classifier_error", "router_overhead_ms", "policy_version", "answers"} & set(data)


def test_router_trace_is_built_complete():
    attempts = [ok(S, -2.0, out=12), ok(M, -0.1, out=7)]
    facts = RouterFacts(classifier_error=None, elapsed_ms=25.0, answers=["cheap", "better"])
    final, trace = make_trace(P, QA, attempts, router=facts)
    data = trace.to_dict()
    assert final.kind is DecisionKind.ACCEPT and data["router_overhead_ms"] == 15.0  # 25 ms - 2 x 5 ms generating
    assert data["policy_version"] == P.version and "classifier_error" not in data
    assert data["answers"] == [{"tier": S, "text": "cheap"}, {"tier": M, "text": "better"}]
    _, trace = make_trace(P, None, [], router=RouterFacts(classifier_error="classifier timed out", elapsed_ms=1.0))
    assert trace.to_dict()["classifier_error"] == "classifier timed out"


def test_a_streamed_answer_is_accepted_whatever_it_scored():
    attempts = [ok(S, -2.0, out=12)]  # low confidence: decide() would escalate, but the text already went out
    final, trace = make_trace(P, QA, attempts)
    assert final.kind is DecisionKind.CALL and trace.status == "in_progress"
    final, trace = make_trace(P, QA, attempts, router=RouterFacts(streamed=True, elapsed_ms=6.0))
    assert (final.kind, final.tier, final.attempt_index) == (DecisionKind.ACCEPT, S, 0)
    assert (trace.status, trace.final_tier, trace.final_reason) == ("accepted", S, STREAMED_REASON)
    assert trace.attempts[0].result == "accepted" and trace.tokens_wasted == 0
    assert trace.cost_saved is not None and trace.cost_saved > 0


# -- issue 16: thresholds above 0, max_tokens above every cap, finish_reason -----------------------------------------
@pytest.mark.parametrize("value", [0.5, "1e-3", 3])
def test_confidence_threshold_above_zero_is_refused(value) -> None:
    with pytest.raises(RequestOverrideError, match=r"confidence_threshold: must be <= 0"):
        validate_overrides(P, confidence_threshold=value)
    assert validate_overrides(P, confidence_threshold=0).confidence_threshold == 0.0


def test_max_tokens_above_every_tiers_cap_is_refused_naming_the_limit() -> None:
    check_max_tokens(P, None)
    check_max_tokens(P, 64)
    with pytest.raises(RequestOverrideError, match=r"max_tokens 65 is above the limit of every tier: at most 64"):
        check_max_tokens(P, 65)
    with pytest.raises(RequestOverrideError, match=r"max_tokens must be >= 1"):
        check_max_tokens(P, 0)


@pytest.mark.parametrize(("out", "cap", "reason"), [(64, 64, "length"), (12, 12, "length"), (11, 12, "stop")])
def test_finish_reason_says_whether_the_calls_cap_cut_the_answer(out: int, cap: int, reason: str) -> None:
    facts = RouterFacts(max_tokens=[cap])
    _, trace = make_trace(P, QA, [ok(S, -0.1, out=out)], router=facts)
    assert trace.finish_reason == reason and trace.to_dict()["finish_reason"] == reason
    _, offline = make_trace(P, QA, [ok(S, -0.1, out=out)])
    assert offline.finish_reason is None and "finish_reason" not in offline.to_dict()


def test_finish_reason_is_that_of_the_accepted_attempt() -> None:
    # the escalated tier used its whole cap, the accepted one did not
    attempts = [ok(S, -5.0, out=64), ok(M, -0.1, out=3)]
    _, trace = make_trace(P, QA, attempts, router=RouterFacts(max_tokens=[64, 64]))
    assert trace.final_tier == M and trace.finish_reason == "stop"


# -- self-verification: the second call is part of the attempt and of the trace --------------------------------------
def _verified(tier, verdict, answer_in=100, answer_out=10, v_in=40, v_out=2, error=None):
    check = Verification(verdict, input_tokens=v_in, output_tokens=v_out, latency_ms=3.0, error=error)
    return Attempt(
        tier,
        "ok",
        confidence=compute_confidence("self_verify", verdict),
        input_tokens=answer_in + v_in,
        output_tokens=answer_out + v_out,
        latency_ms=5.0 + 3.0,
        verification=check,
    )


def test_trace_records_the_verification_and_costs_both_calls():
    attempts = [_verified(S, Verdict("no", -0.2)), ok(M, -0.1, out=7)]
    final, trace = make_trace(P, QA, attempts, router=RouterFacts(max_tokens=[10, 64], elapsed_ms=30.0))
    assert final.tier == M and trace.attempts[0].result == "escalated (answer discarded)"
    record = trace.to_dict()["attempts"][0]
    assert record["verification"] == {
        "verdict": "no",
        "logprob": -0.2,
        "input_tokens": 40,
        "output_tokens": 2,
        "latency_ms": 3.0,
    }
    assert record["confidence"] == pytest.approx(math.log1p(-math.exp(-0.2)))  # "No" bounds log P("Yes")
    assert (record["input_tokens"], record["output_tokens"]) == (140, 12)
    assert record["cost"] == pytest.approx((140 * 0.0001 + 12 * 0.0002) / 1000)  # prices x both calls' tokens
    assert "verification" not in trace.to_dict()["attempts"][1]  # a log-prob tier has no verification record
    assert trace.tokens_wasted == 12  # the discarded answer and its verdict
    assert trace.router_overhead_ms == pytest.approx(30.0 - 8.0 - 5.0)


def test_verified_answer_baseline_and_finish_reason_count_the_answer_alone():
    attempt = _verified(S, Verdict("yes", -0.05), answer_in=100, answer_out=10, v_in=40, v_out=3)
    assert (attempt.answer_input_tokens, attempt.answer_output_tokens) == (100, 10)
    final, trace = make_trace(P, QA, [attempt], router=RouterFacts(max_tokens=[12]))
    assert final.kind is DecisionKind.ACCEPT and trace.attempts[0].confidence == -0.05
    # always tier_large would answer once, with nothing to verify; 10 + 3 tokens >= cap 12, but the answer's 10 < 12
    assert trace.largest_tier_cost == pytest.approx((100 * 0.005 + 10 * 0.015) / 1000)
    assert trace.finish_reason == "stop"
    _, capped = make_trace(P, QA, [attempt], router=RouterFacts(max_tokens=[10]))
    assert capped.finish_reason == "length"


def test_no_verdict_is_recorded_as_none_with_its_reason():
    attempt = _verified(S, NO_VERDICT, v_in=0, v_out=0, error="verification failed: tier_small overran")
    final, trace = make_trace(P, QA, [attempt, ok(M, -0.1)])
    assert final.tier == M and attempt.score == -math.inf
    record = json.loads(trace.to_json())["attempts"][0]["verification"]
    assert record["verdict"] == "none" and record["logprob"] == "-inf"
    assert record["error"] == "verification failed: tier_small overran"
