"""The routing decision step, pure: given what has happened so far, what does the router do next?

``decide(policy, classification, attempts, overrides)`` is called by the Triton router after the classifier
and after every tier call, and by the offline replay simulator over outcome logs: one function for both.

Semantics:

* Allowed tiers are ``[min_tier, max_tier]`` (default: all). ``force_tier`` allows exactly that one tier.
* Start tier: ``start_tier_by_intent[intent]`` (``default_start_tier`` when the classifier is unavailable or
  the intent is not in the policy), raised to ``difficulty_rule.min_tier`` when difficulty is above
  ``difficulty_rule.above``, then clamped into the allowed range.
* After an OK attempt: accept it when its confidence >= threshold (the request's ``confidence_threshold`` if
  given, else the tier's ``escalation_threshold``; a tier without a threshold always accepts). A missing or
  NaN confidence counts as ``-inf``. Otherwise escalate to the next allowed, untried, higher tier, unless
  ``force_tier`` is set, no such tier exists, or ``max_escalations`` escalations were already made; then
  accept the OK answer from the highest tier tried (the most capable answer we have) and say why.
* After an ERROR/TIMEOUT: fall back to the next allowed untried higher tier. If there is none, accept the
  best OK answer already obtained (highest tier), else fall back DOWN to the highest allowed untried lower
  tier (e.g. a planning request that starts at the largest tier). If nothing is left: FAIL with every
  tier's reason. ``force_tier`` never falls back.
* A self-verifying tier (a confidence function with ``needs_verification``, e.g. ``self_verify``) is asked a second
  time whether its answer is correct; that call is part of the attempt (``Attempt.verification``): its tokens,
  latency and cost are in the attempt's, and its verdict is in the trace.
* A fallback does NOT count as an escalation: ``max_escalations`` bounds the quality-driven spend on a
  request that already has an answer, while a fallback is the only way to get an answer at all; fallbacks
  are bounded anyway because each tier is tried at most once. An escalation is any move to another tier
  made after an OK attempt.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from llm_router.core.cost import call_cost, largest_tier_cost
from llm_router.core.jsonsafe import json_safe
from llm_router.core.policy import Policy
from llm_router.core.self_verify import Verdict


class Outcome(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"


class DecisionKind(StrEnum):
    CALL = "call"
    ACCEPT = "accept"
    FAIL = "fail"


class Step(StrEnum):
    """Why a tier is called: the first call, an escalation after a low-confidence answer, a fallback after a failure."""

    START = "start"
    ESCALATE = "escalate"
    FALLBACK = "fallback"


class RequestOverrideError(ValueError):
    """A per-request override is invalid (unknown tier, min_tier above max_tier, non-finite threshold...)."""


class ClassificationLike(Protocol):
    intent: str
    intent_probs: Mapping[str, float]
    difficulty: float | None


@dataclass(frozen=True)
class Classification:
    """What the classifier said: intent, its probabilities, difficulty (0 easy, 1 hard: P(small tier is wrong))."""

    intent: str
    intent_probs: Mapping[str, float] = field(default_factory=dict)
    difficulty: float | None = None


@dataclass(frozen=True)
class Verification:
    """A self-verifying tier's second call (is its own answer correct?): the verdict, that call's token counts and
    latency, and why it gave no verdict (`error`: the call failed or timed out, or the answer was blank and not asked
    about; the verdict is then NO_VERDICT)."""

    verdict: Verdict
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The trace's record: {"verdict": "yes" | "no" | "other" | "none", "logprob", tokens, latency, error?}."""
        record: dict[str, Any] = {
            "verdict": "none" if self.verdict.logprob == -math.inf else self.verdict.label,
            "logprob": self.verdict.logprob,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "latency_ms": self.latency_ms,
        }
        if self.error is not None:
            record["error"] = self.error
        return record


@dataclass(frozen=True)
class Attempt:
    """One finished call to a tier. `cost` None means: compute it from the policy's prices and the tokens.

    With `verification` (a self-verifying tier), the tokens and latency are those of both calls, the answer's and
    the verification's; `answer_output_tokens` / `answer_input_tokens` are the answer's own."""

    tier: str
    outcome: Outcome
    confidence: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float = 0.0
    cost: float | None = None
    error: str | None = None
    verification: Verification | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", Outcome(self.outcome))

    @property
    def answer_input_tokens(self) -> int:
        """Input tokens of the answer's call alone (without the verification call's)."""
        return self.input_tokens - (self.verification.input_tokens if self.verification else 0)

    @property
    def answer_output_tokens(self) -> int:
        """Output tokens of the answer alone (without the verification call's)."""
        return self.output_tokens - (self.verification.output_tokens if self.verification else 0)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def score(self) -> float:
        """Confidence as a comparable number: missing/NaN -> -inf."""
        c = self.confidence
        return -math.inf if c is None or math.isnan(c) else float(c)

    def failure_reason(self) -> str:
        return f"{self.tier}: {self.outcome.value}" + (f" ({self.error})" if self.error else "")


