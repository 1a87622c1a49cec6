"""Live outcome records, pure: one row per attempt of a routed request, in the outcome-log format.

The router writes these rows (router/records.py) so that `router_calibration.logs.load_log` / `read_any` and the
replay read them as they are (calibration/router_calibration/OUTCOME_LOG_FORMAT.md). A request's rows share its
`prompt_id`: the request id (the Triton request id the client set, else one the router generated; the route trace's
`request_id`). Records carry no label (`correct`/`score`): `router-calibrate join-labels` adds them later from
feedback.

Columns beyond the format's (the loader ignores them; they serve monitoring): `time` (ISO 8601 UTC, when the
router answered), `router_model`, `attempt` (0-based call order), `step` (start/escalate/fallback), `result` (the
trace's: accepted, escalated (answer discarded), failed, discarded), `accepted` (this attempt's answer was the
request's), `escalated` (a confidence-driven escalation moved on from this attempt), `threshold`, `policy_version`,
`final_tier`, `request_status` (accepted/failed), and with prompts enabled `prompt` (what the classifier read) and
`messages` (the conversation, when there was one).

Shadow evaluation (policy `shadow_rate`): the router sends that share of answered requests, after answering, to the
largest tier the request allowed (`shadow_tier`) and writes one more row for it (`shadow_record`: `shadow` true,
step/result "shadow", its own cost, which is not part of the request's), with `agreement`: how far the request's
answer agrees with the larger tier's (`answer_agreement`, token F1), a proxy label that needs no human.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from llm_router.core.decide import NO_OVERRIDES, Attempt, Overrides, Trace, allowed_range, attempt_cost
from llm_router.core.jsonsafe import json_safe
from llm_router.core.policy import Policy

ESCALATED_RESULT = "escalated (answer discarded)"  # AttemptTrace.result of an attempt escalated from


def iso_utc(when: datetime) -> str:
    """`when` as ISO 8601 UTC with milliseconds and a Z (2026-11-30T01:02:03.456Z)."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _row(
    trace: Trace,
    when: datetime,
    router_model: str,
    attempt_columns: dict[str, Any],
    prompt: str | None,
    messages: Sequence[dict[str, Any]] | None,
) -> dict[str, Any]:
    """One record: the request's columns around one call's (`attempt_columns`), as strict JSON values (-inf as
    "-inf", NaN as None); the prompt and messages only when given."""
    if not trace.request_id:
        raise ValueError("the trace has no request_id: outcome records need one (RouterFacts.request_id)")
    row: dict[str, Any] = {
        "prompt_id": trace.request_id,
        "time": iso_utc(when),
        "router_model": router_model,
        **attempt_columns,
        "intent": trace.intent,
        "difficulty": trace.difficulty,
        "policy_version": trace.policy_version,
        "final_tier": trace.final_tier,
        "request_status": trace.status,
    }
    if prompt is not None:
        row["prompt"] = prompt
    if messages is not None:
        row["messages"] = list(messages)
    return json_safe(row)


def attempt_records(
    trace: Trace,
    policy: Policy,
    when: datetime,
    router_model: str = "router",
    prompt: str | None = None,
    messages: Sequence[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One outcome-log row per attempt of a routed request; `trace.request_id` is the rows' prompt_id.

    A request that was not routed (no attempt) has no rows."""
    if not trace.request_id:
        raise ValueError("the trace has no request_id: outcome records need one (RouterFacts.request_id)")
    columns = (
        {
            "tier": attempt.tier,
            "tier_pos": policy.tier_index(attempt.tier) if attempt.tier in policy.tier_names else None,
            "attempt": index,
            "step": attempt.step,
            "result": attempt.result,
            "accepted": attempt.result == "accepted",
            "escalated": attempt.result == ESCALATED_RESULT,
            "confidence": attempt.confidence,
            "threshold": attempt.threshold,
            "tokens_in": attempt.input_tokens,
            "tokens_out": attempt.output_tokens,
            "cost_usd": attempt.cost,
            "latency_ms": attempt.latency_ms,
            "outcome": attempt.outcome,
        }
        for index, attempt in enumerate(trace.attempts)
    )
    return [_row(trace, when, router_model, attempt_columns, prompt, messages) for attempt_columns in columns]


def shadow_tier(policy: Policy, trace: Trace, overrides: Overrides = NO_OVERRIDES) -> str | None:
    """The tier a shadow call goes to: the largest tier the request allowed, when the request was answered and that
    tier was not tried (its answer is then already known, or it failed); else None."""
    if trace.status != "accepted" or trace.final_tier is None:
        return None
    tier = policy.tiers[allowed_range(policy, overrides)[1]].name
    return None if any(a.tier == tier for a in trace.attempts) else tier


_WORD = re.compile(r"\w+")


def answer_agreement(answer: str, reference: str) -> float:
    """Token F1 (SQuAD's answer overlap) of two answers: lower-cased words, 1.0 when both are empty."""
    a, b = _WORD.findall(answer.lower()), _WORD.findall(reference.lower())
    if not a or not b:
        return float(a == b)
    common = sum((Counter(a) & Counter(b)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(b)
    return 2 * precision * recall / (precision + recall)


def shadow_record(
    trace: Trace,
    policy: Policy,
    attempt: Attempt,
    agreement: float | None,
    when: datetime,
    router_model: str = "router",
    prompt: str | None = None,
    messages: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The row of a shadow call (`attempt`) of the request of `trace`; `agreement` None when the call failed."""
    columns = {
        "tier": attempt.tier,
        "tier_pos": policy.tier_index(attempt.tier),
        "attempt": len(trace.attempts),
        "step": "shadow",
        "result": "shadow",
        "accepted": False,
        "escalated": False,
        "shadow": True,
        "agreement": agreement,
        "confidence": attempt.confidence,
        "threshold": None,
        "tokens_in": attempt.input_tokens,
        "tokens_out": attempt.output_tokens,
        "cost_usd": attempt_cost(policy, attempt),
        "latency_ms": attempt.latency_ms,
        "outcome": attempt.outcome,
    }
    return _row(trace, when, router_model, columns, prompt, messages)
