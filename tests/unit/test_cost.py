import pytest
from llm_router.core.cost import call_cost, cost_saved, largest_tier_cost
from llm_router.core.policy import INTENTS, parse_policy


def _tier(name, cin, cout):
    return {
        "name": name,
        "cost_per_1k_input": cin,
        "cost_per_1k_output": cout,
        "max_tokens": 64,
        "deadline_s": 5,
    }


@pytest.fixture
def policy():
    return parse_policy(
        {
            "version": 1,
            "tiers": [
                _tier("tier_small", 0.0001, 0.0002),
                _tier("tier_medium", 0.0006, 0.0012),
                _tier("tier_large", 0.005, 0.015),
            ],
            "start_tier_by_intent": dict.fromkeys(INTENTS, "tier_small"),
            "max_escalations": 2,
            "default_start_tier": "tier_small",
        }
    )


def test_call_cost_known_value(policy):
    # tier_medium: 0.0006 per 1k input, 0.0012 per 1k output
    assert call_cost(policy.tier("tier_medium"), 1000, 500) == pytest.approx(0.0006 + 0.0006)
    assert call_cost(policy.tier("tier_small"), 0, 0) == 0.0


def test_negative_tokens_rejected(policy):
    with pytest.raises(ValueError, match="token counts"):
        call_cost(policy.tier("tier_small"), -1, 3)


def test_largest_baseline_caps_output_at_largest_max_tokens(policy):
    # tier_large: 0.005 / 0.015 per 1k, max_tokens 64
    assert largest_tier_cost(policy, 100, 20) == pytest.approx((100 * 0.005 + 20 * 0.015) / 1000)
    assert largest_tier_cost(policy, 100, 500) == pytest.approx((100 * 0.005 + 64 * 0.015) / 1000)


def test_cost_saved(policy):
    spent = call_cost(policy.tier("tier_small"), 100, 20)
    assert cost_saved(policy, spent, 100, 20) == pytest.approx(largest_tier_cost(policy, 100, 20) - spent)
    assert cost_saved(policy, spent, 100, 20) > 0
