import math

import pytest
from llm_router.core.confidence import (
    CONFIDENCE_FUNCTIONS,
    check_confidence_params,
    compute_confidence,
    first_k_mean,
    mean_logprob,
    min_logprob,
    register_confidence,
)


def test_mean_min_first_k_known_values():
    lp = [-0.5, -1.5, -4.0, -2.0]
    assert mean_logprob(lp) == pytest.approx(-2.0)
    assert min_logprob(lp) == -4.0
    assert first_k_mean(lp, k=2) == pytest.approx(-1.0)
    assert first_k_mean(lp, k=10) == pytest.approx(-2.0)  # k beyond length: all tokens


def test_mean_logprob_is_log_geometric_mean_probability():
    probs = [0.9, 0.5, 0.25]
    geo = (0.9 * 0.5 * 0.25) ** (1 / 3)
    assert math.exp(mean_logprob([math.log(p) for p in probs])) == pytest.approx(geo)


@pytest.mark.parametrize("name", ["mean_logprob", "min_logprob", "first_k_mean"])
def test_empty_sequence_is_minus_infinity(name):
    assert compute_confidence(name, []) == -math.inf


def test_nan_rejected():
    with pytest.raises(ValueError, match="NaN"):
        mean_logprob([-0.1, float("nan")])


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_first_k_bad_k(k):
    with pytest.raises(ValueError, match="k must be an integer"):
        first_k_mean([-0.1], k=k)


def test_registry_add_and_use():
    @register_confidence("last_logprob_test")
    def last_logprob(logprobs):
        return float(logprobs[-1]) if logprobs else -math.inf

    assert CONFIDENCE_FUNCTIONS["last_logprob_test"] is last_logprob
    assert compute_confidence("last_logprob_test", [-3.0, -0.25]) == -0.25
    with pytest.raises(ValueError, match="already registered"):
        register_confidence("mean_logprob")(lambda lp: 0.0)


def test_check_params():
    check_confidence_params("first_k_mean", {"k": 4})
    with pytest.raises(ValueError, match="bad parameters for mean_logprob"):
        check_confidence_params("mean_logprob", {"k": 4})
    with pytest.raises(ValueError, match="unknown confidence function 'nope'"):
        check_confidence_params("nope", {})
    with pytest.raises(ValueError, match="k must be"):
        check_confidence_params("first_k_mean", {"k": 0})


# -- self-verification (llm_router.core.self_verify) ----


def test_verification_prompt_carries_question_and_answer():
    from llm_router.core.self_verify import build_verification_prompt

    prompt = build_verification_prompt("  What is the capital of France? ", " Paris.\n")
    assert prompt == (
        "Question: What is the capital of France?\nProposed answer: Paris.\n\n"
        "Is the proposed answer correct? Answer Yes or No."
    )
    long = build_verification_prompt("q", "x" * 1000, max_answer_chars=10)
    assert "Proposed answer: xxxxxxxxxx ...\n" in long


def test_verdict_from_pieces_takes_the_first_non_blank_piece():
    from llm_router.core.self_verify import NO_VERDICT, Verdict, verdict_from_pieces

    assert verdict_from_pieces([("\n", [-0.3]), (" Yes", [-0.2]), (".", [-0.01])]) == Verdict("yes", -0.2)
    assert verdict_from_pieces([("No,", [-0.5, -0.25])]) == Verdict("no", -0.75)  # a piece of two tokens
    assert verdict_from_pieces([("Nope", [-0.1])]).label == "other"  # "no" must be the whole first word
    assert verdict_from_pieces([("Correct", [-0.4])]) == Verdict("other", -0.4)
    assert verdict_from_pieces([]) == NO_VERDICT
    assert verdict_from_pieces([("  ", [-0.1])]) == NO_VERDICT
    with pytest.raises(ValueError, match="NaN"):
        verdict_from_pieces([("Yes", [float("nan")])])


def test_verdict_from_text_uses_the_first_token():
    from llm_router.core.self_verify import NO_VERDICT, Verdict, verdict_from_text

    assert verdict_from_text("Yes.", [-0.1, -2.0]) == Verdict("yes", -0.1)
    assert verdict_from_text("", []) == NO_VERDICT


@pytest.mark.parametrize(
    ("label", "p", "expected_p"),
    [
        ("yes", 0.9, 0.9),  # exact: P(Yes)
        ("yes", 0.3, 0.3),
        ("no", 0.9, 0.1),  # P(Yes) <= 1 - P(No)
        ("no", 0.4, 0.4),  # greedy picked No, so P(Yes) <= P(No) too: min(0.4, 0.6)
        ("other", 0.8, 0.2),
    ],
)
def test_self_verify_score(label, p, expected_p):
    from llm_router.core.self_verify import Verdict

    score = compute_confidence("self_verify", Verdict(label, math.log(p)))
    assert score == pytest.approx(math.log(expected_p))


def test_self_verify_edges_and_registry():
    from llm_router.core.confidence import VERIFICATION_FUNCTIONS, needs_verification
    from llm_router.core.self_verify import NO_VERDICT, Verdict

    assert compute_confidence("self_verify", NO_VERDICT) == -math.inf
    assert compute_confidence("self_verify", Verdict("no", 0.0)) == -math.inf  # a certain No
    assert compute_confidence("self_verify", Verdict("yes", 0.0)) == 0.0
    assert "self_verify" in VERIFICATION_FUNCTIONS and "self_verify" in CONFIDENCE_FUNCTIONS
    assert needs_verification("self_verify") and not needs_verification("mean_logprob")
    with pytest.raises(ValueError, match="unknown confidence function"):
        needs_verification("nope")
    with pytest.raises(ValueError, match="not the answer's log-probs"):
        compute_confidence("self_verify", [-0.1, -0.2])
    with pytest.raises(ValueError, match="must be <= 0"):
        Verdict("yes", 0.5)
    check_confidence_params("self_verify", {})
    with pytest.raises(ValueError, match="bad parameters for self_verify"):
        check_confidence_params("self_verify", {"k": 4})


def test_policy_accepts_self_verify():
    from pathlib import Path

    from llm_router.core.policy import PolicyError, load_policy, parse_policy

    data = load_policy(Path(__file__).resolve().parents[2] / "model_repository/router/1/policy.yaml").to_dict()
    data["tiers"][0]["confidence"] = {"function": "self_verify"}
    assert parse_policy(data).tiers[0].confidence.function == "self_verify"
    data["tiers"][0]["confidence"] = {"function": "self_verify", "params": {"k": 8}}
    with pytest.raises(PolicyError, match=r"tiers\[0\]\.confidence.*bad parameters for self_verify"):
        parse_policy(data)
