"""Triton-free routing core: policy file, confidence and cost functions, and the decision step.

Used by the router model (Python backend) and by the offline replay/calibration tool; never copied.
"""

from llm_router.core.confidence import (
    CONFIDENCE_FUNCTIONS,
    compute_confidence,
    first_k_mean,
    mean_logprob,
    min_logprob,
    register_confidence,
)
from llm_router.core.cost import call_cost, cost_saved, largest_tier_cost
from llm_router.core.decide import (
    Attempt,
    Classification,
    Decision,
    DecisionKind,
    Outcome,
    Overrides,
    RequestOverrideError,
    Trace,
    allowed_range,
    attempt_cost,
    check_max_tokens,
    decide,
    make_trace,
    start_tier,
    threshold_for,
    tier_max_tokens,
    validate_overrides,
)
from llm_router.core.policy import (
    INTENTS,
    Policy,
    PolicyError,
    TierSpec,
    load_policy,
    parse_policy,
    write_policy,
)

__all__ = [
    "CONFIDENCE_FUNCTIONS",
    "INTENTS",
    "Attempt",
    "Classification",
    "Decision",
    "DecisionKind",
    "Outcome",
    "Overrides",
    "Policy",
    "PolicyError",
    "RequestOverrideError",
    "TierSpec",
    "Trace",
    "allowed_range",
    "attempt_cost",
    "call_cost",
    "check_max_tokens",
    "compute_confidence",
    "cost_saved",
    "decide",
    "first_k_mean",
    "largest_tier_cost",
    "load_policy",
    "make_trace",
    "mean_logprob",
    "min_logprob",
    "parse_policy",
    "register_confidence",
    "start_tier",
    "threshold_for",
    "tier_max_tokens",
    "validate_overrides",
    "write_policy",
]
