"""Request cost in USD from a tier's prices (per 1k tokens) and the real token counts."""

from __future__ import annotations

from llm_router.core.policy import Policy, TierSpec


def _check_tokens(input_tokens: int, output_tokens: int) -> None:
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError(f"token counts must be >= 0, got input={input_tokens} output={output_tokens}")


def call_cost(tier: TierSpec, input_tokens: int, output_tokens: int) -> float:
    """USD cost of one call to `tier` that read `input_tokens` and generated `output_tokens`."""
    _check_tokens(input_tokens, output_tokens)
    return (input_tokens * tier.cost_per_1k_input + output_tokens * tier.cost_per_1k_output) / 1000.0


def largest_tier_cost(policy: Policy, input_tokens: int, output_tokens: int) -> float:
    """Cost of the always-largest baseline: the same prompt answered by the largest tier alone.

    The largest tier's own output length is unknown when it was not called, so the answer's real output token
    count is used, capped at the largest tier's max_tokens (the usual estimate in cascade papers).
    """
    largest = policy.largest_tier
    return call_cost(largest, input_tokens, min(output_tokens, largest.max_tokens))


def cost_saved(policy: Policy, request_cost: float, input_tokens: int, output_tokens: int) -> float:
    """Baseline cost minus what the request really cost (negative when a cascade cost more than large alone)."""
    return largest_tier_cost(policy, input_tokens, output_tokens) - request_cost
