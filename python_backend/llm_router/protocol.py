"""The tier protocol, Triton-free: what every tier model serves and every caller of a tier speaks.

A tier has TensorRT-LLM's `tensorrt_llm_bls` interface (plus the token counts `input_tokens` / `output_tokens`), listed
once in `TIER_INPUTS` / `TIER_OUTPUTS`; the tier configs in model_repository/tier_*/config.pbtxt are checked against
these tables by tests/unit/test_protocol.py. With `max_batch_size > 0` every tensor has a leading batch dimension and a
request carries one prompt (shape [1, 1]). A decoupled tier answers `stream: false` with one response (the whole text)
and `stream: true` with one response per text piece (that piece's log-probs, running token counts); the FINAL flag
ends both.

Used by the tier model (llm_router.tier), the router's local and remote tier calls (llm_router.router.bls/remote),
the gRPC client (router_client.client) and the OpenAI front (router_frontend.openai_front). Only numpy is imported at
module level: this module runs inside Triton's Python backend as well as in client processes.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

# -- the interface ---------------------------------------------------------------------------------------------------


class TensorSpec(NamedTuple):
    """One input or output of the tier interface, as a Triton model config declares it."""

    name: str
    data_type: str  # the config's data type, e.g. "TYPE_STRING"
    dims: tuple[int, ...]  # without the batch dimension
    optional: bool = False


TEXT_INPUT = "text_input"
MESSAGES = "messages"
RAW = "raw"
MAX_TOKENS = "max_tokens"
RETURN_LOG_PROBS = "return_log_probs"
STREAM = "stream"
TEXT_OUTPUT = "text_output"
OUTPUT_LOG_PROBS = "output_log_probs"
CUM_LOG_PROBS = "cum_log_probs"
INPUT_TOKENS = "input_tokens"
OUTPUT_TOKENS = "output_tokens"

TIER_INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(TEXT_INPUT, "TYPE_STRING", (1,)),
    TensorSpec(MESSAGES, "TYPE_STRING", (1,), optional=True),  # a conversation as a JSON list (text_input "")
    TensorSpec(RAW, "TYPE_BOOL", (1,), optional=True),  # true: text_input without the chat template
    TensorSpec(MAX_TOKENS, "TYPE_INT32", (1,)),
    TensorSpec("temperature", "TYPE_FP32", (1,), optional=True),
    TensorSpec("top_p", "TYPE_FP32", (1,), optional=True),
    TensorSpec("top_k", "TYPE_INT32", (1,), optional=True),
    TensorSpec("random_seed", "TYPE_UINT64", (1,), optional=True),
    TensorSpec("stop_words", "TYPE_STRING", (-1,), optional=True),
    TensorSpec("end_id", "TYPE_INT32", (1,), optional=True),
    TensorSpec(RETURN_LOG_PROBS, "TYPE_BOOL", (1,), optional=True),
    TensorSpec(STREAM, "TYPE_BOOL", (1,), optional=True),
)
TIER_OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(TEXT_OUTPUT, "TYPE_STRING", (-1,)),  # (beam = 1)
    TensorSpec(OUTPUT_LOG_PROBS, "TYPE_FP32", (-1, -1)),  # (beam = 1, tokens)
    TensorSpec(CUM_LOG_PROBS, "TYPE_FP32", (-1,)),  # (beam = 1)
    TensorSpec(INPUT_TOKENS, "TYPE_INT32", (1,)),
    TensorSpec(OUTPUT_TOKENS, "TYPE_INT32", (1,)),
)
# what a caller asks of a tier: the answer, its log-probs (confidence) and the token counts (cost)
ANSWER_OUTPUTS = (TEXT_OUTPUT, OUTPUT_LOG_PROBS, INPUT_TOKENS, OUTPUT_TOKENS)

# Triton's response parameter on the last response of a decoupled request, and the request parameter that makes
# Triton send an empty final response when the model's last response did not carry the FINAL flag
FINAL_RESPONSE = "triton_final_response"
ENABLE_EMPTY_FINAL_RESPONSE = "triton_enable_empty_final_response"

_NUMPY_TYPES: dict[str, Any] = {
    "TYPE_STRING": np.object_,
    "TYPE_BOOL": np.bool_,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_UINT64": np.uint64,
    "TYPE_FP32": np.float32,
}


def numpy_type(data_type: str) -> Any:
    """The numpy dtype of a config data type ("TYPE_INT32" or "INT32")."""
    name = data_type if data_type.startswith("TYPE_") else f"TYPE_{data_type}"
    return _NUMPY_TYPES[name]


def tier_request_arrays(
    text: str,
    max_tokens: int,
    stream: bool,
    batched: bool = True,
    messages: str | None = None,
    raw: bool = False,
) -> dict[str, np.ndarray]:
    """The input arrays of one tier request (log-probs always asked for): name -> array, shape [1, 1] when the tier
    has max_batch_size > 0 (`batched`), else [1]. `messages` (a conversation as JSON; text "") and `raw` (true only)
    are added when given."""
    shape = (1, 1) if batched else (1,)
    values = {TEXT_INPUT: text.encode("utf-8"), MAX_TOKENS: max_tokens, RETURN_LOG_PROBS: True, STREAM: stream}
    if messages is not None:
        values[MESSAGES] = messages.encode("utf-8")
    if raw:
        values[RAW] = True
    types = {spec.name: numpy_type(spec.data_type) for spec in TIER_INPUTS}
    return {name: np.array([value], dtype=types[name]).reshape(shape) for name, value in values.items()}


def missing_tier_interface(config: Mapping[str, Any], outputs: tuple[str, ...] = ANSWER_OUTPUTS) -> list[str]:
    """What a model config (JSON form, as Triton's model config API returns it) lacks of the tier interface: the
    required inputs and the `outputs` it does not declare. Empty for a tier."""
    inputs = {item.get("name") for item in config.get("input", [])}
    declared = {item.get("name") for item in config.get("output", [])}
    required = [spec.name for spec in TIER_INPUTS if not spec.optional]
    return [f"input {n}" for n in required if n not in inputs] + [f"output {n}" for n in outputs if n not in declared]


def read_model_config(path: Path) -> dict[str, Any]:
    """A config.pbtxt in the JSON form of Triton's model config API (protobuf text format, tritonclient's schema)."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def repository_tiers(repository: Path) -> list[str]:
    """The models of a model repository on disk that serve the tier interface, by name."""
    configs = sorted(repository.glob("*/config.pbtxt"))
    return [path.parent.name for path in configs if not missing_tier_interface(read_model_config(path))]


