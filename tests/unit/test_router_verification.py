"""The self-verifying tier's second call (llm_router.router.verification) with a scripted tier caller, and the
streaming hold-back of a whole answer (llm_router.router.holdback, size None)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from llm_router.core import Attempt, parse_policy
from llm_router.core.confidence import compute_confidence
from llm_router.core.decide import Verification
from llm_router.core.policy import INTENTS
from llm_router.core.self_verify import NO_VERDICT, VERIFY_MAX_TOKENS, Verdict, build_verification_prompt
from llm_router.protocol import PieceCollector, TierAnswer
from llm_router.router.conversation import Prompt, parse_conversation
from llm_router.router.errors import TierCallError
from llm_router.router.holdback import HoldBack
from llm_router.router.verification import BLANK_ANSWER, verification_attempt, verification_prompt, verify

POLICY = parse_policy(
    {
        "version": 1,
        "tiers": [
            {
                "name": "tier_small",
                "cost_per_1k_input": 0.0001,
                "cost_per_1k_output": 0.0002,
                "max_tokens": 64,
                "deadline_s": 5.0,
                "confidence": {"function": "self_verify"},
                "escalation_threshold": -0.7,
            },
            {"name": "tier_large", "cost_per_1k_input": 0.005, "cost_per_1k_output": 0.015, "max_tokens": 2,
             "deadline_s": 5.0, "confidence": {"function": "self_verify"}},
        ],
        "start_tier_by_intent": dict.fromkeys(INTENTS, "tier_small"),
        "max_escalations": 1,
        "default_start_tier": "tier_small",
    }
)  # fmt: skip
SMALL, LARGE = POLICY.tier("tier_small"), POLICY.tier("tier_large")
ANSWER = TierAnswer("Paris.", [-0.1, -0.2], input_tokens=12, output_tokens=2, latency_ms=7.0)


@dataclass
class ScriptedCaller:
    """A tier caller that replays `pieces` (streamed when asked to) or raises `error`, recording each call."""

    pieces: list[tuple[str, list[float]]] = field(default_factory=list)
    error: TierCallError | None = None
    input_tokens: int = 30
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, prompt: Prompt, max_tokens: int, on_delta: Any, deadline_s: float | None) -> TierAnswer:
        self.calls.append({"prompt": prompt, "max_tokens": max_tokens, "deadline_s": deadline_s})
        if self.error is not None:
            raise self.error
        collector = PieceCollector(on_delta is not None, on_piece=on_delta)
        if on_delta is not None:
            for text, logprobs in self.pieces:
                collector.add(text, logprobs)
        else:
            collector.add("".join(t for t, _ in self.pieces), [lp for _, lps in self.pieces for lp in lps])
        collector.counts(self.input_tokens, 0)
        answer = collector.answer()
        answer.latency_ms = 4.0
        return answer


def run(caller: Any, answer: TierAnswer = ANSWER, prompt: Prompt | None = None, started: float | None = None,
        spec: Any = SMALL) -> Verification:  # fmt: skip
    started = time.monotonic() if started is None else started
    return asyncio.run(verify(caller, spec, prompt or Prompt("What is the capital of France?"), answer, started))


def test_the_verdict_comes_from_the_first_non_blank_streamed_piece() -> None:
    caller = ScriptedCaller([(" ", [-0.01]), ("Yes", [-0.05]), (".", [-0.9])])
    check = run(caller)
    assert check == Verification(Verdict("yes", -0.05), input_tokens=30, output_tokens=3, latency_ms=4.0)
    assert compute_confidence("self_verify", check.verdict) == -0.05
    (call,) = caller.calls
    assert call["prompt"] == Prompt(build_verification_prompt("What is the capital of France?", "Paris."))
    assert call["max_tokens"] == VERIFY_MAX_TOKENS
    assert 0 < call["deadline_s"] <= SMALL.deadline_s  # what is left of the tier's deadline


def test_a_caller_that_cannot_stream_gives_the_verdict_of_its_first_token() -> None:
    class Unstreamed(ScriptedCaller):
        async def __call__(self, prompt: Prompt, max_tokens: int, on_delta: Any, deadline_s: float | None) -> Any:
            # a non-decoupled remote model: one whole answer, handed to on_delta as one piece
            answer = await super().__call__(prompt, max_tokens, None, deadline_s)
            if on_delta is not None:
                on_delta(answer.text, answer.token_logprobs)
            return answer

    check = run(Unstreamed([("No", [-0.3]), (".", [-2.0])]))
    assert check.verdict == Verdict("no", -0.3) and check.error is None


def test_the_question_of_a_conversation_is_its_last_user_message_and_the_cap_is_the_tiers() -> None:
    conversation = parse_conversation(
        '[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},'
        ' {"role": "user", "content": "Capital of Peru?"}]'
    )
    caller = ScriptedCaller([("Yes", [-0.2])])
    run(caller, prompt=Prompt("", conversation=conversation), spec=LARGE)
    (call,) = caller.calls
    assert call["prompt"] == verification_prompt(Prompt("", conversation=conversation), "Paris.")
    assert call["prompt"].text.startswith("Question: Capital of Peru?\nProposed answer: Paris.")
    assert call["prompt"].conversation is None and not call["prompt"].raw  # always through the chat template
    assert call["max_tokens"] == LARGE.max_tokens == 2  # VERIFY_MAX_TOKENS within the tier's own cap


def test_a_blank_answer_is_not_asked_about() -> None:
    caller = ScriptedCaller([("Yes", [-0.1])])
    check = run(caller, answer=TierAnswer("  \n", [], 12, 0))
    assert check == Verification(NO_VERDICT, error=BLANK_ANSWER) and caller.calls == []
    assert compute_confidence("self_verify", check.verdict) == -math.inf


@pytest.mark.parametrize("status", ["error", "timeout"])
def test_a_failed_verification_is_no_verdict_and_pays_for_what_it_generated(status: str) -> None:
    partial = TierAnswer("Ye", [-0.4], input_tokens=31, output_tokens=1)
    caller = ScriptedCaller(error=TierCallError("tier_small overran its 4.99s deadline", status, partial=partial))
    check = run(caller)
    assert check.verdict == NO_VERDICT and (check.input_tokens, check.output_tokens) == (31, 1)
    assert check.error == "verification failed: tier_small overran its 4.99s deadline" and check.latency_ms >= 0
    check = run(ScriptedCaller(error=TierCallError("tier_small failed: boom")))
    assert (check.verdict, check.input_tokens, check.output_tokens) == (NO_VERDICT, 0, 0)


def test_no_time_left_of_the_deadline_makes_no_call() -> None:
    caller = ScriptedCaller([("Yes", [-0.1])])
    check = run(caller, started=time.monotonic() - SMALL.deadline_s - 0.1)
    assert check.verdict == NO_VERDICT and "no time left" in (check.error or "") and caller.calls == []


def test_unreadable_log_probs_are_no_verdict_not_a_failed_request() -> None:
    check = run(ScriptedCaller([("Yes", [math.nan])]))
    assert check.verdict == NO_VERDICT and "NaN" in (check.error or "") and check.output_tokens == 1


def test_the_attempt_carries_both_calls() -> None:
    check = Verification(Verdict("yes", -0.05), input_tokens=30, output_tokens=3, latency_ms=4.0)
    attempt = verification_attempt("tier_small", ANSWER, -0.05, check)
    assert attempt == Attempt(
        "tier_small", "ok", confidence=-0.05, input_tokens=42, output_tokens=5, latency_ms=11.0, verification=check
    )
    assert (attempt.answer_input_tokens, attempt.answer_output_tokens) == (12, 2)


# -- router_stream: a self-verifying tier's whole answer is held back ------------------------------------------------
def _whole_holdback(threshold: float) -> tuple[HoldBack, list[str]]:
    sent: list[str] = []
    hold = HoldBack(
        "tier_small",
        None,
        score=lambda logprobs: pytest.fail("a held-back whole answer is scored by its verdict, not its log-probs"),
        escalates=lambda attempt: attempt.score < threshold,
        emit=sent.append,
    )
    return hold, sent


def test_a_whole_answer_is_held_until_its_verdict_accepts_it() -> None:
    hold, sent = _whole_holdback(threshold=-0.7)
    for piece in ("Paris", " is", " the", " capital", " of", " France", "."):
        assert not hold.on_delta(piece, [-0.1])  # never abandoned early, never flushed early
    assert sent == [] and not hold.committed and not hold.sent
    assert not hold.settle(-0.05)  # the verdict accepts: everything held goes out at once
    assert sent == ["Paris is the capital of France."] and hold.committed and hold.confidence == -0.05


def test_a_whole_answer_whose_verdict_escalates_never_reaches_the_client() -> None:
    hold, sent = _whole_holdback(threshold=-0.7)
    hold.on_delta("Lima", [-0.1])
    assert hold.settle(-math.inf)
    assert sent == [] and not hold.sent and hold.dropped is not None and hold.dropped.score == -math.inf
