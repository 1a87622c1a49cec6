"""BLS calls from the router to the classifier and the tiers, with deadlines the router enforces itself.

In Triton 24.10 a BLS `timeout` only bounds queueing and a decoupled BLS response iterator cannot be cancelled, so
each tier call runs its (blocking) response iterator on a reader thread that feeds an asyncio queue; the router
awaits that queue with the time left. A call past its deadline is abandoned: its thread drains the tier's remaining
responses in the background and nothing of it reaches the client.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import triton_python_backend_utils as pb_utils
from llm_router.triton_utils import KEEP_ALIVE

CLASSIFIER_MODEL = "intent_classifier"


class TierCallError(RuntimeError):
    """A tier answered with an error, or could not be called; `reason` is short and goes into the trace.

    `rejected_input` is True when the tier refused the request itself (INVALID_ARG, e.g. a prompt above its context).
    """

    def __init__(self, reason: str, status: str = "error", rejected_input: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.rejected_input = rejected_input


@dataclass
class Classification:
    """What the intent classifier said about one prompt."""

    intent: str
    intent_probs: dict[str, float]
    difficulty: float
    latency_ms: float


@dataclass
class TierOutput:
    """One finished tier generation."""

    text: str
    token_logprobs: list[float]
    input_tokens: int
    output_tokens: int
    latency_ms: float
    deltas: list[str] = field(default_factory=list)


def _bytes_tensor(name: str, value: str, batched: bool) -> pb_utils.Tensor:
    array = np.array([value.encode("utf-8")], dtype=np.object_)
    return pb_utils.Tensor(name, array.reshape(1, 1) if batched else array)


def _scalar_tensor(name: str, value: object, dtype: type, batched: bool) -> pb_utils.Tensor:
    array = np.array([value], dtype=dtype)
    return pb_utils.Tensor(name, array.reshape(1, 1) if batched else array)


def _first_string(response: object, name: str) -> str:
    tensor = pb_utils.get_output_tensor_by_name(response, name)
    if tensor is None:
        return ""
    value = tensor.as_numpy().reshape(-1)
    if value.size == 0:
        return ""
    item = value[0]
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


def _first_int(response: object, name: str) -> int | None:
    tensor = pb_utils.get_output_tensor_by_name(response, name)
    if tensor is None:
        return None
    values = tensor.as_numpy().reshape(-1)
    return int(values[0]) if values.size else None


async def classify(text: str, timeout_s: float, labels: list[str] | None = None) -> Classification:
    """Run `intent_classifier` on one prompt; raises TierCallError on error or timeout."""
    started = time.monotonic()
    request = pb_utils.InferenceRequest(
        model_name=CLASSIFIER_MODEL,
        inputs=[_bytes_tensor("text", text, batched=True)],
        requested_output_names=["intent", "intent_probs", "difficulty"],
    )
    try:
        response = await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(request.async_exec())), timeout_s)
    except TimeoutError:
        raise TierCallError(f"classifier did not answer within {timeout_s:.2f}s", status="timeout") from None
    if response.has_error():
        raise TierCallError(f"classifier error: {response.error().message()}")
    intent = _first_string(response, "intent")
    probs = pb_utils.get_output_tensor_by_name(response, "intent_probs").as_numpy().reshape(-1)
    difficulty = float(pb_utils.get_output_tensor_by_name(response, "difficulty").as_numpy().reshape(-1)[0])
    names = labels if labels is not None and len(labels) == probs.size else [str(i) for i in range(probs.size)]
    return Classification(
        intent=intent,
        intent_probs={name: round(float(p), 6) for name, p in zip(names, probs, strict=True)},
        difficulty=difficulty,
        latency_ms=(time.monotonic() - started) * 1000,
    )


@dataclass(frozen=True)
class TierRequest:
    """What the router asks of one tier."""

    tier: str
    text: str
    max_tokens: int
    stream: bool = False
    batched_inputs: bool = True  # the tier's config has max_batch_size > 0 (TensorRT-LLM style)

    def to_inference_request(self) -> pb_utils.InferenceRequest:
        inputs = [
            _bytes_tensor("text_input", self.text, self.batched_inputs),
            _scalar_tensor("max_tokens", self.max_tokens, np.int32, self.batched_inputs),
            _scalar_tensor("return_log_probs", True, np.bool_, self.batched_inputs),
            _scalar_tensor("stream", self.stream, np.bool_, self.batched_inputs),
        ]
        return pb_utils.InferenceRequest(
            model_name=self.tier,
            inputs=inputs,
            requested_output_names=["text_output", "output_log_probs", "input_tokens", "output_tokens"],
        )


_DONE = object()
# Triton 24.10 hands a decoupled BLS call's error to Python as INTERNAL whatever its code, so a tier's "prompt too
# long" (INVALID_ARG from llm_router.tier) is also recognised by its message.
_CONTEXT_REJECTION = re.compile(r"this model's context")


def is_input_rejection(error: pb_utils.TritonError) -> bool:
    """True when a tier refused the request itself (INVALID_ARG, or a prompt above the tier's context)."""
    return error.code() == pb_utils.TritonError.INVALID_ARG or bool(_CONTEXT_REJECTION.search(error.message()))


def _read_responses(request: TierRequest, queue: asyncio.Queue, loop: asyncio.AbstractEventLoop) -> None:
    """Reader thread: run the decoupled BLS call and forward each response (or the exception) to the queue."""

    def put(item: object) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    try:
        responses = request.to_inference_request().exec(decoupled=True)
        KEEP_ALIVE.keep(responses)
        for response in responses:
            KEEP_ALIVE.keep(response)
            put(response)
    except Exception as exc:  # noqa: BLE001 - handed to the router, which records it as this tier's failure
        put(exc)
    put(_DONE)


async def call_tier(
    request: TierRequest,
    deadline_s: float,
    on_delta: Callable[[str, list[float]], bool | None] | None = None,
) -> TierOutput:
    """Generate with one tier within `deadline_s`; `on_delta(text, logprobs)` sees each streamed piece.

    `on_delta` may return True to abandon the call early (the streaming router's hold-back escalation).
    Raises TierCallError(status="timeout" | "error" | "abandoned").
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    started = time.monotonic()
    deadline = started + deadline_s
    threading.Thread(target=_read_responses, args=(request, queue, loop), daemon=True).start()
    pieces: list[str] = []
    logprobs: list[float] = []
    input_tokens = output_tokens = 0
    answered = False  # a response with output tensors arrived (an empty final response carries none)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TierCallError(f"{request.tier} overran its {deadline_s:.2f}s deadline", status="timeout")
        try:
            item = await asyncio.wait_for(queue.get(), remaining)
        except TimeoutError:
            raise TierCallError(f"{request.tier} overran its {deadline_s:.2f}s deadline", status="timeout") from None
        if item is _DONE:
            if not answered:
                # Seen in Triton 24.10 when a decoupled tier's execute() raised: the stream closed with a bare FINAL
                # flag and no error. No answer is a failure of that tier, never an empty "ok" answer.
                raise TierCallError(f"{request.tier} closed its response stream without an answer or an error")
            break
        if isinstance(item, Exception):
            raise TierCallError(f"{request.tier} could not be called: {item}")
        if item.has_error():
            error = item.error()
            raise TierCallError(f"{request.tier} failed: {error.message()}", rejected_input=is_input_rejection(error))
        answered = answered or bool(item.output_tensors())
        text = _first_string(item, "text_output")
        piece_logprobs_tensor = pb_utils.get_output_tensor_by_name(item, "output_log_probs")
        piece_logprobs = (
            [float(x) for x in piece_logprobs_tensor.as_numpy().reshape(-1)]
            if piece_logprobs_tensor is not None
            else []
        )
        input_tokens = _first_int(item, "input_tokens") or input_tokens
        if request.stream:
            pieces.append(text)
            logprobs.extend(piece_logprobs)
            output_tokens = _first_int(item, "output_tokens") or output_tokens
        else:
            # a non-streaming tier sends the whole text once (a final empty response may follow)
            if text or piece_logprobs:
                pieces = [text]
                logprobs = piece_logprobs
            output_tokens = _first_int(item, "output_tokens") or output_tokens
        if on_delta is not None and (text or piece_logprobs) and on_delta(text, piece_logprobs):
            raise TierCallError(f"{request.tier} abandoned after {len(logprobs)} tokens", status="abandoned")
    return TierOutput(
        text="".join(pieces),
        token_logprobs=logprobs,
        input_tokens=input_tokens,
        output_tokens=len(logprobs) if logprobs else output_tokens,
        latency_ms=(time.monotonic() - started) * 1000,
        deltas=pieces if request.stream else [],
    )