# -- "the prompt does not fit" ---------------------------------------------------------------------------------------

# A tier's INVALID_ARG message for a request above its context contains this marker. Triton 24.10 reports a decoupled
# BLS call's error as INTERNAL whatever its code, and an error on a gRPC stream carries no code at all, so the marker
# is how such a rejection is recognised there.
CONTEXT_MARKER = "this model's context"
_INVALID_ARGUMENT = frozenset({"INVALID_ARG", "INVALID_ARGUMENT", "StatusCode.INVALID_ARGUMENT", "400"})


def is_input_rejection(code: str | int | None, message: str) -> bool:
    """True when a tier refused the request itself: the code says invalid argument (Triton's INVALID_ARG, gRPC's
    INVALID_ARGUMENT, HTTP 400) or the message carries CONTEXT_MARKER."""
    return (code is not None and str(code) in _INVALID_ARGUMENT) or CONTEXT_MARKER in message.casefold()


def context_rejection(prompt_tokens: int, context: int, max_tokens: int | None = None) -> str:
    """The tier's message for a prompt (or prompt + max_tokens) above its context; carries CONTEXT_MARKER."""
    if max_tokens is None:
        return f"prompt is {prompt_tokens} tokens long; {CONTEXT_MARKER} is {context} tokens"
    return (
        f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceed {CONTEXT_MARKER} of {context} tokens; "
        f"lower max_tokens to at most {context - prompt_tokens}"
    )


# -- reading responses -----------------------------------------------------------------------------------------------


def first_value(array: np.ndarray | None) -> Any:
    """The first element of an output as a Python value (bytes decoded as UTF-8); None when absent or empty."""
    if array is None or array.size == 0:
        return None
    item = array.reshape(-1)[0]
    if isinstance(item, bytes):
        return item.decode("utf-8", errors="replace")
    return item.item() if isinstance(item, np.generic) else item


def first_text(array: np.ndarray | None) -> str:
    """The first element of a BYTES output as str ('' when absent or empty)."""
    value = first_value(array)
    return "" if value is None else str(value)


def first_int(array: np.ndarray | None) -> int:
    """The first element of an integer output (0 when absent or empty)."""
    return int(array.reshape(-1)[0]) if array is not None and array.size else 0


def logprob_list(array: np.ndarray | None) -> list[float] | None:
    """Every log-prob of an `output_log_probs` output, flattened (None when absent)."""
    return None if array is None else [float(x) for x in array.reshape(-1)]


@dataclass(frozen=True)
class TierPiece:
    """What one response of a tier carries (a streamed piece, or the whole answer): its text, its tokens' log-probs
    (None when the response has no `output_log_probs`) and the token counts (0 when not reported)."""

    text: str
    logprobs: list[float] | None
    input_tokens: int
    output_tokens: int


def tier_piece(output: Callable[[str], np.ndarray | None]) -> TierPiece:
    """The answer outputs of one tier response, each read with `output(name)` (None when the response lacks it): a
    tritonclient InferResult's `as_numpy`, or a reader of a Python-backend response's tensors."""
    return TierPiece(
        text=first_text(output(TEXT_OUTPUT)),
        logprobs=logprob_list(output(OUTPUT_LOG_PROBS)),
        input_tokens=first_int(output(INPUT_TOKENS)),
        output_tokens=first_int(output(OUTPUT_TOKENS)),
    )


CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """Token count estimated from text (ceil(chars / 4), OpenAI's rule of thumb for English); only for endpoints
    that report none."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


@dataclass
class TierAnswer:
    """One finished tier generation. `deltas` are the streamed pieces (empty when not streamed)."""

    text: str
    token_logprobs: list[float]
    input_tokens: int
    output_tokens: int
    latency_ms: float = 0.0
    deltas: list[str] = field(default_factory=list)


OnPiece = Callable[[str, list[float]], bool | None]


class PieceCollector:
    """Assembles a tier's responses (text + log-prob pieces, or one whole answer) into one TierAnswer.

    `fill_logprob`: the per-token log-prob assumed for a piece that came without log-probs (one per estimated token);
    None leaves such pieces without log-probs. `on_piece(text, logprobs)` sees every piece that carries something and
    may return True to stop the call (`add` then returns True).
    """

    def __init__(self, stream: bool, fill_logprob: float | None = None, on_piece: OnPiece | None = None) -> None:
        self.stream = stream
        self.fill_logprob = fill_logprob
        self.on_piece = on_piece
        self.pieces: list[str] = []
        self.logprobs: list[float] = []
        self.reported_logprobs = 0  # log-probs the tier sent (not filled in)
        self.input_tokens = 0
        self.output_tokens = 0

    def add(self, text: str, logprobs: list[float] | None) -> bool:
        """One piece (the whole answer when not streaming); True when `on_piece` asked to stop."""
        reported = logprobs is not None
        if logprobs is None:
            logprobs = [self.fill_logprob] * estimate_tokens(text) if self.fill_logprob is not None else []
        if not text and not logprobs:
            return False  # e.g. the empty final response of a decoupled tier
        if self.stream:
            self.pieces.append(text)
            self.logprobs.extend(logprobs)
            self.reported_logprobs += len(logprobs) if reported else 0
        else:
            self.pieces, self.logprobs = [text], list(logprobs)
            self.reported_logprobs = len(logprobs) if reported else 0
        return bool(self.on_piece is not None and self.on_piece(text, logprobs))

    def counts(self, input_tokens: int, output_tokens: int) -> None:
        """Token counts a response reported (0 = not reported: the last reported value stays)."""
        self.input_tokens = input_tokens or self.input_tokens
        self.output_tokens = output_tokens or self.output_tokens

    def answer(self) -> TierAnswer:
        """The answer so far. Output tokens: the reported count, raised to the number of log-probs received; else the
        filled-in log-probs; else estimated from the text."""
        text = "".join(self.pieces)
        output_tokens = max(self.output_tokens, self.reported_logprobs) or len(self.logprobs) or estimate_tokens(text)
        return TierAnswer(
            text=text,
            token_logprobs=self.logprobs,
            input_tokens=self.input_tokens,
            output_tokens=output_tokens,
            deltas=self.pieces if self.stream else [],
        )


# -- one request on a gRPC stream ------------------------------------------------------------------------------------


class StreamClosedError(ConnectionError):
    """The gRPC stream ended before the request's final response."""


def is_final(result: Any) -> bool:
    """True for the last response of a request on a stream (a tritonclient InferResult)."""
    params = result.get_response().parameters
    return FINAL_RESPONSE in params and params[FINAL_RESPONSE].bool_param


async def stream_results(
    client: Any,
    request: dict[str, Any],
    *,
    decoupled: bool = True,
    timeout_s: float | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Any]:
    """Send one request on a tritonclient.grpc.aio stream and yield its results (InferResult) up to the final one.

    `request` holds async_stream_infer's arguments (model_name, inputs, outputs, parameters); an empty final response
    is asked for, so a decoupled model's end is always seen. A model that is not `decoupled` answers once. An error
    response is raised as the client's exception (InferenceServerException); a stream that ends early raises
    StreamClosedError. An unfinished request is cancelled when the caller stops: iterate inside
    `contextlib.aclosing(...)` so that this happens at once.
    """
    done = asyncio.Event()
    parameters = {**(request.get("parameters") or {}), ENABLE_EMPTY_FINAL_RESPONSE: True}

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {**request, "parameters": parameters}
        await done.wait()  # our side of the stream stays open until the final response

    responses = client.stream_infer(requests(), stream_timeout=timeout_s, headers=headers)
    finished = False
    try:
        async for result, error in responses:
            if error is not None:
                finished = True  # an error response is the request's last
                raise error
            finished = is_final(result) or not decoupled
            yield result
            if finished:
                return
        raise StreamClosedError(f"the stream from {request.get('model_name')} closed before its final response")
    finally:
        done.set()
        if not finished:
            # cancel only an unfinished request: cancelling a finished one was once seen to pin its model (Triton 2.51)
            responses.cancel()
