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
