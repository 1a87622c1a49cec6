"""The second call of a self-verifying tier, Triton-free: ask the tier whether its own answer is correct.

A tier whose confidence function needs verification (`llm_router.core.confidence.needs_verification`, e.g.
`self_verify`) is called again after it answered, through the same caller (a local BLS call or its remote endpoint),
with `build_verification_prompt(question, answer)`: greedy like every tier call, `VERIFY_MAX_TOKENS` tokens, with
log-probs, within what is left of the tier's deadline. The question is the prompt, or a conversation's last user
message; the verification prompt always goes through the tier's chat template (it is the router's own question, not
the client's text). A blank answer is not asked about; a call that fails or runs out of time gives no verdict
(NO_VERDICT, confidence -inf: the answer escalates when a larger tier is allowed, and stays an answer otherwise).
What the call used (tokens, latency) is part of the tier's attempt (`verification_attempt`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from llm_router.core.decide import Attempt, Outcome, Verification
from llm_router.core.policy import TierSpec
from llm_router.core.self_verify import (
    NO_VERDICT,
    VERIFY_MAX_TOKENS,
    build_verification_prompt,
    verdict_from_pieces,
    verdict_from_text,
)
from llm_router.protocol import OnPiece, TierAnswer
from llm_router.router.conversation import Prompt
from llm_router.router.errors import TierCallError

# (prompt, max_tokens, on_delta or None, deadline_s or None for the tier's own) -> the answer; raises TierCallError
TierCaller = Callable[[Prompt, int, OnPiece | None, float | None], Awaitable[TierAnswer]]

BLANK_ANSWER = "blank answer: not verified"


def verification_prompt(prompt: Prompt, answer: str) -> Prompt:
    """What the tier is asked: the question (the prompt, or a conversation's last user message) and its answer."""
    return Prompt(build_verification_prompt(prompt.classify_text, answer))


def verification_attempt(tier: str, answer: TierAnswer, confidence: float, verification: Verification) -> Attempt:
    """The attempt of a self-verifying tier: tokens and latency of both calls (the answer's and the verification's),
    so its cost is the policy's prices times every token it used."""
    return Attempt(
        tier,
        Outcome.OK,
        confidence=confidence,
        input_tokens=answer.input_tokens + verification.input_tokens,
        output_tokens=answer.output_tokens + verification.output_tokens,
        latency_ms=answer.latency_ms + verification.latency_ms,
        verification=verification,
    )


def _elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


async def verify(call: TierCaller, spec: TierSpec, prompt: Prompt, answer: TierAnswer, started: float) -> Verification:
    """Ask tier `spec` (through `call`) whether its `answer` to `prompt` is correct, within what is left of its
    deadline since `started` (time.monotonic() when the answer's call began)."""
    if not answer.text.strip():
        return Verification(NO_VERDICT, error=BLANK_ANSWER)
    left = spec.deadline_s - (time.monotonic() - started)
    if left <= 0:
        return Verification(NO_VERDICT, error=f"no time left of the {spec.deadline_s:.2f}s deadline to verify")
    pieces: list[tuple[str, list[float]]] = []

    def collect(text: str, logprobs: list[float]) -> None:
        pieces.append((text, list(logprobs)))

    verify_started = time.monotonic()
    try:
        reply = await call(
            verification_prompt(prompt, answer.text), min(VERIFY_MAX_TOKENS, spec.max_tokens), collect, left
        )
    except TierCallError as exc:
        partial = exc.partial  # what a failed call generated is paid for, like any other
        return Verification(
            NO_VERDICT,
            input_tokens=partial.input_tokens if partial is not None else 0,
            output_tokens=partial.output_tokens if partial is not None else 0,
            latency_ms=_elapsed_ms(verify_started),
            error=f"verification failed: {exc.reason}",
        )
    latency_ms = reply.latency_ms or _elapsed_ms(verify_started)
    try:
        # streamed pieces carry each piece's own log-probs; a tier that could not stream answered in one piece
        verdict = verdict_from_pieces(pieces) if reply.deltas else verdict_from_text(reply.text, reply.token_logprobs)
    except ValueError as exc:  # e.g. NaN log-probs: that tier's bug; no verdict rather than a failed request
        return Verification(NO_VERDICT, reply.input_tokens, reply.output_tokens, latency_ms, f"no verdict: {exc}")
    return Verification(verdict, reply.input_tokens, reply.output_tokens, latency_ms)
