"""The `router` and `router_stream` Triton models: classify, route by policy, generate, score, escalate.

The decision logic is `llm_router.core.decide()`; this module only moves tensors and calls models. A request goes
through named steps: `parse_request`, `_RouterModel._route` (the cascade; each tier call through the caller chosen
for that tier, `tier_caller`) which returns a `RouteOutcome`, and `_RouterModel._finish`, which sends the outcome and
records its metrics. `router_stream` holds back a cheaper tier's first tokens with `router.holdback.HoldBack`.

A tier whose confidence function needs verification (`self_verify`) is called a second time after it answered
(`router.verification.verify`): the same tier, through the same caller, is asked whether its answer is correct,
within what is left of its deadline; the verdict scores the answer. `router_stream` holds back the whole answer of
such a tier (nothing of it streams before it is accepted), unless the tier cannot escalate anyway.

Concurrency: `execute()` hands each request to an asyncio loop on a background thread and returns None at once;
each request is answered through its response sender (exactly one response with the FINAL flag for `router`,
text deltas then a final response for `router_stream`). One model instance therefore routes many requests at once
without blocking on the tiers. Every code path ends in a FINAL response, so a request never hangs.

`router_stream` serves the policy of the version of `router` that Triton serves (config parameter
`policy_from_model`): before each request it looks for a newer version directory of that model and switches to its
policy once Triton reports that version ready, so one `load_model("router")` reaches both models.

Live outcome records (config parameter `outcome_records_dir`, off by default; router.records): after answering, the
router queues one outcome-log row per attempt (core/records.py), written to rotating JSONL files by a background
thread; a failed write is counted and logged, never the request's failure. Every routed request has an id: the
Triton request id the client set, else a generated uuid; it is the trace's `request_id` and the records' prompt_id.
With records on and a policy `shadow_rate`, that share of answered requests is sent, after the answer, to the largest
tier the request allowed, in the background (`_shadow`): one more record (`shadow`, the answers' `agreement`), whose
cost is not the request's.

A request with the parameter `describe_policy: true` is not routed: its one response carries the policy in `route`
(`{"policy_version": N, "tiers": [names, cheapest first]}`); this is how clients learn the tier names
(router_client.client.server_tiers).
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from llm_router.core import (
    INTENTS,
    Attempt,
    Decision,
    DecisionKind,
    Outcome,
    Overrides,
    Policy,
    RequestOverrideError,
    TierSpec,
    Trace,
    allowed_range,
    check_max_tokens,
    compute_confidence,
    decide,
    load_policy,
    make_trace,
    tier_max_tokens,
    validate_overrides,
)
from llm_router.core.confidence import needs_verification
from llm_router.core.decide import RouterFacts, Step, Verification
from llm_router.core.records import answer_agreement, attempt_records, shadow_record, shadow_tier
from llm_router.protocol import OnPiece, TierAnswer
from llm_router.router.bls import Classification, TierCallError, TierRequest, call_tier, classify
from llm_router.router.conversation import Prompt, PromptError, check_printable, parse_conversation
from llm_router.router.holdback import HoldBack
from llm_router.router.metrics import RouterMetrics
from llm_router.router.records import OutcomeRecorder, record_settings
from llm_router.router.remote import call_remote_tier
from llm_router.router.verification import TierCaller, verification_attempt, verify
from llm_router.triton_utils import (
    REQUEST_KEEP_ALIVE,
    RequestError,
    error_response,
    model_parameter,
    optional_input,
    request_parameters,
    scalar_input,
    shorten_gil_switch_interval,
    text_input,
)

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
OVERRIDE_PARAMETERS = tuple(f.name for f in fields(Overrides))  # force_tier, min_tier, max_tier, confidence_threshold
BOOL_PARAMETERS = ("return_trace", "describe_policy", "raw")
MAX_PROMPT_CHARS = 100_000
MESSAGES_INPUT = "messages"
NOT_READY_RECHECK_S = 0.5  # router_stream: how often a newer, not (yet) ready version of the policy model is asked


# -- request parsing -------------------------------------------------------------------------------------------------
@dataclass
class RouteRequest:
    """A parsed, validated router request (`describe_policy`: answer with the policy instead of routing)."""

    prompt: Prompt
    max_tokens: int | None
    overrides: Overrides
    return_trace: bool
    describe_policy: bool = False
    request_id: str = ""  # the client's Triton request id, else generated (`_answer`)


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
    params = request_parameters(request)
    unknown = sorted(
        k for k in params if k not in OVERRIDE_PARAMETERS + BOOL_PARAMETERS and not k.startswith("triton_")
    )
    if unknown:
        raise RequestError(
            f"unknown request parameter(s) {unknown}; known: {', '.join(OVERRIDE_PARAMETERS + BOOL_PARAMETERS)}"
        )
    if _parse_bool("describe_policy", params.get("describe_policy", False)):
        return RouteRequest(
            Prompt(""), max_tokens=None, overrides=Overrides(), return_trace=False, describe_policy=True
        )
    prompt = parse_prompt(request, raw=_parse_bool("raw", params.get("raw", False)))
    max_tokens = scalar_input(request, "max_tokens")
    if max_tokens is not None:
        max_tokens = int(max_tokens)
        check_max_tokens(policy, max_tokens)
    overrides = validate_overrides(
        policy,
        force_tier=params.get("force_tier"),
        min_tier=params.get("min_tier"),
        max_tier=params.get("max_tier"),
        confidence_threshold=params.get("confidence_threshold"),
    )
    return_trace = _parse_bool("return_trace", params.get("return_trace", False))
    return RouteRequest(prompt, max_tokens=max_tokens, overrides=overrides, return_trace=return_trace)


def parse_prompt(request: Any, raw: bool = False) -> Prompt:
    """`text_input`, or the conversation in `messages` (text_input then ""), and `raw`; RequestError says what to
    fix."""
    has_messages = optional_input(request, MESSAGES_INPUT) is not None
    text = text_input(request, "text_input", allow_empty=has_messages)
    try:
        if not has_messages:
            _check_length("text_input", text)
            check_printable("input 'text_input'", text)
            return Prompt(text, raw=raw)
        if text:
            raise PromptError('send either text_input or messages: with messages, text_input must be ""')
        if raw:
            raise PromptError("parameter 'raw' applies to text_input only; a conversation is always templated")
        payload = text_input(request, MESSAGES_INPUT)
        _check_length("messages", payload)
        return Prompt("", conversation=parse_conversation(payload))
    except PromptError as exc:
        raise RequestError(str(exc)) from None


def _check_length(name: str, text: str) -> None:
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptError(
            f"{name} has {len(text)} characters; the router accepts at most {MAX_PROMPT_CHARS} (shorten the prompt)"
        )


# -- response tensors ------------------------------------------------------------------------------------------------
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


def describe_policy(policy: Policy) -> dict[str, Any]:
    """The `route` of a describe_policy request: what clients need to know of the policy."""
    return {"policy_version": policy.version, "tiers": list(policy.tier_names)}


# -- tier calls ------------------------------------------------------------------------------------------------------
def tier_caller(spec: TierSpec) -> TierCaller:
    """How the router calls tier `spec` (a BLS call in this server, or its remote endpoint); `on_delta` streams;
    `deadline_s` None is the tier's own deadline. Each raises TierCallError(status="timeout" | "error" |
    "abandoned")."""
    if spec.remote is not None:

        async def call(
            prompt: Prompt, max_tokens: int, on_delta: OnPiece | None, deadline_s: float | None = None
        ) -> TierAnswer:
            stream = on_delta is not None
            deadline = spec.deadline_s if deadline_s is None else deadline_s
            return await call_remote_tier(spec, prompt, max_tokens, deadline, stream=stream, on_delta=on_delta)

    else:

        async def call(
            prompt: Prompt, max_tokens: int, on_delta: OnPiece | None, deadline_s: float | None = None
        ) -> TierAnswer:
            stream = on_delta is not None
            request = TierRequest(spec.name, prompt.text, max_tokens, stream, messages=prompt.messages, raw=prompt.raw)
            return await call_tier(request, spec.deadline_s if deadline_s is None else deadline_s, on_delta)

    return call


@dataclass
class TierResult:
    """One tier call as the route sees it: its attempt, its answer (None: failed or dropped by the hold-back), the
    reason when the tier refused the request itself, and whether its text is the stream's answer."""

    attempt: Attempt
    max_tokens: int  # the call's token cap (the request's max_tokens within the tier's policy cap)
    answer: TierAnswer | None = None
    rejected: str | None = None
    streamed: bool = False

    @classmethod
    def failed(cls, tier: str, max_tokens: int, exc: TierCallError, started: float) -> TierResult:
        attempt = Attempt(tier, exc.status, error=exc.reason, latency_ms=_elapsed_ms(started))
        return cls(attempt, max_tokens, rejected=exc.reason if exc.rejected_input else None)

    @classmethod
    def dropped(cls, scored: Attempt, max_tokens: int, partial: TierAnswer | None, started: float) -> TierResult:
        """A tier the hold-back dropped: its score, and what it generated (paid for, like any escalated answer)."""
        attempt = Attempt(
            scored.tier,
            Outcome.OK,
            confidence=scored.confidence,
            input_tokens=partial.input_tokens if partial is not None else 0,
            output_tokens=max(scored.output_tokens, partial.output_tokens if partial is not None else 0),
            latency_ms=partial.latency_ms if partial is not None and partial.latency_ms else _elapsed_ms(started),
        )
        return cls(attempt, max_tokens)


