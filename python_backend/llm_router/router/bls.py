"""BLS calls from the router to the classifier and the tiers, with deadlines the router enforces itself.

In Triton 24.10 a BLS `timeout` only bounds queueing and a decoupled BLS response iterator cannot be cancelled, so
each tier call runs its (blocking) response iterator on a reader thread that feeds an asyncio queue; the router
awaits that queue with the time left. A call past its deadline is abandoned: its thread drains the tier's remaining
responses in the background and nothing of it reaches the client.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from dataclasses import dataclass

import numpy as np
import triton_python_backend_utils as pb_utils

from llm_router.protocol import (
    ANSWER_OUTPUTS,
    OnPiece,
    PieceCollector,
    TierAnswer,
    first_text,
    is_input_rejection,
    tier_piece,
    tier_request_arrays,
)
from llm_router.router.errors import TierCallError
from llm_router.triton_utils import KEEP_ALIVE

CLASSIFIER_MODEL = "intent_classifier"


@dataclass
class Classification:
    """What the intent classifier said about one prompt."""

    intent: str
    intent_probs: dict[str, float]
    difficulty: float


def _bytes_tensor(name: str, value: str, batched: bool) -> pb_utils.Tensor:
    array = np.array([value.encode("utf-8")], dtype=np.object_)
    return pb_utils.Tensor(name, array.reshape(1, 1) if batched else array)


def _output(response: object, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_output_tensor_by_name(response, name)
    return None if tensor is None else tensor.as_numpy()


async def classify(text: str, timeout_s: float, labels: list[str] | None = None) -> Classification:
    """Run `intent_classifier` on one prompt; raises TierCallError on error or timeout."""
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
    probs = _output(response, "intent_probs").reshape(-1)
    names = labels if labels is not None and len(labels) == probs.size else [str(i) for i in range(probs.size)]
    return Classification(
        intent=first_text(_output(response, "intent")),
        intent_probs={name: round(float(p), 6) for name, p in zip(names, probs, strict=True)},
        difficulty=float(_output(response, "difficulty").reshape(-1)[0]),
    )


@dataclass(frozen=True)
class TierRequest:
    """What the router asks of one tier."""

    tier: str
    text: str
    max_tokens: int
    stream: bool = False
    batched_inputs: bool = True  # the tier's config has max_batch_size > 0 (TensorRT-LLM style)
    messages: str | None = None  # a conversation (JSON) for the tier's `messages` input; text is then ""
    raw: bool = False

    def to_inference_request(self) -> pb_utils.InferenceRequest:
        arrays = tier_request_arrays(
            self.text, self.max_tokens, self.stream, self.batched_inputs, messages=self.messages, raw=self.raw
        )
        return pb_utils.InferenceRequest(
            model_name=self.tier,
            inputs=[pb_utils.Tensor(name, array) for name, array in arrays.items()],
            requested_output_names=list(ANSWER_OUTPUTS),
        )


_DONE = object()
_ERROR_CODE_NAMES = ("UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE", "UNSUPPORTED", "ALREADY_EXISTS")


def _code_name(error: pb_utils.TritonError) -> str | None:
    """The name of an error's code (pb_utils.TritonError exists only once the stub runs the model, not at import)."""
    codes = pb_utils.TritonError
    return next((name for name in _ERROR_CODE_NAMES if getattr(codes, name, None) == error.code()), None)


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


async def call_tier(request: TierRequest, deadline_s: float, on_delta: OnPiece | None = None) -> TierAnswer:
    """Generate with one tier within `deadline_s`; `on_delta(text, logprobs)` sees each streamed piece.

    `on_delta` may return True to abandon the call early (the streaming router's hold-back escalation).
    Raises TierCallError(status="timeout" | "error" | "abandoned").
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    started = time.monotonic()
    deadline = started + deadline_s
    threading.Thread(target=_read_responses, args=(request, queue, loop), daemon=True).start()
    collector = PieceCollector(request.stream, on_piece=on_delta)
    answered = False  # a response with output tensors arrived (an empty final response carries none)
    while True:
        try:
            item = await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()))
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
            rejected = is_input_rejection(_code_name(error), error.message())
            raise TierCallError(f"{request.tier} failed: {error.message()}", rejected_input=rejected)
        answered = answered or bool(item.output_tensors())
        piece = tier_piece(functools.partial(_output, item))
        collector.counts(piece.input_tokens, piece.output_tokens)
        if collector.add(piece.text, piece.logprobs or []):
            partial = collector.answer()  # what was generated is paid for: its counts go into the trace
            partial.latency_ms = (time.monotonic() - started) * 1000
            reason = f"{request.tier} abandoned after {len(collector.logprobs)} tokens"
            raise TierCallError(reason, status="abandoned", partial=partial)
    answer = collector.answer()
    answer.latency_ms = (time.monotonic() - started) * 1000
    return answer