@dataclass(frozen=True)
class Overrides:
    """Per-request overrides: the router's request parameters of these names. `validate_overrides` returns them
    checked against a policy, as routing uses them (the client's RouteOptions sends them)."""

    force_tier: str | None = None
    min_tier: str | None = None
    max_tier: str | None = None
    confidence_threshold: float | None = None


@dataclass(frozen=True)
class Decision:
    """CALL `tier` (step start/escalate/fallback), ACCEPT attempt `attempt_index` (from `tier`), or FAIL."""

    kind: DecisionKind
    reason: str
    tier: str | None = None
    step: Step | None = None
    attempt_index: int | None = None
    failures: tuple[str, ...] = ()


NO_OVERRIDES = Overrides()


def _tier_override(policy: Policy, field_name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise RequestOverrideError(f"{field_name}: must be a tier name, got {value!r}")
    if value not in policy.tier_names:
        raise RequestOverrideError(f"{field_name}: unknown tier {value!r} (tiers: {', '.join(policy.tier_names)})")
    return value


def validate_overrides(
    policy: Policy,
    force_tier: Any = None,
    min_tier: Any = None,
    max_tier: Any = None,
    confidence_threshold: Any = None,
) -> Overrides:
    """Check per-request overrides against `policy`; RequestOverrideError with a clear message otherwise.

    `confidence_threshold` may be a number or a numeric string (Triton request parameters are often strings).
    """
    force = _tier_override(policy, "force_tier", force_tier)
    lo = _tier_override(policy, "min_tier", min_tier)
    hi = _tier_override(policy, "max_tier", max_tier)
    if lo is not None and hi is not None and policy.tier_index(lo) > policy.tier_index(hi):
        raise RequestOverrideError(f"min_tier {lo!r} is above max_tier {hi!r}")
    if force is not None:
        fi = policy.tier_index(force)
        if (lo is not None and fi < policy.tier_index(lo)) or (hi is not None and fi > policy.tier_index(hi)):
            raise RequestOverrideError(f"force_tier {force!r} is outside [min_tier, max_tier]")
    threshold: float | None = None
    if confidence_threshold is not None:
        if isinstance(confidence_threshold, bool):
            raise RequestOverrideError(f"confidence_threshold: must be a finite number, got {confidence_threshold!r}")
        try:
            threshold = float(confidence_threshold)
        except (TypeError, ValueError):
            raise RequestOverrideError(
                f"confidence_threshold: must be a finite number, got {confidence_threshold!r}"
            ) from None
        if not math.isfinite(threshold):
            raise RequestOverrideError(f"confidence_threshold: must be a finite number, got {confidence_threshold!r}")
        if threshold > 0:
            raise RequestOverrideError(
                f"confidence_threshold: must be <= 0 (confidences are log-probabilities), got {confidence_threshold!r}"
            )
    return Overrides(force_tier=force, min_tier=lo, max_tier=hi, confidence_threshold=threshold)


def allowed_range(policy: Policy, overrides: Overrides = NO_OVERRIDES) -> tuple[int, int]:
    """Inclusive tier-index range a request may use."""
    if overrides.force_tier is not None:
        i = policy.tier_index(overrides.force_tier)
        return i, i
    lo = policy.tier_index(overrides.min_tier) if overrides.min_tier else 0
    hi = policy.tier_index(overrides.max_tier) if overrides.max_tier else len(policy.tiers) - 1
    return lo, hi


def start_tier(
    policy: Policy, classification: ClassificationLike | None, overrides: Overrides = NO_OVERRIDES
) -> tuple[str, str]:
    """(tier to call first, why)."""
    if overrides.force_tier is not None:
        return overrides.force_tier, f"force_tier={overrides.force_tier}"
    if classification is None:
        name = policy.default_start_tier
        why = f"classifier unavailable: default_start_tier {name}"
    elif classification.intent in policy.start_tier_by_intent:
        name = policy.start_tier_by_intent[classification.intent]
        why = f"intent {classification.intent} starts at {name}"
    else:
        name = policy.default_start_tier
        why = f"intent {classification.intent!r} not in policy: default_start_tier {name}"
    idx = policy.tier_index(name)
    rule = policy.difficulty_rule
    difficulty = None if classification is None else classification.difficulty
    if rule is not None and difficulty is not None and not math.isnan(difficulty) and difficulty > rule.above:
        rule_idx = policy.tier_index(rule.min_tier)
        if rule_idx > idx:
            idx = rule_idx
            why += f"; difficulty {difficulty:.3f} > {rule.above:g} raises it to {rule.min_tier}"
    lo, hi = allowed_range(policy, overrides)
    if idx < lo:
        idx = lo
        why += f"; raised to min_tier {policy.tiers[lo].name}"
    elif idx > hi:
        idx = hi
        why += f"; lowered to max_tier {policy.tiers[hi].name}"
    return policy.tiers[idx].name, why


def threshold_for(policy: Policy, tier: str, overrides: Overrides = NO_OVERRIDES) -> float | None:
    """Confidence an answer from `tier` needs to be accepted (None: always accepted)."""
    if overrides.confidence_threshold is not None:
        return overrides.confidence_threshold
    return policy.tier(tier).escalation_threshold


def count_escalations(attempts: Sequence[Attempt]) -> int:
    """Moves to another tier made after an OK attempt (fallbacks after errors are not escalations)."""
    return sum(1 for a in attempts[:-1] if a.ok)


def _check_attempts(policy: Policy, attempts: Sequence[Attempt]) -> list[int]:
    seen: set[str] = set()
    indices = []
    for a in attempts:
        if a.tier not in policy.tier_names:
            raise ValueError(f"attempt on unknown tier {a.tier!r}")
        if a.tier in seen:
            raise ValueError(f"tier {a.tier!r} attempted twice")
        seen.add(a.tier)
        indices.append(policy.tier_index(a.tier))
    return indices


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def decide(
    policy: Policy,
    classification: ClassificationLike | None,
    attempts: Sequence[Attempt],
    overrides: Overrides | None = None,
) -> Decision:
    """The next step for a request given its classification and the attempts so far (see module docstring)."""
    ov = overrides or NO_OVERRIDES
    if not attempts:
        name, why = start_tier(policy, classification, ov)
        return Decision(DecisionKind.CALL, why, tier=name, step=Step.START)

    indices = _check_attempts(policy, attempts)
    lo, hi = allowed_range(policy, ov)
    tried = set(indices)
    last, last_idx = attempts[-1], indices[-1]
    ok_attempts = [(indices[i], i) for i, a in enumerate(attempts) if a.ok]
    best_ok = max(ok_attempts)[1] if ok_attempts else None
    higher = next((i for i in range(last_idx + 1, hi + 1) if i not in tried), None)

    def accept(i: int, why: str) -> Decision:
        return Decision(DecisionKind.ACCEPT, why, tier=attempts[i].tier, attempt_index=i)

    if last.ok:
        thr = threshold_for(policy, last.tier, ov)
        conf = last.score
        if thr is None:
            return accept(len(attempts) - 1, f"{last.tier} has no escalation threshold: accept")
        if conf >= thr:
            return accept(len(attempts) - 1, f"{last.tier} confidence {_fmt(conf)} >= threshold {_fmt(thr)}")
        low = f"{last.tier} confidence {_fmt(conf)} < threshold {_fmt(thr)}"
        assert best_ok is not None
        best = attempts[best_ok].tier
        if ov.force_tier is not None:
            return accept(best_ok, f"{low}, but force_tier={ov.force_tier}: no escalation")
        if higher is None:
            return accept(best_ok, f"{low}, but no higher allowed tier: accept {best} (highest tier answered)")
        used = count_escalations(attempts)
        if used >= policy.max_escalations:
            return accept(
                best_ok,
                f"{low}, but max_escalations={policy.max_escalations} used: accept {best} (highest tier)",
            )
        return Decision(DecisionKind.CALL, f"{low}: escalate", tier=policy.tiers[higher].name, step=Step.ESCALATE)

    failed = last.failure_reason()
    if ov.force_tier is None:
        if higher is not None:
            nxt = policy.tiers[higher].name
            return Decision(DecisionKind.CALL, f"{failed}: fall back to {nxt}", tier=nxt, step=Step.FALLBACK)
        if best_ok is not None:
            best = attempts[best_ok]
            return accept(
                best_ok,
                f"{failed}, no higher allowed tier: accept {best.tier}'s earlier answer "
                f"(confidence {_fmt(best.score)}) as the best available",
            )
        lower = next((i for i in range(last_idx - 1, lo - 1, -1) if i not in tried), None)
        if lower is not None:
            nxt = policy.tiers[lower].name
            return Decision(
                DecisionKind.CALL,
                f"{failed}, no higher allowed tier: fall back down to {nxt}",
                tier=nxt,
                step=Step.FALLBACK,
            )
    failures = tuple(a.failure_reason() for a in attempts)
    return Decision(DecisionKind.FAIL, "every allowed tier failed: " + "; ".join(failures), failures=failures)


def check_max_tokens(policy: Policy, requested: int | None) -> None:
    """RequestOverrideError when a request's max_tokens is < 1 or above every tier's cap (the policy's largest
    `max_tokens`): no tier could honour it. Between a tier's cap and the largest cap, that tier's answer is cut at its
    cap (the trace's finish_reason says "length")."""
    if requested is None:
        return
    if requested < 1:
        raise RequestOverrideError(f"max_tokens must be >= 1, got {requested}")
    limit = max(t.max_tokens for t in policy.tiers)
    if requested > limit:
        raise RequestOverrideError(
            f"max_tokens {requested} is above the limit of every tier: at most {limit} (the largest max_tokens of the "
            "routing policy); lower max_tokens"
        )


def tier_max_tokens(policy: Policy, tier: str, requested: int | None) -> int:
    """Output-token cap for a call: the request's max_tokens (if given, >= 1) capped by the tier's max_tokens."""
    cap = policy.tier(tier).max_tokens
    if requested is None:
        return cap
    if requested < 1:
        raise RequestOverrideError(f"max_tokens: must be >= 1, got {requested}")
    return min(requested, cap)


def attempt_cost(policy: Policy, attempt: Attempt) -> float:
    """The attempt's own cost if it has one, else computed from the tier's prices and its tokens."""
    if attempt.cost is not None:
        return float(attempt.cost)
    return call_cost(policy.tier(attempt.tier), attempt.input_tokens, attempt.output_tokens)


# -- trace ---------------------------------------------------------------------------------------------------


@dataclass
class AttemptTrace:
    tier: str
    step: str
    called_because: str
    outcome: str
    confidence: float | None
    threshold: float | None
    input_tokens: int
    output_tokens: int
    latency_ms: float
    cost: float
    result: str
    error: str | None = None
    verification: dict[str, Any] | None = None  # a self-verifying tier's second call (Verification.to_dict)


@dataclass
class Trace:
    """Everything the `route` output says about one request; `to_json()` is what the router returns.

    The last six fields are the router's own (None offline, and then left out of `to_dict()`); `finish_reason`
    is the answer's: "length" when a token cap (the request's max_tokens or the tier's policy cap) cut it, else
    "stop"; `request_id` is the request's id (the client's Triton request id, else generated by the router), the
    `prompt_id` of its live outcome records (core/records.py)."""

    classifier: str
    intent: str | None
    intent_probs: dict[str, float]
    difficulty: float | None
    overrides: dict[str, Any]
    attempts: list[AttemptTrace]
    status: str
    final_tier: str | None
    final_reason: str
    escalated: bool
    escalations: int
    fallbacks: int
    cost: float
    largest_tier_cost: float | None
    cost_saved: float | None
    tokens_wasted: int
    classifier_error: str | None = None
    router_overhead_ms: float | None = None
    policy_version: int | None = None
    answers: list[dict[str, str | None]] | None = None
    finish_reason: str | None = None
    request_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in _ROUTER_FIELDS:
            if data[key] is None:
                del data[key]
        for attempt in data["attempts"]:
            if attempt["verification"] is None:  # only a self-verifying tier's attempts have one
                del attempt["verification"]
        return json_safe(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


_ROUTER_FIELDS = (
    "classifier_error", "router_overhead_ms", "policy_version", "answers", "finish_reason", "request_id",
)  # fmt: skip


STREAMED_REASON = "streamed without hold-back; answer already sent"


@dataclass(frozen=True)
class RouterFacts:
    """What the router adds to a trace: the last attempt's text already reached the client (`streamed`: it answers
    whatever it scored), why the classifier failed, the request's wall time, the answers' texts (return_trace), the
    token cap of each call (the answer's finish_reason is "length" when it used all of its call's cap), the request
    id (Trace.request_id)."""

    streamed: bool = False
    classifier_error: str | None = None
    elapsed_ms: float | None = None
    answers: Sequence[str | None] | None = None
    max_tokens: Sequence[int] | None = None
    request_id: str | None = None


def make_trace(
    policy: Policy,
    classification: ClassificationLike | None,
    attempts: Sequence[Attempt],
    overrides: Overrides | None = None,
    router: RouterFacts | None = None,
) -> tuple[Decision, Trace]:
    """Replay `decide` over the attempts to explain each one; returns (the current decision, the trace).

    The current decision is ACCEPT/FAIL for a finished request (or CALL if called mid-request). With `router` facts
    the trace is the router's final one: a streamed answer is accepted, the overhead and policy version are filled in.
    """
    ov = overrides or NO_OVERRIDES
    decisions = [decide(policy, classification, attempts[:i], ov) for i in range(len(attempts) + 1)]
    final = decisions[-1]
    if router is not None and router.streamed and final.kind is DecisionKind.CALL:
        final = Decision(DecisionKind.ACCEPT, STREAMED_REASON, tier=attempts[-1].tier, attempt_index=len(attempts) - 1)
    records: list[AttemptTrace] = []
    for i, a in enumerate(attempts):
        why = decisions[i]
        chosen = why.kind is DecisionKind.CALL and why.tier == a.tier
        nxt = decisions[i + 1]
        if final.kind is DecisionKind.ACCEPT and final.attempt_index == i:
            result = "accepted"
        elif not a.ok:
            result = "failed"
        elif nxt.kind is DecisionKind.CALL:
            result = "escalated (answer discarded)"
        else:
            result = "discarded"
        thr = threshold_for(policy, a.tier, ov) if a.ok else None
        records.append(
            AttemptTrace(
                tier=a.tier,
                step=(why.step or "?") if chosen else "not chosen by decide()",
                called_because=why.reason if chosen else "not chosen by decide()",
                outcome=a.outcome.value,
                confidence=a.confidence,
                threshold=thr,
                input_tokens=a.input_tokens,
                output_tokens=a.output_tokens,
                latency_ms=a.latency_ms,
                cost=attempt_cost(policy, a),
                result=result,
                error=a.error,
                verification=None if a.verification is None else a.verification.to_dict(),
            )
        )
    total = sum(r.cost for r in records)
    accepted = attempts[final.attempt_index] if final.kind is DecisionKind.ACCEPT else None
    base = None
    if accepted is not None:
        # always using the largest tier: one call for the same answer, nothing to verify (no tier above it)
        base = largest_tier_cost(policy, accepted.answer_input_tokens, accepted.answer_output_tokens)
    made = decisions[1 : len(attempts)]  # the decisions that led to attempts 1..n-1
    escalations = sum(1 for d in made if d.kind is DecisionKind.CALL and d.step is Step.ESCALATE)
    fallbacks = sum(1 for d in made if d.kind is DecisionKind.CALL and d.step is Step.FALLBACK)
    wasted = sum(a.output_tokens for i, a in enumerate(attempts) if final.attempt_index != i)
    facts = router or RouterFacts()
    overhead = None
    if router is not None and facts.elapsed_ms is not None:
        overhead = round(max(0.0, facts.elapsed_ms - sum(a.latency_ms for a in attempts)), 3)
    trace = Trace(
        classifier="ok" if classification is not None else "unavailable",
        intent=None if classification is None else classification.intent,
        intent_probs={} if classification is None else {k: float(v) for k, v in classification.intent_probs.items()},
        difficulty=None if classification is None else classification.difficulty,
        overrides={k: v for k, v in asdict(ov).items() if v is not None},
        attempts=records,
        status={"accept": "accepted", "fail": "failed", "call": "in_progress"}[final.kind.value],
        final_tier=final.tier if final.kind is DecisionKind.ACCEPT else None,
        final_reason=final.reason,
        escalated=escalations > 0,
        escalations=escalations,
        fallbacks=fallbacks,
        cost=total,
        largest_tier_cost=base,
        cost_saved=None if base is None else base - total,
        tokens_wasted=wasted if final.kind is not DecisionKind.CALL else 0,
        classifier_error=facts.classifier_error,
        router_overhead_ms=overhead,
        policy_version=policy.version if router is not None else None,
        answers=None
        if facts.answers is None
        else [{"tier": a.tier, "text": text} for a, text in zip(attempts, facts.answers, strict=True)],
        finish_reason=_finish_reason(accepted, final.attempt_index, facts.max_tokens),
        request_id=facts.request_id,
    )
    return final, trace


def _finish_reason(accepted: Attempt | None, index: int | None, caps: Sequence[int] | None) -> str | None:
    if accepted is None or index is None or caps is None:
        return None
    return "length" if accepted.answer_output_tokens >= caps[index] else "stop"