@dataclass
class RouteOutcome:
    """A routed request, ready to be answered: the final decision, its trace and what each tier did."""

    final: Decision
    trace: Trace
    results: list[TierResult] = field(default_factory=list)
    classification: Classification | None = None
    request: RouteRequest | None = None

    @property
    def refused(self) -> list[str]:
        """Why each tier refused the request, when it failed only because every tier tried refused it."""
        rejected = [r.rejected for r in self.results if r.rejected is not None]
        if self.final.kind is not DecisionKind.FAIL or not rejected:
            return []
        return rejected if all(r.attempt.ok or r.rejected is not None for r in self.results) else []


class _RouterModel:
    """Shared by the unary and streaming routers."""

    streaming = False

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def initialize(self, args: dict[str, str]) -> None:
        faulthandler.enable(all_threads=True)  # a crash of this stub prints every thread's stack to Triton's log
        shorten_gil_switch_interval()
        config = json.loads(args["model_config"])
        self.model_name = config["name"]
        model_dir = Path(args["model_repository"])
        self.policy_source = model_parameter(config, "policy_from_model")
        self.policy_dir = model_dir.parent / self.policy_source if self.policy_source else model_dir
        version = int(args["model_version"]) if self.policy_source is None else self._newest_policy_version()
        self._not_ready: dict[int, float] = {}  # versions of the policy model not ready: when to ask again
        self._confirmed = self.policy_source is None  # the policy served is that of the version Triton serves
        self.metrics = RouterMetrics(self.model_name)
        self._use_policy(version)  # an invalid policy fails the load; the old version keeps serving
        self.classifier_timeout_s = float(model_parameter(config, "classifier_timeout_s", "2.0"))
        self.record_settings = record_settings(lambda key: model_parameter(config, key))
        self.records: OutcomeRecorder | None = None
        self._shadows: set[asyncio.Task[None]] = set()  # shadow calls in flight (a reference keeps them alive)
        self._records_lost = 0  # rows lost so far that the metrics counted
        if self.record_settings.directory is not None:
            name = args.get("model_instance_name") or self.model_name
            self.records = OutcomeRecorder(
                self.record_settings.directory,
                name,
                self.record_settings.max_bytes,
                self.record_settings.backups,
                on_error=lambda message: pb_utils.Logger.log_warn(f"{self.model_name}: {message}"),
            )
            pb_utils.Logger.log_info(f"{self.model_name}: outcome records to {self.records.path}")
            self.metrics.records_lost(0)  # the series exists from the load, at 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"{self.model_name}-loop", daemon=True)
        self._thread.start()
        self._pending: set[Any] = set()
        self._pending_lock = threading.Lock()
        pb_utils.Logger.log_info(f"{self.model_name}: policy {self.policy_path} (tiers {self.policy.tier_names})")

    def _policy_versions(self) -> list[int]:
        """Versions of the policy model on disk that have a policy.yaml, newest first."""
        versions = (int(p.name) for p in self.policy_dir.iterdir() if p.name.isdigit())
        return sorted((v for v in versions if (self.policy_dir / str(v) / "policy.yaml").exists()), reverse=True)

    def _newest_policy_version(self) -> int:
        """At load, the newest version on disk (model readiness cannot be asked in initialize: the stub crashes in
        Triton 2.51); the first request confirms it is the one Triton serves (`_follow_policy_model`)."""
        versions = self._policy_versions()
        if not versions:
            raise FileNotFoundError(f"no policy.yaml in any version of model {self.policy_source!r}")
        return versions[0]

    def _source_ready(self, version: int) -> bool:
        try:
            return bool(pb_utils.is_model_ready(model_name=self.policy_source, model_version=str(version)))
        except Exception:  # noqa: BLE001 - e.g. the model is unknown to Triton: not ready
            return False

    def _use_policy(self, version: int) -> None:
        """Serve `version`'s policy: the policy and the tier callers change together, between requests."""
        path = self.policy_dir / str(version) / "policy.yaml"
        policy = load_policy(path)
        self.policy_path, self.policy_version = path, version
        self.policy, self.callers = policy, {spec.name: tier_caller(spec) for spec in policy.tiers}
        self.metrics.create_series(policy.tier_names, [o.value for o in Outcome if o is not Outcome.OK])
        self.metrics.use_policy(policy, version)  # the drift alarms' fitted band (llm_router.core.drift)
        pb_utils.Logger.log_info(f"{self.model_name}: policy {path} (tiers {policy.tier_names})")

    def _follow_policy_model(self) -> None:
        """router_stream: switch to the policy of a newer version of the policy model once Triton serves it (or to
        an older one when the served version's directory was removed)."""
        if self.policy_source is None:
            return
        now = time.monotonic()
        for version in self._policy_versions():
            if version == self.policy_version and self._confirmed:
                return
            if now < self._not_ready.get(version, 0.0):
                continue
            if not self._source_ready(version):
                self._not_ready[version] = now + NOT_READY_RECHECK_S
                continue
            if version != self.policy_version:
                try:
                    self._use_policy(version)
                except Exception as exc:  # noqa: BLE001 - Triton serves it, so it loaded: keep ours if it now fails
                    pb_utils.Logger.log_error(f"{self.model_name}: policy version {version} not used: {exc}")
                    self._not_ready[version] = now + NOT_READY_RECHECK_S
                    continue
            self._confirmed = True
            return

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
                if not self._pending and not self._shadows:  # shadow calls finish too: their records are written
                    break
            time.sleep(0.05)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if self.records is not None:
            self.records.close()

    # -- one request -------------------------------------------------------------------------------------------
    async def _answer(self, request: Any, sender: Any) -> None:
        try:
            self._follow_policy_model()
            parsed = parse_request(request, self.policy)
            parsed.request_id = request.request_id() or uuid.uuid4().hex
            if parsed.describe_policy:
                route = json.dumps(describe_policy(self.policy))
                sender.send(pb_utils.InferenceResponse(result_tensors("", "", False, 0.0, route)), flags=FINAL)
            else:
                self._finish(await self._route(parsed, sender), sender)
        except (RequestError, RequestOverrideError) as exc:
            sender.send(error_response(RequestError(str(exc))), flags=FINAL)
        except Exception as exc:  # noqa: BLE001 - never leave a client waiting
            pb_utils.Logger.log_error(f"{self.model_name}: {type(exc).__name__}: {exc}")
            sender.send(error_response(exc), flags=FINAL)
        finally:
            REQUEST_KEEP_ALIVE.keep((request, sender))  # the stub may drop its reference without the GIL

    async def _classify(self, text: str) -> tuple[Classification | None, str | None]:
        try:
            return await classify(text, self.classifier_timeout_s, labels=list(INTENTS)), None
        except TierCallError as exc:
            return None, exc.reason

    async def _route(self, req: RouteRequest, sender: Any) -> RouteOutcome:
        """The cascade: classify, then call tiers as `decide()` says until it accepts or fails."""
        started = time.monotonic()
        policy = self.policy
        lowest, highest = allowed_range(policy, req.overrides)
        classified = None
        if lowest == highest:
            # Only one tier is allowed (force_tier, or min_tier == max_tier): the route cannot depend on the
            # classification, so classify concurrently with generation, for the trace and the metrics only.
            classified = asyncio.ensure_future(self._classify(req.prompt.classify_text))
            classification, classifier_error = None, None
        else:
            classification, classifier_error = await self._classify(req.prompt.classify_text)
        results: list[TierResult] = []
        decision = decide(policy, classification, [], req.overrides)
        while decision.kind is DecisionKind.CALL and not (results and results[-1].streamed):
            attempts = [r.attempt for r in results]
            results.append(await self._call(req, decision.tier, classification, attempts, sender))
            decision = decide(policy, classification, [r.attempt for r in results], req.overrides)
        if classified is not None:
            classification, classifier_error = await classified
        if self.streaming and decision.kind is DecisionKind.ACCEPT:
            accepted = results[decision.attempt_index]
            if not accepted.streamed and accepted.answer is not None and accepted.answer.text:
                # a self-verifying tier's whole answer, held back and escalated, is accepted after all (the tiers
                # above it failed): it is complete, so it is sent now
                self._emit(sender, accepted.attempt.tier, accepted.answer.text)
                accepted.streamed = True
        facts = RouterFacts(
            streamed=bool(results) and results[-1].streamed,
            classifier_error=classifier_error,
            elapsed_ms=_elapsed_ms(started),
            answers=[r.answer.text if r.answer else None for r in results] if req.return_trace else None,
            max_tokens=[r.max_tokens for r in results],
            request_id=req.request_id or None,
        )
        final, trace = make_trace(policy, classification, [r.attempt for r in results], req.overrides, facts)
        return RouteOutcome(final, trace, results, classification, req)

    async def _call(
        self, req: RouteRequest, tier: str, classification: Classification | None, attempts: list[Attempt], sender: Any
    ) -> TierResult:
        """One tier call (streamed with a hold-back by `router_stream`); a failure is a result, not an exception."""
        max_tokens = tier_max_tokens(self.policy, tier, req.max_tokens)
        started = time.monotonic()
        verifies = needs_verification(self.policy.tier(tier).confidence.function)
        hold = self._holdback(req, tier, classification, attempts, sender, verifies) if self.streaming else None
        try:
            answer = await self.callers[tier](req.prompt, max_tokens, hold.on_delta if hold else None, None)
        except TierCallError as exc:
            if hold is not None and hold.dropped is not None:
                return TierResult.dropped(hold.dropped, max_tokens, exc.partial, started)
            if hold is not None and hold.sent:
                # text has reached the client: another tier's answer cannot be appended to it
                raise RuntimeError(f"{tier} failed after streaming began: {exc.reason}") from None
            return TierResult.failed(tier, max_tokens, exc, started)
        if verifies:
            verification = await verify(self.callers[tier], self.policy.tier(tier), req.prompt, answer, started)
            confidence = self._score_verdict(tier, verification)
            attempt = verification_attempt(tier, answer, confidence, verification)
            if hold is not None and not hold.committed and hold.settle(confidence):
                # held back whole and escalated: nothing of it was sent; it stays an answer (a fallback may accept it)
                return TierResult(attempt, max_tokens, answer)
            return TierResult(attempt, max_tokens, answer, streamed=hold is not None)
        if hold is not None and not hold.committed and hold.settle():
            assert hold.dropped is not None  # the tier finished within the hold-back window and scored too low
            return TierResult.dropped(hold.dropped, max_tokens, answer, started)
        confidence = (
            hold.confidence
            if hold is not None and hold.confidence is not None
            else self._score(tier, answer.token_logprobs)
        )
        attempt = Attempt(
            tier,
            "ok",
            confidence=confidence,
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
            latency_ms=answer.latency_ms,
        )
        return TierResult(attempt, max_tokens, answer, streamed=hold is not None)

    def _score(self, tier: str, logprobs: list[float]) -> float:
        spec = self.policy.tier(tier).confidence
        return compute_confidence(spec.function, logprobs, spec.params)

    def _score_verdict(self, tier: str, verification: Verification) -> float:
        spec = self.policy.tier(tier).confidence
        return compute_confidence(spec.function, verification.verdict, spec.params)

    def _emit(self, sender: Any, tier: str, text: str) -> None:
        """router_stream: send a piece of `tier`'s answer to the client."""
        sender.send(pb_utils.InferenceResponse(output_tensors=[_string("text_output", text), _string("tier", tier)]))

    def _holdback(
        self,
        req: RouteRequest,
        tier: str,
        classification: Classification | None,
        attempts: list[Attempt],
        sender: Any,
        verifies: bool = False,
    ) -> HoldBack:
        def escalates(attempt: Attempt) -> bool:
            return decide(self.policy, classification, [*attempts, attempt], req.overrides).kind is DecisionKind.CALL

        # No hold-back when this tier cannot escalate anyway (its answer would be accepted at any confidence); a
        # self-verifying tier's verdict needs the whole answer, so all of it is held back (size None).
        cannot_escalate = not escalates(Attempt(tier, "ok", confidence=-math.inf))
        size = 0 if cannot_escalate else None if verifies else self.policy.holdback_tokens
        return HoldBack(
            tier,
            size,
            score=lambda logprobs: self._score(tier, logprobs),
            escalates=escalates,
            emit=lambda text: self._emit(sender, tier, text),
        )

    # -- the response ------------------------------------------------------------------------------------------
    def _finish(self, outcome: RouteOutcome, sender: Any) -> None:
        """Send the one final response of a routed request, then record its metrics (off the latency path: metric
        updates are IPC calls to the server)."""
        try:
            sender.send(self._response(outcome), flags=FINAL)
        finally:
            self._record(outcome)
            self._write_records(outcome)

    def _write_records(self, outcome: RouteOutcome) -> None:
        """Queue the request's outcome records (router.records), and start its shadow call when the policy samples
        it; a bug here must not reach the client either."""
        if self.records is None or not outcome.trace.request_id:
            return
        try:
            self.records.write(attempt_records(outcome.trace, self.policy, datetime.now(UTC), self.model_name,
                                               **self._prompt_columns(outcome)))  # fmt: skip
            lost = self.records.failed + self.records.dropped  # counted by the writer thread; exported from here
            if lost > self._records_lost:
                self.metrics.records_lost(lost - self._records_lost)
                self._records_lost = lost
            rate = self.policy.shadow_rate or 0.0
            if outcome.request is not None and rate > 0 and random.random() < rate:
                tier = shadow_tier(self.policy, outcome.trace, outcome.request.overrides)
                if tier is not None:
                    task = self.loop.create_task(self._shadow(outcome, tier, self.policy))
                    self._shadows.add(task)
                    task.add_done_callback(self._shadows.discard)
        except Exception as exc:  # noqa: BLE001 - the answer was sent; a record is never worth more
            pb_utils.Logger.log_error(f"{self.model_name}: outcome records not written: {exc}")

    def _prompt_columns(self, outcome: RouteOutcome) -> dict[str, Any]:
        """The records' prompt and messages, when prompts are recorded."""
        if not self.record_settings.prompts or outcome.request is None:
            return {}
        prompt = outcome.request.prompt
        conversation = prompt.conversation
        return {
            "prompt": prompt.classify_text,
            "messages": list(conversation.messages) if conversation is not None else None,
        }

    async def _shadow(self, outcome: RouteOutcome, tier: str, policy: Policy) -> None:
        """Shadow evaluation: `tier` answers the request too, after it was answered; its record says how far the
        answers agree. Its cost is in that record only (not in the request's trace or cost metrics)."""
        assert outcome.request is not None and self.records is not None
        request, final = outcome.request, outcome.final
        answer_text = outcome.results[final.attempt_index].answer.text if final.attempt_index is not None else None
        started = time.monotonic()
        try:
            max_tokens = tier_max_tokens(policy, tier, request.max_tokens)
            answer = await self.callers[tier](request.prompt, max_tokens, None, None)
            # a self-verifying tier is not asked a second time here: its confidence stays unknown
            verifies = needs_verification(policy.tier(tier).confidence.function)
            confidence = None if verifies else self._score(tier, answer.token_logprobs)
            attempt = Attempt(tier, "ok", confidence, answer.input_tokens, answer.output_tokens, answer.latency_ms)
            agreement = answer_agreement(answer_text or "", answer.text)
        except TierCallError as exc:
            status = "timeout" if exc.status == "timeout" else "error"
            attempt, agreement = Attempt(tier, status, error=exc.reason, latency_ms=_elapsed_ms(started)), None
        except Exception as exc:  # noqa: BLE001 - recorded as the shadow call's error, never raised
            attempt, agreement = Attempt(tier, "error", error=str(exc), latency_ms=_elapsed_ms(started)), None
        try:
            row = shadow_record(outcome.trace, policy, attempt, agreement, datetime.now(UTC), self.model_name,
                                **self._prompt_columns(outcome))  # fmt: skip
            self.records.write([row])
            self.metrics.shadow_cost(row["cost_usd"])
        except Exception as exc:  # noqa: BLE001 - a shadow record is never worth an error
            pb_utils.Logger.log_error(f"{self.model_name}: shadow record not written: {exc}")

    def _response(self, outcome: RouteOutcome) -> pb_utils.InferenceResponse:
        final, trace = outcome.final, outcome.trace
        if outcome.refused:
            # every tier tried refused the request itself (e.g. a prompt above its context): the client must fix it
            reasons = "; ".join(outcome.refused)
            message = f"every tier allowed for this request rejected it: {reasons}"
            return error_response(RequestError(f"{message} (shorten the prompt or lower max_tokens)"))
        if final.kind is DecisionKind.FAIL:
            message = f"no tier could answer: {final.reason}"
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.UNAVAILABLE))
        answer = outcome.results[final.attempt_index].answer
        assert answer is not None
        text = "" if self.streaming else answer.text
        route = json.dumps(trace.to_dict())  # to_dict() is strict JSON
        return pb_utils.InferenceResponse(result_tensors(text, final.tier, trace.escalated, trace.cost, route))

    def _record(self, outcome: RouteOutcome) -> None:
        metrics, final, trace = self.metrics, outcome.final, outcome.trace
        for result in outcome.results:
            attempt = result.attempt
            if not attempt.ok:
                metrics.fallback(attempt.tier, attempt.outcome.value)
                continue
            metrics.tier_attempt(attempt.tier)  # answered: the denominator of the tier's live escalation rate
            if result.answer is None:  # dropped after its held-back tokens
                metrics.wasted_tokens(attempt.tier, attempt.output_tokens)
            elif attempt.confidence is not None and math.isfinite(attempt.confidence):
                metrics.confidence(attempt.tier, attempt.confidence)
        metrics.overhead(trace.router_overhead_ms or 0.0)
        if outcome.refused:
            return
        if final.kind is DecisionKind.FAIL:
            metrics.failure()
            return
        intent = outcome.classification.intent if outcome.classification is not None else "unclassified"
        metrics.request(intent, final.tier)
        for before, attempt_trace in zip(trace.attempts, trace.attempts[1:], strict=False):
            if attempt_trace.step == Step.ESCALATE:
                metrics.escalation(before.tier, attempt_trace.tier)
        for index, result in enumerate(outcome.results):
            if result.answer is not None and index != final.attempt_index:
                # the attempt's tokens, as the trace's tokens_wasted (a discarded answer's verification call included)
                metrics.wasted_tokens(result.attempt.tier, result.attempt.output_tokens)
        metrics.cost(trace.cost, trace.cost_saved)


def _elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


class UnaryRouterModel(_RouterModel):
    """`router`: one response per request."""

    streaming = False


class StreamingRouterModel(_RouterModel):
    """`router_stream`: holds back a cheaper tier's first tokens, then streams or escalates."""

    streaming = True
