"""The `router` and `router_stream` Triton models: classify, route by policy, generate, score, escalate.

The decision logic is `llm_router.core.decide()`; this module only moves tensors and calls models.

Concurrency: `execute()` hands each request to an asyncio loop on a background thread and returns None at once;
each request is answered through its response sender (exactly one response with the FINAL flag for `router`,
text deltas then a final response for `router_stream`). One model instance therefore routes many requests at once
without blocking on the tiers. Every code path ends in a FINAL response, so a request never hangs.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from llm_router.core import (
    INTENTS,
    Attempt,
    Decision,
    DecisionKind,
    Overrides,
    Policy,
    RequestOverrideError,
    allowed_range,
    compute_confidence,
    decide,
    load_policy,
    make_trace,
    tier_max_tokens,
    validate_overrides,
)
from llm_router.router.bls import Classification, TierCallError, TierOutput, TierRequest, call_tier, classify
from llm_router.router.metrics import RouterMetrics
from llm_router.router.remote import call_remote_tier
from llm_router.triton_utils import (
    REQUEST_KEEP_ALIVE,
    RequestError,
    error_response,
    model_parameter,
    request_parameters,
    scalar_input,
    shorten_gil_switch_interval,
    text_input,
)

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
OVERRIDE_PARAMETERS = ("force_tier", "min_tier", "max_tier", "confidence_threshold")
BOOL_PARAMETERS = ("return_trace",)
MAX_PROMPT_CHARS = 100_000


@dataclass
class RouteRequest:
    """A parsed, validated router request."""

    text: str
    max_tokens: int | None
    overrides: Overrides
    return_trace: bool


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise RequestError(f"parameter '{name}' must be a boolean, got {value!r}")


def parse_request(request: Any, policy: Policy) -> RouteRequest:
    """Inputs and parameters of one request, or RequestError / RequestOverrideError naming the problem."""
    text = text_input(request, "text_input")
    if len(text) > MAX_PROMPT_CHARS:
        raise RequestError(
            f"text_input has {len(text)} characters; the router accepts at most {MAX_PROMPT_CHARS} (shorten the prompt)"
        )
    max_tokens = scalar_input(request, "max_tokens")
    if max_tokens is not None:
        max_tokens = int(max_tokens)
        if max_tokens < 1:
            raise RequestError(f"max_tokens must be >= 1, got {max_tokens}")
    params = request_parameters(request)
    unknown = sorted(
        k for k in params if k not in OVERRIDE_PARAMETERS + BOOL_PARAMETERS and not k.startswith("triton_")
    )
    if unknown:
        raise RequestError(
            f"unknown request parameter(s) {unknown}; known: {', '.join(OVERRIDE_PARAMETERS + BOOL_PARAMETERS)}"
        )
    overrides = validate_overrides(
        policy,
        force_tier=params.get("force_tier"),
        min_tier=params.get("min_tier"),
        max_tier=params.get("max_tier"),
        confidence_threshold=params.get("confidence_threshold"),
    )
    return_trace = _parse_bool("return_trace", params.get("return_trace", False))
    return RouteRequest(text=text, max_tokens=max_tokens, overrides=overrides, return_trace=return_trace)


def _string(name: str, value: str) -> pb_utils.Tensor:
    return pb_utils.Tensor(name, np.array([value.encode("utf-8")], dtype=np.object_))


def result_tensors(text: str, tier: str, escalated: bool, cost: float, route: str) -> list[pb_utils.Tensor]:
    return [
        _string("text_output", text),
        _string("tier", tier),
        pb_utils.Tensor("escalated", np.array([escalated], dtype=np.bool_)),
        pb_utils.Tensor("cost", np.array([cost], dtype=np.float32)),
        _string("route", route),
    ]


class _RouterModel:
    """Shared by the unary and streaming routers."""

    streaming = False

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def initialize(self, args: dict[str, str]) -> None:
        faulthandler.enable(all_threads=True)  # a crash of this stub prints every thread's stack to Triton's log
        shorten_gil_switch_interval()
        config = json.loads(args["model_config"])
        self.model_name = config["name"]
        self.policy_path = self._policy_path(config, Path(args["model_repository"]), args["model_version"])
        self.policy = load_policy(self.policy_path)  # an invalid policy fails the load; the old version keeps serving
        self.classifier_timeout_s = float(model_parameter(config, "classifier_timeout_s", "2.0"))
        self.metrics = RouterMetrics(self.model_name)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"{self.model_name}-loop", daemon=True)
        self._thread.start()
        self._pending: set[Any] = set()
        self._pending_lock = threading.Lock()
        pb_utils.Logger.log_info(f"{self.model_name}: policy {self.policy_path} (tiers {self.policy.tier_names})")

    @staticmethod
    def _policy_path(config: dict[str, Any], model_dir: Path, version: str) -> Path:
        source = model_parameter(config, "policy_from_model")
        if source is None:
            return model_dir / version / "policy.yaml"
        other = model_dir.parent / source
        versions = sorted((int(p.name) for p in other.iterdir() if p.name.isdigit()), reverse=True)
        for candidate in versions:
            path = other / str(candidate) / "policy.yaml"
            if path.exists():
                return path
        raise FileNotFoundError(f"no policy.yaml in any version of model {source!r} under {other}")

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            future = asyncio.run_coroutine_threadsafe(self._answer(request, sender), self.loop)
            with self._pending_lock:
                self._pending.add(future)
            future.add_done_callback(self._forget)
        return None

    def _forget(self, future: Any) -> None:
        with self._pending_lock:
            self._pending.discard(future)

    def finalize(self) -> None:
        deadline = time.monotonic() + max(t.deadline_s for t in self.policy.tiers) + self.classifier_timeout_s + 5
        while time.monotonic() < deadline:
            with self._pending_lock:
                if not self._pending:
                    break
            time.sleep(0.05)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)

    # -- one request -------------------------------------------------------------------------------------------
    async def _answer(self, request: Any, sender: Any) -> None:
        try:
            parsed = parse_request(request, self.policy)
            await self._route(parsed, sender)
        except (RequestError, RequestOverrideError) as exc:
            sender.send(error_response(RequestError(str(exc))), flags=FINAL)
        except Exception as exc:  # noqa: BLE001 - never leave a client waiting
            pb_utils.Logger.log_error(f"{self.model_name}: {type(exc).__name__}: {exc}")
            sender.send(error_response(exc), flags=FINAL)
        finally:
            REQUEST_KEEP_ALIVE.keep((request, sender))  # the stub may drop its reference without the GIL

    async def _classify(self, text: str) -> tuple[Classification | None, str | None]:
        try:
            result = await classify(text, self.classifier_timeout_s, labels=list(INTENTS))
        except TierCallError as exc:
            return None, exc.reason
        return result, None

    async def _route(self, req: RouteRequest, sender: Any) -> None:
        started = time.monotonic()
        policy = self.policy
        lowest, highest = allowed_range(policy, req.overrides)
        classify_task = None
        if lowest == highest:
            # Only one tier is allowed (force_tier, or min_tier == max_tier): the route cannot depend on the
            # classification, so classify concurrently with generation, for the trace and the metrics only.
            classify_task = asyncio.ensure_future(self._classify(req.text))
            classification, classifier_error = None, None
        else:
            classification, classifier_error = await self._classify(req.text)
        deferred: list[Callable[[], None]] = []  # metric updates, made after the response is sent
        attempts: list[Attempt] = []
        outputs: list[TierOutput | None] = []
        rejected: dict[str, str] = {}  # tiers that refused the request itself (INVALID_ARG): tier -> reason
        streamed_tier: str | None = None
        while True:
            decision = decide(policy, classification, attempts, req.overrides)
            if decision.kind is not DecisionKind.CALL:
                break
            spec = policy.tier(decision.tier)
            max_tokens = tier_max_tokens(policy, decision.tier, req.max_tokens)
            try:
                if self.streaming:
                    output, confidence = await self._call_streaming(
                        req, decision.tier, max_tokens, classification, attempts, sender
                    )
                    streamed_tier = decision.tier if output.deltas else streamed_tier
                else:
                    output = await (
                        call_remote_tier(spec, req.text, max_tokens, spec.deadline_s)
                        if spec.remote is not None
                        else call_tier(TierRequest(decision.tier, req.text, max_tokens), spec.deadline_s)
                    )
                    confidence = compute_confidence(
                        spec.confidence.function, output.token_logprobs, spec.confidence.params
                    )
            except _HeldBack as held:
                attempts.append(held.attempt)
                outputs.append(None)
                continue
            except TierCallError as exc:
                attempts.append(Attempt(decision.tier, exc.status, error=exc.reason, latency_ms=_elapsed_ms(started)))
                if exc.rejected_input:
                    rejected[decision.tier] = exc.reason
                outputs.append(None)
                deferred.append(partial(self.metrics.fallback, decision.tier, exc.status))
                continue
            attempts.append(
                Attempt(
                    decision.tier,
                    "ok",
                    confidence=confidence,
                    input_tokens=output.input_tokens,
                    output_tokens=output.output_tokens,
                    latency_ms=output.latency_ms,
                )
            )
            outputs.append(output)
            if math.isfinite(confidence):
                deferred.append(partial(self.metrics.confidence, decision.tier, confidence))
            if streamed_tier is not None:
                break  # text already reached the client: this tier answers
        if classify_task is not None:
            classification, classifier_error = await classify_task
        final, trace = make_trace(policy, classification, attempts, req.overrides)
        route = trace.to_dict()
        if final.kind is DecisionKind.CALL and streamed_tier is not None:
            # streamed without a hold-back (holdback_tokens = 0): the streamed tier answers whatever it scored
            final = Decision(
                DecisionKind.ACCEPT,
                tier=streamed_tier,
                attempt_index=len(attempts) - 1,
                reason="streamed without hold-back; answer already sent",
            )
            route.update(status="accepted", final_tier=streamed_tier, final_reason=final.reason)
        if classifier_error is not None:
            route["classifier_error"] = classifier_error
        generation_ms = sum(a.latency_ms for a in attempts)
        overhead_ms = max(0.0, _elapsed_ms(started) - generation_ms)
        route["router_overhead_ms"] = round(overhead_ms, 3)
        route["policy_version"] = policy.version
        if req.return_trace:
            route["answers"] = [
                {"tier": a.tier, "text": o.text if o is not None else None}
                for a, o in zip(attempts, outputs, strict=True)
            ]
        deferred.append(partial(self.metrics.overhead, overhead_ms))
        try:
            self._send_result(sender, final, trace, route, attempts, outputs, rejected, classification, deferred)
        finally:
            for record in deferred:  # off the latency path: metric updates are IPC calls to the server
                record()

    def _send_result(
        self,
        sender: Any,
        final: Decision,
        trace: Any,
        route: dict[str, Any],
        attempts: list[Attempt],
        outputs: list[TierOutput | None],
        rejected: dict[str, str],
        classification: Classification | None,
        deferred: list[Callable[[], None]],
    ) -> None:
        """Send the one final response of a routed request; queue its metric updates in `deferred`."""
        if final.kind is DecisionKind.FAIL and rejected and all(a.ok or a.tier in rejected for a in attempts):
            # every tier tried refused the request itself (e.g. a prompt above its context): the client must fix it
            reasons = "; ".join(rejected.values())
            sender.send(
                error_response(
                    RequestError(
                        f"every tier allowed for this request rejected it: {reasons} "
                        "(shorten the prompt or lower max_tokens)"
                    )
                ),
                flags=FINAL,
            )
            return
        if final.kind is DecisionKind.FAIL:
            deferred.append(self.metrics.failure)
            message = f"no tier could answer: {final.reason}"
            sender.send(
                pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.UNAVAILABLE)),
                flags=FINAL,
            )
            return
        answer = outputs[final.attempt_index]
        assert answer is not None
        intent = classification.intent if classification is not None else "unclassified"
        deferred.append(partial(self.metrics.request, intent, final.tier))
        previous = None
        for attempt_trace in trace.attempts:
            if previous is not None and attempt_trace.step == "escalate":
                deferred.append(partial(self.metrics.escalation, previous, attempt_trace.tier))
            previous = attempt_trace.tier
        for attempt, output in zip(attempts, outputs, strict=True):
            if output is not None and output is not answer:
                deferred.append(partial(self.metrics.wasted_tokens, attempt.tier, output.output_tokens))
        deferred.append(partial(self.metrics.cost, trace.cost, trace.cost_saved))
        route_json = json.dumps(route, default=_json_default)
        text = "" if self.streaming else answer.text
        sender.send(
            pb_utils.InferenceResponse(
                output_tensors=result_tensors(text, final.tier, trace.escalated, trace.cost, route_json)
            ),
            flags=FINAL,
        )

    async def _call_streaming(self, *args: Any) -> tuple[TierOutput, float]:
        raise NotImplementedError


class _HeldBack(Exception):
    """The streaming router dropped a tier after scoring its held-back tokens."""

    def __init__(self, attempt: Attempt) -> None:
        super().__init__(attempt.tier)
        self.attempt = attempt


def _elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


class UnaryRouterModel(_RouterModel):
    """`router`: one response per request."""

    streaming = False


class StreamingRouterModel(_RouterModel):
    """`router_stream`: holds back a cheaper tier's first tokens, then streams or escalates."""

    streaming = True

    async def _call_streaming(
        self,
        req: RouteRequest,
        tier: str,
        max_tokens: int,
        classification: Classification | None,
        attempts: list[Attempt],
        sender: Any,
    ) -> tuple[TierOutput, float]:
        policy = self.policy
        spec = policy.tier(tier)
        holdback = policy.holdback_tokens
        held_text: list[str] = []
        held_logprobs: list[float] = []
        # No hold-back when this tier cannot escalate anyway (its answer would be accepted at any confidence).
        cannot_escalate = (
            decide(policy, classification, [*attempts, Attempt(tier, "ok", confidence=-math.inf)], req.overrides).kind
            is not DecisionKind.CALL
        )
        state: dict[str, Any] = {
            "committed": holdback == 0 or cannot_escalate,
            "escalate": False,
            "attempt": None,
            "sent": False,  # text of this tier has reached the client
        }
        state["held_confidence"] = None

        def provisional_attempt() -> Attempt:
            confidence = compute_confidence(spec.confidence.function, held_logprobs, spec.confidence.params)
            return Attempt(tier, "ok", confidence=confidence, input_tokens=0, output_tokens=len(held_logprobs))

        def commit_or_escalate() -> bool:
            """Score the held-back tokens: True to abandon this tier, False to stream on."""
            attempt = provisional_attempt()
            decision = decide(policy, classification, [*attempts, attempt], req.overrides)
            if decision.kind is DecisionKind.CALL:
                state["escalate"] = True
                state["attempt"] = attempt
                return True
            state["committed"] = True
            state["held_confidence"] = attempt.confidence
            flush = "".join(held_text)
            if flush:
                state["sent"] = True
                sender.send(
                    pb_utils.InferenceResponse(output_tensors=[_string("text_output", flush), _string("tier", tier)])
                )
            return False

        def on_delta(text: str, logprobs: list[float]) -> bool:
            if state["committed"]:
                if text:
                    state["sent"] = True
                    sender.send(
                        pb_utils.InferenceResponse(output_tensors=[_string("text_output", text), _string("tier", tier)])
                    )
                return False
            held_text.append(text)
            held_logprobs.extend(logprobs)
            if len(held_logprobs) >= holdback:
                return commit_or_escalate()
            return False

        try:
            output = await (
                call_remote_tier(spec, req.text, max_tokens, spec.deadline_s, stream=True, on_delta=on_delta)
                if spec.remote is not None
                else call_tier(TierRequest(tier, req.text, max_tokens, stream=True), spec.deadline_s, on_delta)
            )
        except TierCallError as exc:
            if exc.status == "abandoned" and state["escalate"]:
                self.metrics.wasted_tokens(tier, len(held_logprobs))
                raise _HeldBack(state["attempt"]) from None
            if state["sent"]:
                # text has reached the client: another tier's answer cannot be appended to it
                raise RuntimeError(f"{tier} failed after streaming began: {exc.reason}") from None
            raise
        if not state["committed"]:
            # the tier finished within the hold-back window: decide on the whole (short) answer
            if commit_or_escalate():
                raise _HeldBack(state["attempt"])
        if not output.deltas:
            output.deltas = [output.text]
        if state["held_confidence"] is not None:
            # the decision was made on the held-back tokens: record that confidence, so the trace agrees
            return output, state["held_confidence"]
        return output, compute_confidence(spec.confidence.function, output.token_logprobs, spec.confidence.params)
