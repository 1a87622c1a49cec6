"""Calls against a running server: each tier model directly, and the router; graded outcome rows.

Tiers are called DIRECTLY (gRPC streaming to the tier model, ``return_log_probs`` on), not through the router with
``force_tier``: the router's outputs carry only the policy's one confidence, while a direct call returns every
token's log-prob, so every confidence function is computed from the same answer, and the self-verification
question is a second direct call to the same tier. The request is what the router would send: the prompt as is,
greedy, ``max_tokens`` capped by the tier's policy cap. Cost is the policy's prices x the tier's own token counts.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient_aio
from llm_router.core.confidence import (
    check_confidence_params,
    compute_confidence,
    get_confidence_function,
    needs_verification,
)
from llm_router.core.cost import call_cost
from llm_router.core.policy import Policy, TierSpec
from llm_router.core.self_verify import (
    NO_VERDICT,
    VERIFY_MAX_TOKENS,
    Verdict,
    build_verification_prompt,
    verdict_from_pieces,
)
from router_client.client import AsyncRouterClient, RouteOptions, RouterError
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from router_eval.data import EvalRow

SELF_VERIFY = "self_verify"


@dataclass(frozen=True)
class ConfidenceChoice:
    """A confidence function and its parameters; `key` names it in reports, e.g. ``first_k_mean:k=8``."""

    function: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        return self.function + "".join(f":{k}={v}" for k, v in self.params)

    @property
    def verification(self) -> bool:
        return needs_verification(self.function)

    @classmethod
    def of(cls, function: str, params: dict[str, Any] | None = None) -> ConfidenceChoice:
        """The choice with every parameter spelled out (defaults filled in), so equal functions get equal keys."""
        check_confidence_params(function, dict(params or {}))
        signature = inspect.signature(get_confidence_function(function))
        full = {
            name: p.default
            for name, p in list(signature.parameters.items())[1:]
            if p.default is not inspect.Parameter.empty
        }
        full.update(params or {})
        return cls(function, tuple(sorted(full.items())))

    @classmethod
    def parse(cls, text: str) -> ConfidenceChoice:
        """``name`` or ``name:param=value:...`` (integer values become ints, others floats)."""
        name, *pairs = text.split(":")
        params = []
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"confidence {text!r}: parameters are name=value")
            params.append((key, int(value) if value.lstrip("-").isdigit() else float(value)))
        return cls.of(name, dict(params))


@dataclass
class Generation:
    """One call of a tier model: text, streamed pieces with their log-probs, token counts, latency, outcome."""

    text: str = ""
    pieces: list[tuple[str, list[float]]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float = 0.0
    outcome: str = "ok"  # ok | error | timeout
    error: str | None = None

    @property
    def logprobs(self) -> list[float]:
        return [lp for _, lps in self.pieces for lp in lps]


def _tensor(name: str, value: Any, dtype: Any) -> grpcclient_aio.InferInput:
    array = np.array([[value]], dtype=dtype)
    tensor = grpcclient_aio.InferInput(name, [1, 1], np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array)
    return tensor


def _first(result: Any, name: str) -> Any:
    value = result.as_numpy(name)
    if value is None or value.size == 0:
        return None
    return value.reshape(-1)[0]


async def _stream(
    client: grpcclient_aio.InferenceServerClient, tier: str, prompt: str, max_tokens: int, timeout_s: float
) -> Generation:
    inputs = [
        _tensor("text_input", prompt.encode("utf-8"), np.object_),
        _tensor("max_tokens", max_tokens, np.int32),
        _tensor("return_log_probs", True, np.bool_),
        _tensor("stream", True, np.bool_),
    ]
    done = asyncio.Event()

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": tier, "inputs": inputs, "parameters": {"triton_enable_empty_final_response": True}}
        await done.wait()  # keep the request side open until the final response arrived

    gen = Generation()
    responses = client.stream_infer(requests(), stream_timeout=timeout_s)
    finished = False
    try:
        async for result, error in responses:
            if error is not None:
                raise RouterError(error.message() if hasattr(error, "message") else str(error))
            response = result.get_response()
            if response.outputs:
                text = _first(result, "text_output")
                text = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text or "")
                logprobs = result.as_numpy("output_log_probs")
                gen.pieces.append((text, [float(x) for x in logprobs.reshape(-1)] if logprobs is not None else []))
                gen.input_tokens = int(_first(result, "input_tokens") or 0)
                gen.output_tokens = int(_first(result, "output_tokens") or 0)
            params = response.parameters
            if "triton_final_response" in params and params["triton_final_response"].bool_param:
                finished = True
                break
        if not finished:
            raise RouterError(f"the stream from {tier} closed before its final response")
    finally:
        done.set()
        if not finished:
            responses.cancel()
    gen.text = "".join(text for text, _ in gen.pieces)
    return gen


async def generate(
    client: grpcclient_aio.InferenceServerClient, tier: str, prompt: str, max_tokens: int, timeout_s: float
) -> Generation:
    """Greedy generation by one tier model with per-token log-probs; failures become outcome error/timeout."""
    started = time.perf_counter()
    try:
        gen = await asyncio.wait_for(_stream(client, tier, prompt, max_tokens, timeout_s), timeout_s)
    except TimeoutError:
        gen = Generation(outcome="timeout", error=f"no answer within {timeout_s:g}s")
    except (RouterError, InferenceServerException) as exc:
        gen = Generation(outcome="error", error=str(exc))
    gen.latency_ms = (time.perf_counter() - started) * 1000
    return gen


@dataclass
class TierOutcome:
    """One (prompt, tier) row of the outcome log, with every confidence that was computed."""

    row: EvalRow
    tier: str
    tier_pos: int
    answer: Generation
    correct: bool
    confidences: dict[str, float]
    policy_confidence: float
    cost_usd: float
    tokens_in: int
    tokens_out: int
    latency_ms: float
    verdict: Verdict | None = None
    verification: Generation | None = None

    def log_row(self, policy_key: str) -> dict[str, Any]:
        """The row in the outcome-log format (calibration/router_calibration/OUTCOME_LOG_FORMAT.md)."""
        out: dict[str, Any] = {
            "prompt_id": self.row.id,
            "prompt": self.row.prompt_text,
            "tier": self.tier,
            "tier_pos": self.tier_pos,
            "correct": self.correct,
            "confidence": None if math.isnan(self.policy_confidence) else self.policy_confidence,
            "cost_usd": self.cost_usd,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "latency_ms": round(self.latency_ms, 3),
            "outcome": self.answer.outcome,
            # extra columns (ignored by the readers): what was graded and every confidence computed
            "benchmark": self.row.source,
            "answer": self.answer.text,
            "grader": self.row.grader,
            "confidence_function": policy_key,
        }
        for key, value in self.confidences.items():
            out[f"conf.{key}"] = value
        if self.verdict is not None:
            out["verdict"] = self.verdict.label
        if self.answer.error:
            out["error"] = self.answer.error
        return out


async def evaluate_tier_row(
    client: grpcclient_aio.InferenceServerClient,
    policy: Policy,
    tier: TierSpec,
    row: EvalRow,
    choices: list[ConfidenceChoice],
    max_tokens: int,
    timeout_s: float,
) -> TierOutcome:
    """Answer `row` with `tier`, grade it, score every confidence in `choices` (+ the policy's own)."""
    prompt = row.prompt_text
    answer = await generate(client, tier.name, prompt, min(max_tokens, tier.max_tokens), timeout_s)
    correct = answer.outcome == "ok" and row.grade(answer.text)
    policy_choice = ConfidenceChoice.of(tier.confidence.function, tier.confidence.params)
    wanted = list(dict.fromkeys([*choices, policy_choice]))
    verdict = verification = None
    if any(c.verification for c in wanted) and answer.outcome == "ok":
        if answer.text.strip():
            verification = await generate(
                client, tier.name, build_verification_prompt(prompt, answer.text), VERIFY_MAX_TOKENS, timeout_s
            )
            verdict = verdict_from_pieces(verification.pieces) if verification.outcome == "ok" else NO_VERDICT
        else:
            verdict = NO_VERDICT  # nothing to verify: never confident, as an empty answer for the others
    confidences: dict[str, float] = {}
    for choice in wanted:
        if answer.outcome != "ok":
            value = -math.inf  # a failed call has no answer to be confident in
        elif choice.verification:
            value = compute_confidence(choice.function, verdict or NO_VERDICT, dict(choice.params))
        else:
            value = compute_confidence(choice.function, answer.logprobs, dict(choice.params))
        confidences[choice.key] = value
    tokens_in, tokens_out, latency = answer.input_tokens, answer.output_tokens, answer.latency_ms
    if policy_choice.verification and verification is not None:
        # the router pays for the verification call of a tier whose policy confidence needs it
        tokens_in += verification.input_tokens
        tokens_out += verification.output_tokens
        latency += verification.latency_ms
    return TierOutcome(
        row=row,
        tier=tier.name,
        tier_pos=policy.tier_index(tier.name),
        answer=answer,
        correct=correct,
        confidences=confidences,
        policy_confidence=confidences[policy_choice.key],
        cost_usd=call_cost(tier, tokens_in, tokens_out),
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        latency_ms=latency,
        verdict=verdict,
        verification=verification,
    )


@dataclass
class RouterOutcome:
    """One prompt answered through the router's cascade."""

    row: EvalRow
    text: str
    correct: bool
    tier: str | None
    escalated: bool
    cost_usd: float
    latency_ms: float
    outcome: str = "ok"
    error: str | None = None


async def evaluate_router_row(
    client: AsyncRouterClient, row: EvalRow, max_tokens: int, options: RouteOptions | None = None
) -> RouterOutcome:
    started = time.perf_counter()
    try:
        result = await client.route(row.prompt_text, max_tokens=max_tokens, options=options)
    except RouterError as exc:
        latency = (time.perf_counter() - started) * 1000
        return RouterOutcome(row, "", False, None, False, 0.0, latency, "error", str(exc))
    return RouterOutcome(
        row, result.text, row.grade(result.text), result.tier, result.escalated, result.cost, result.latency_ms
    )


async def run_all(
    url: str,
    policy: Policy,
    rows: list[EvalRow],
    tiers: list[str],
    with_router: bool,
    choices: list[ConfidenceChoice],
    max_tokens: int,
    timeout_s: float,
    concurrency: int,
    on_done: Callable[[], None] = lambda: None,
) -> tuple[dict[str, list[TierOutcome]], list[RouterOutcome]]:
    """Every row through every tier (and the router), at most `concurrency` requests in flight; input order."""
    semaphore = asyncio.Semaphore(max(1, concurrency))
    client = grpcclient_aio.InferenceServerClient(url)
    router = AsyncRouterClient(url, timeout_s=timeout_s) if with_router else None

    async def limited(coro: Any) -> Any:
        async with semaphore:
            try:
                return await coro
            finally:
                on_done()

    try:
        for model in [*tiers, *(["router"] if router else [])]:
            try:
                ready = await client.is_model_ready(model, client_timeout=10)
            except InferenceServerException as exc:
                raise RouterError(f"cannot reach Triton at {url}: {exc.message() or exc}") from None
            if not ready:
                raise RouterError(f"model {model!r} is not ready on {url}")
        tier_tasks = {
            name: [
                limited(evaluate_tier_row(client, policy, policy.tier(name), r, choices, max_tokens, timeout_s))
                for r in rows
            ]
            for name in tiers
        }
        router_tasks = [limited(evaluate_router_row(router, r, max_tokens)) for r in rows] if router else []
        flat = [t for name in tiers for t in tier_tasks[name]] + router_tasks
        results = await asyncio.gather(*flat)
    finally:
        await client.close()
        if router is not None:
            await router.close()
    by_tier: dict[str, list[TierOutcome]] = {}
    for i, name in enumerate(tiers):
        by_tier[name] = list(results[i * len(rows) : (i + 1) * len(rows)])
    return by_tier, list(results[len(tiers) * len(rows) :])
