"""OpenAI-compatible HTTP front for the router: `POST /v1/chat/completions` (with `stream`), `GET /v1/models`.

    python -m router_frontend.openai_front --port 8080 --triton-url localhost:8001

Requests are forwarded over gRPC to Triton: `router` for plain requests, `router_stream` for `stream: true`.

- Model names: `router` runs the cascade (classifier -> start tier -> escalation); a tier name (`tier_small`,
  `tier_medium`, `tier_large` in the default policy) forces that tier (`force_tier`, no escalation). Any other name is
  a 404 in OpenAI's error format. The tier names are the server's (router_client.client's `tiers()`: the router's
  policy), learnt on first use and asked again when a request names a tier the front does not know; a name that
  needs them while Triton is unreachable is a 503.
- Messages are sent as the router's `messages` input (a JSON list of {"role", "content"}; `text_input` ""), so each
  tier renders the conversation with its own chat template (`chat_messages`). Content given as a list of parts
  keeps its text parts (joined by newlines); other part types are rejected with a 400. A router that does not
  declare the `messages` input (an older model repository) gets one prompt instead (`render_messages`): a
  conversation of one user message verbatim, otherwise every message as `<Role>: <content>` (System, User,
  Assistant, Tool), in order, separated by a blank line.
- `max_tokens` (or `max_completion_tokens`) is passed to the router (which caps it by the policy). Sampling
  parameters (temperature, top_p, stop, seed, ...: ACCEPTED_IGNORED) are accepted and ignored: the tiers' generation
  settings come from the routing policy. `n` must be 1. Fields the front cannot honour (tools, response_format, ...:
  UNSUPPORTED_FIELDS) and unknown fields (a typo such as `max_teir`) are a 400 naming the field.
- Only `/v1/chat/completions` generates; `/v1/completions` and any other path is a 404 in OpenAI's format.
- Router extras, e.g. with the OpenAI SDK's `extra_body`: `min_tier`, `max_tier`, `confidence_threshold`,
  `return_trace`.
- `usage` carries `prompt_tokens`/`completion_tokens` of the tier that answered and, as extra fields, the
  router's `cost` (estimated USD, all tiers tried), `tier` and `escalated`. The response's extra field `route`
  is the router's JSON trace. A streamed response sends the usage on its last chunk (and, with
  `stream_options.include_usage`, also the empty-choices usage chunk that OpenAI specifies).
- `logprobs: true` (chat completions) needs a tier name as the model: the router's outputs carry no per-token
  log-probs, so the front then calls that tier model directly (gRPC streaming, `return_log_probs`), without the
  router: no classification, policy cap or fallback, and `usage.cost` and `route` are null. `max_tokens` defaults to
  DIRECT_TIER_MAX_TOKENS (64, the default policy's per-tier cap). `choices[0].logprobs.content` holds one entry
  per generated token, in order; the tier reports text per streamed piece, not per token, so a piece's text is the
  `token` of its first entry and its other entries have `token` "" (the tokens still join to the answer).
  `top_logprobs` is accepted and each entry's `top_logprobs` is [] (the tiers return no alternatives). With the
  model `router`, `logprobs: true` is answered with `logprobs: null` (OpenAI's value when none are available).
  Streaming works the same way (each chunk carries its piece's entries).
- Ids: a completion's `id` (`chatcmpl-<32 hex>`) is sent to Triton as the request id, so it is, unchanged, the
  route trace's `request_id` and the `prompt_id` of the router's live outcome records (docs/outcome-records.md). A
  direct tier call (`logprobs`) bypasses the router and leaves no record.
- `POST /v1/feedback` (only with `--feedback-file FILE` or $ROUTER_FEEDBACK_FILE): `{"id": "<completion id>",
  "score": 0..1}` or `{"id": ..., "correct": true|false}` (exactly one of the two) is appended with its UTC time
  (`received`) to FILE as one JSON line, answered with `{"object": "feedback", "id", "received": true}`; bad input is
  a 400 naming the field. `router-calibrate join-labels` joins the file to the outcome records.
- Errors use the OpenAI format `{"error": {"message", "type", "param", "code"}}`; INVALID_ARG becomes
  a 400, UNAVAILABLE a 503, others a 500. An error after a stream has started arrives as a
  `data: {"error": ...}` event, which the OpenAI SDK raises as an APIError. Errors of `router_stream` carry no
  status code (gRPC streams only carry the message), so the front checks tier names and empty prompts itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import json
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import tritonclient.grpc.aio as grpcclient_aio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from llm_router.protocol import (
    StreamClosedError,
    TierPiece,
    is_input_rejection,
    stream_results,
    tier_piece,
    tier_request_arrays,
)
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from router_client.client import (
    DEFAULT_URL,
    ROUTER_MODEL,
    ROUTER_STREAM_MODEL,
    AsyncRouterClient,
    RouteOptions,
    RouterError,
    RouterResult,
    StreamDelta,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

OWNER = "triton-llm-router"
DIRECT_TIER_MAX_TOKENS = 64
MESSAGES_INPUT = "messages"  # the router's optional input: the conversation as JSON (text_input is then "")
log = logging.getLogger("uvicorn.error")  # uvicorn's console logger: startup problems show next to its lines

# OpenAI request fields that are accepted and ignored (generation settings come from the routing policy)
ACCEPTED_IGNORED = (
    "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "user",
    "metadata", "store", "service_tier", "parallel_tool_calls", "reasoning_effort", "prompt_cache_key",
    "safety_identifier",
)  # fmt: skip
# OpenAI request fields that change what the answer must be, which the router cannot do: a 400 when set
UNSUPPORTED_FIELDS = {
    "tools": "tool calls are not supported (the tiers generate text only)",
    "tool_choice": "tool calls are not supported (the tiers generate text only)",
    "functions": "function calls are not supported (the tiers generate text only)",
    "function_call": "function calls are not supported (the tiers generate text only)",
    "response_format": 'only text answers are supported (response_format must be absent or {"type": "text"})',
    "audio": "audio output is not supported (the tiers generate text only)",
    "modalities": "only the text modality is supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
}
NOT_FOUND_HINTS = {
    "/v1/completions": "this front serves the chat API only: POST /v1/chat/completions with the prompt as one user "
    "message",
    "/v1/feedback": "feedback is off: start router-openai with --feedback-file FILE (or $ROUTER_FEEDBACK_FILE)",
}
FEEDBACK_ENV = "ROUTER_FEEDBACK_FILE"

# Triton/gRPC status -> (HTTP status, OpenAI error type)
_STATUS_MAP = {
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "NOT_FOUND": (404, "not_found_error"),
    "UNAVAILABLE": (503, "server_error"),
    "DEADLINE_EXCEEDED": (504, "timeout_error"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "UNAUTHENTICATED": (401, "authentication_error"),
}


# -- request schema ----


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request as the front serves it: an unknown field is refused (extra="forbid"), the
    fields of ACCEPTED_IGNORED are accepted and ignored, and those of UNSUPPORTED_FIELDS are refused when set."""

    model_config = ConfigDict(extra="forbid")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    n: int = 1
    # router extras (OpenAI SDK: extra_body={...})
    min_tier: str | None = None
    max_tier: str | None = None
    confidence_threshold: float | None = Field(default=None, le=0)  # log-prob scale
    return_trace: bool = False
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    # accepted and ignored (ACCEPTED_IGNORED), refused when set (UNSUPPORTED_FIELDS)
    temperature: Any = None
    top_p: Any = None
    stop: Any = None
    seed: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    logit_bias: Any = None
    user: Any = None
    metadata: Any = None
    store: Any = None
    service_tier: Any = None
    parallel_tool_calls: Any = None
    reasoning_effort: Any = None
    prompt_cache_key: Any = None
    safety_identifier: Any = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    response_format: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    web_search_options: Any = None


class Feedback(BaseModel):
    """`POST /v1/feedback`: a label for a completion, `score` in [0, 1] or `correct` (exactly one: feedback_record)."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=256)
    score: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False, strict=True)
    correct: StrictBool | None = None


class FrontError(Exception):
    """An error answered in OpenAI's format."""

    def __init__(
        self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
        code: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)

    @classmethod
    def from_router(cls, exc: RouterError) -> FrontError:
        status, type_ = _STATUS_MAP.get(exc.status or "", (500, "server_error"))
        return cls(status, f"router: {exc.message}", type_, code=(exc.status or "router_error").lower())


# -- pure helpers ----


def message_text(message: ChatMessage, index: int) -> str:
    """The text of one message (content parts joined by newlines)."""
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise FrontError(
                400, f"messages[{index}]: content parts of type {part.type!r} are not supported (text only)",
                param=f"messages[{index}].content",
            )  # fmt: skip
        texts.append(part.text)
    return "\n".join(texts)


def render_messages(messages: Sequence[ChatMessage]) -> str:
    """One prompt from a conversation (see the module docstring)."""
    texts = [message_text(m, i) for i, m in enumerate(messages)]
    if len(messages) == 1 and messages[0].role == "user":
        prompt = texts[0]
    else:
        prompt = "\n\n".join(f"{m.role.capitalize()}: {t}" for m, t in zip(messages, texts, strict=True) if t)
    if not prompt.strip():
        raise FrontError(400, "the messages have no text to send", param="messages")
    return prompt


def chat_messages(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """The router's `messages` input: each message's role and text (content parts joined); a 400 FrontError when
    there is no text at all."""
    texts = [message_text(m, i) for i, m in enumerate(messages)]
    if not any(t.strip() for t in texts):
        raise FrontError(400, "the messages have no text to send", param="messages")
    # the legacy role `function` is a tool result; the tiers' templates know `tool`
    roles = ["tool" if m.role == "function" else m.role for m in messages]
    return [{"role": role, "content": text} for role, text in zip(roles, texts, strict=True)]


def refuse_unsupported(body: ChatCompletionRequest) -> None:
    """A 400 FrontError for the first field of UNSUPPORTED_FIELDS that asks for something (null, [] and the text-only
    values are no-ops and pass)."""
    for name, why in UNSUPPORTED_FIELDS.items():
        value = getattr(body, name)
        no_op = value in (None, [], "none") or (name == "response_format" and value == {"type": "text"}) or (
            name == "modalities" and value == ["text"]
        )  # fmt: skip
        if not no_op:
            raise FrontError(400, f"`{name}`: {why}", param=name, code="unsupported_parameter")


def unknown_field_message(name: str) -> str:
    """OpenAI's message for an unknown request field, with the closest known field when there is one."""
    known = [n for n in ChatCompletionRequest.model_fields if n not in UNSUPPORTED_FIELDS]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean `{close[0]}`?)" if close else ""
    return f"Unrecognized request argument supplied: {name}{hint}"


def validation_error(errors: Sequence[Any]) -> FrontError:
    """The 400 for a request body that FastAPI could not parse or validate (the first error)."""
    first = errors[0] if errors else {}
    loc = [p for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        where = f" at character {loc[0]}" if loc else ""
        detail = (first.get("ctx") or {}).get("error")
        return FrontError(
            400, f"the request body is not valid JSON{where}" + (f" ({detail})" if detail else "") +
            "; send a JSON object such as {\"model\": \"router\", \"messages\": [...]}",
        )  # fmt: skip
    if first.get("type") == "extra_forbidden" and len(loc) == 1:
        return FrontError(400, unknown_field_message(str(loc[0])), param=str(loc[0]), code="unknown_parameter")
    where = ".".join(str(p) for p in loc)
    message = f"{where}: {first.get('msg', 'invalid request')}" if where else str(first.get("msg", "invalid request"))
    return FrontError(400, message, param=where or None)


def feedback_record(feedback: Feedback, received: datetime) -> dict[str, Any]:
    """The feedback file's line for one label; a 400 FrontError unless exactly one of score/correct is given."""
    if (feedback.score is None) == (feedback.correct is None):
        both = feedback.score is not None
        raise FrontError(
            400,
            ("send only one of" if both else "send one of") + ' "score" (a number in [0, 1]) or "correct" (true/false)',
            param="correct" if both else "score",
        )
    label: dict[str, Any] = {"score": feedback.score} if feedback.score is not None else {"correct": feedback.correct}
    stamp = received.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"id": feedback.id, **label, "received": stamp}


_FEEDBACK_LOCK = threading.Lock()


def append_feedback(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (one write call, so lines of several writers do not interleave)."""
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
    with _FEEDBACK_LOCK, open(path, "a", encoding="utf-8") as out:
        out.write(line)


async def triton_problem(triton_url: str, timeout_s: float = 5.0) -> str | None:
    """What stops the front from serving with the Triton server at `triton_url` (None when the router is ready)."""
    client = grpcclient_aio.InferenceServerClient(triton_url)
    try:
        try:
            live = await client.is_server_live(client_timeout=timeout_s)
        except InferenceServerException as exc:
            return f"Triton at {triton_url} is not reachable ({RouterError.from_triton(exc)})"
        if not live:
            return f"Triton at {triton_url} is not live"
        try:
            ready = await client.is_model_ready(ROUTER_MODEL, client_timeout=timeout_s)
        except InferenceServerException:
            ready = False
        return None if ready else f"Triton at {triton_url} is up, but its `{ROUTER_MODEL}` model is not ready"
    finally:
        await client.close()


def tier_names_used(body: ChatCompletionRequest) -> list[str]:
    """The tier names a request uses (as its model, min_tier, max_tier)."""
    model = None if body.model == ROUTER_MODEL else body.model
    return [name for name in (model, body.min_tier, body.max_tier) if name is not None]


def route_options(body: ChatCompletionRequest, tiers: Sequence[str]) -> RouteOptions:
    """Routing overrides for a request, given the server's tier names; a 404 FrontError for an unknown model."""
    models = (ROUTER_MODEL, *tiers)
    if body.model not in models:
        raise FrontError(
            404, f"The model `{body.model}` does not exist. Available: {', '.join(models)}",
            param="model", code="model_not_found",
        )  # fmt: skip
    for name in ("min_tier", "max_tier"):
        value = getattr(body, name)
        if value is not None and value not in tiers:
            raise FrontError(400, f"{name} must be one of {', '.join(tiers)}, not {value!r}", param=name)
    return RouteOptions(
        force_tier=body.model if body.model in tiers else None,
        min_tier=body.min_tier,
        max_tier=body.max_tier,
        confidence_threshold=body.confidence_threshold,
        return_trace=body.return_trace,
    )


def usage_of(result: RouterResult) -> dict[str, Any]:
    prompt, completion = result.prompt_tokens, result.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": result.cost,
        "tier": result.tier,
        "escalated": result.escalated,
    }


def finish_reason(result: RouterResult, max_tokens: int | None) -> str:
    """The router's finish_reason ('length' when its request's or its tier's token cap cut the answer), else
    'length' when the answer used the whole max_tokens budget that was asked for, else 'stop'."""
    fallback = "length" if max_tokens is not None and result.completion_tokens >= max_tokens else "stop"
    return str(result.route.get("finish_reason") or fallback)


def completion_body(
    result: RouterResult, model: str, completion_id: str, created: int, max_tokens: int | None
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": finish_reason(result, max_tokens),
                "logprobs": None,
            }
        ],
        "usage": usage_of(result),
        "route": result.route,
    }


def chunk_body(
    completion_id: str, created: int, model: str, delta: dict[str, Any] | None, finish: str | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One `chat.completion.chunk`; `delta=None` makes the empty-choices usage chunk."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def sse_event(payload: dict[str, Any] | str) -> str:
    """One server-sent event: `data: <json>` (or a literal such as [DONE]) and a blank line."""
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n"


# -- logprobs: direct tier calls ----


async def tier_pieces(
    client: grpcclient_aio.InferenceServerClient,
    tier: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    timeout_s: float,
) -> AsyncIterator[TierPiece]:
    """Generate with one tier model directly (gRPC streaming, log-probs on, the conversation as its `messages`
    input); RouterError on any failure."""
    # the tiers batch (max_batch_size > 0): each input [batch, 1]
    arrays = tier_request_arrays("", max_tokens, stream=True, messages=json.dumps(messages, ensure_ascii=False))
    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient_aio.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    results = stream_results(client, {"model_name": tier, "inputs": inputs}, timeout_s=timeout_s)
    try:
        async with contextlib.aclosing(results):
            async for result in results:
                if result.get_response().outputs:
                    yield tier_piece(result.as_numpy)
    except InferenceServerException as exc:
        error = RouterError.from_triton(exc)
        # an error on a stream carries no status code: a prompt above the tier's context is the client's fault
        status = "INVALID_ARGUMENT" if is_input_rejection(error.status, error.message) else error.status
        raise RouterError(f"{tier}: {error.message}", status or "INTERNAL") from exc
    except StreamClosedError as exc:
        raise RouterError(str(exc), "UNAVAILABLE") from exc


def logprob_entries(piece: TierPiece) -> list[dict[str, Any]]:
    """OpenAI `logprobs.content` entries of one piece: its text on the first token, "" on the others."""
    entries = []
    for i, logprob in enumerate(piece.logprobs or []):
        token = piece.text if i == 0 else ""
        entries.append({"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8")), "top_logprobs": []})
    return entries


def direct_usage(tier: str, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "cost": None,
        "tier": tier,
        "escalated": False,
    }


# -- the app ----


def create_app(
    triton_url: str = DEFAULT_URL,
    *,
    timeout_s: float = 300.0,
    api_key: str | None = None,
    feedback_file: str | Path | None = None,
) -> FastAPI:
    """The FastAPI app; one AsyncRouterClient (one gRPC channel) per app. `feedback_file`: serve POST /v1/feedback,
    appending to that file."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.router = AsyncRouterClient(triton_url, timeout_s=timeout_s)
        app.state.tiers = grpcclient_aio.InferenceServerClient(triton_url)  # direct tier calls (logprobs)
        app.state.tier_names = None  # the server's, learnt on first use (tier_names)
        app.state.takes_messages = {}  # router model -> declares the `messages` input (takes_messages)
        problem = await triton_problem(triton_url)
        if problem:  # the front still starts (Triton may come up later); each request gets a 503 until then
            log.warning("%s; requests get a 503 until it is (start it with router-serve)", problem)
        try:
            yield
        finally:
            await app.state.router.close()
            await app.state.tiers.close()

    app = FastAPI(title="triton-llm-router OpenAI-compatible front", lifespan=lifespan)
    started = int(time.time())

    @app.exception_handler(FrontError)
    async def _front_error(_request: Request, exc: FrontError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc.errors()).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Unknown paths (404) and wrong methods (405) in OpenAI's format."""
        path = request.url.path.rstrip("/")
        if exc.status_code == 404:
            hint = NOT_FOUND_HINTS.get(path, "this front serves POST /v1/chat/completions and GET /v1/models")
            error = FrontError(404, f"{request.method} {path or '/'} is not served: {hint}", code="unknown_url")
        else:
            error = FrontError(exc.status_code, f"{request.method} {path or '/'}: {exc.detail}")
        return error.response()

    @app.middleware("http")
    async def _check_api_key(request: Request, call_next: Any) -> Any:
        if api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given, f"Bearer {api_key}"):
                return FrontError(
                    401, "invalid or missing API key", "authentication_error", code="invalid_api_key"
                ).response()
        return await call_next(request)

    async def tier_names(needed: Sequence[str] = (), refresh: bool = False) -> list[str]:
        """The server's tier names, cheapest first; asked again when `needed` names one the front does not know."""
        known = app.state.tier_names
        if refresh or known is None or any(name not in known for name in needed):
            try:
                app.state.tier_names = known = await app.state.router.tiers()
            except RouterError as exc:
                raise FrontError(
                    503, f"Triton at {triton_url} is not reachable: {exc.message}", "server_error"
                ) from exc
        return known

    async def takes_messages(model: str) -> bool:
        """Whether router model `model` declares the `messages` input (asked once per model; False, not remembered,
        when Triton cannot be asked: the request then fails with the router's own error)."""
        known = app.state.takes_messages
        if model not in known:
            try:
                config = await app.state.tiers.get_model_config(model, as_json=True, client_timeout=10)
            except InferenceServerException:
                return False
            known[model] = any(i.get("name") == MESSAGES_INPUT for i in config.get("config", {}).get("input", []))
        return known[model]

    async def ready_models() -> list[str]:
        try:
            ready = set(await app.state.router.ready_models())
        except RouterError as exc:
            raise FrontError(503, f"Triton at {triton_url} is not reachable: {exc.message}", "server_error") from exc
        app.state.takes_messages = {}  # the router may have been reloaded: ask again
        if ROUTER_MODEL not in ready:
            return []
        return [ROUTER_MODEL, *(name for name in await tier_names(refresh=True) if name in ready)]

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": started, "owned_by": OWNER}

    @app.get("/health")
    async def health() -> JSONResponse:
        ok = await app.state.router.is_ready(ROUTER_MODEL)
        return JSONResponse({"router_ready": ok}, status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(name) for name in await ready_models()]}

    @app.get("/v1/models/{model}")
    async def get_model(model: str) -> dict[str, Any]:
        if model not in await ready_models():
            raise FrontError(404, f"The model `{model}` does not exist", param="model", code="model_not_found")
        return model_card(model)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest) -> Any:
        if body.n != 1:
            raise FrontError(400, "n must be 1", param="n")
        refuse_unsupported(body)
        used = tier_names_used(body)
        options = route_options(body, await tier_names(used) if used else [])
        messages = chat_messages(body.messages)
        max_tokens = body.max_completion_tokens or body.max_tokens
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        router: AsyncRouterClient = app.state.router
        if body.logprobs and options.force_tier is not None:
            return await direct_tier_completion(body, messages, completion_id, created)
        model = ROUTER_STREAM_MODEL if body.stream else ROUTER_MODEL
        # the conversation as the router's `messages` input (each tier applies its chat template), or one prompt
        prompt = {"messages": messages} if await takes_messages(model) else {"prompt": render_messages(body.messages)}
        if not body.stream:
            try:
                result = await router.route(max_tokens=max_tokens, options=options, request_id=completion_id, **prompt)
            except RouterError as exc:
                raise FrontError.from_router(exc) from exc
            return completion_body(result, body.model, completion_id, created, max_tokens)

        events = router.stream(
            max_tokens=max_tokens, options=options, model=model, request_id=completion_id, **prompt
        ).__aiter__()
        try:  # the first event decides between an HTTP error and a stream
            first = await events.__anext__()
        except RouterError as exc:
            raise FrontError.from_router(exc) from exc
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            stream_chunks(first, events, body.model, completion_id, created, max_tokens, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    if feedback_file is not None:
        feedback_path = Path(feedback_file)

        @app.post("/v1/feedback")
        async def feedback(body: Feedback) -> dict[str, Any]:
            record = feedback_record(body, datetime.now(UTC))
            try:
                await asyncio.to_thread(append_feedback, feedback_path, record)
            except OSError as exc:
                log.error("feedback not stored in %s: %s", feedback_path, exc)
                raise FrontError(500, f"feedback not stored: {exc.strerror or exc}", "server_error") from exc
            return {"object": "feedback", "id": body.id, "received": True}

    async def direct_tier_completion(
        body: ChatCompletionRequest, messages: list[dict[str, str]], completion_id: str, created: int
    ) -> Any:
        """`logprobs: true` with a tier as the model: call the tier itself (see the module docstring)."""
        tier = body.model
        max_tokens = body.max_completion_tokens or body.max_tokens or DIRECT_TIER_MAX_TOKENS
        pieces = tier_pieces(app.state.tiers, tier, messages, max_tokens, timeout_s).__aiter__()
        try:
            first = await anext(pieces, None)
        except RouterError as exc:
            raise FrontError.from_router(exc) from exc
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                stream_tier_chunks(first, pieces, tier, completion_id, created, max_tokens, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        texts: list[str] = []
        entries: list[dict[str, Any]] = []
        input_tokens = output_tokens = 0
        piece = first
        try:
            while piece is not None:
                texts.append(piece.text)
                entries.extend(logprob_entries(piece))
                input_tokens = piece.input_tokens or input_tokens
                output_tokens = piece.output_tokens or output_tokens
                piece = await anext(pieces, None)
        except RouterError as exc:
            raise FrontError.from_router(exc) from exc
        output_tokens = max(output_tokens, len(entries))
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": tier,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(texts)},
                    "finish_reason": "length" if output_tokens >= max_tokens else "stop",
                    "logprobs": {"content": entries, "refusal": None},
                }
            ],
            "usage": direct_usage(tier, input_tokens, output_tokens),
            "route": None,
        }

    return app


async def stream_tier_chunks(
    first: TierPiece | None,
    pieces: AsyncIterator[TierPiece],
    model: str,
    completion_id: str,
    created: int,
    max_tokens: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The SSE body of a streamed direct tier call with log-probs."""
    yield sse_event(chunk_body(completion_id, created, model, {"role": "assistant", "content": ""}))
    piece = first
    input_tokens = output_tokens = count = 0
    try:
        while piece is not None:
            entries = logprob_entries(piece)
            count += len(entries)
            input_tokens = piece.input_tokens or input_tokens
            output_tokens = piece.output_tokens or output_tokens
            chunk = chunk_body(completion_id, created, model, {"content": piece.text})
            chunk["choices"][0]["logprobs"] = {"content": entries, "refusal": None}
            yield sse_event(chunk)
            piece = await anext(pieces, None)
        output_tokens = max(output_tokens, count)
        usage = direct_usage(model, input_tokens, output_tokens)
        finish = "length" if output_tokens >= max_tokens else "stop"
        yield sse_event(chunk_body(completion_id, created, model, {}, finish, usage=usage))
        if include_usage:
            yield sse_event(chunk_body(completion_id, created, model, None, usage=usage))
    except RouterError as exc:
        yield sse_event(FrontError.from_router(exc).body())
    finally:
        await pieces.aclose()  # type: ignore[attr-defined]
    yield sse_event("[DONE]")


async def stream_chunks(
    first: StreamDelta | RouterResult,
    events: AsyncIterator[StreamDelta | RouterResult],
    model: str,
    completion_id: str,
    created: int,
    max_tokens: int | None,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The SSE body of a streamed chat completion, from the router_stream events."""
    yield sse_event(chunk_body(completion_id, created, model, {"role": "assistant", "content": ""}))
    event: StreamDelta | RouterResult | None = first
    try:
        while event is not None:
            if isinstance(event, StreamDelta):
                yield sse_event(chunk_body(completion_id, created, model, {"content": event.text}))
            else:
                usage = usage_of(event)
                yield sse_event(
                    chunk_body(completion_id, created, model, {}, finish_reason(event, max_tokens), usage=usage)
                )
                if include_usage:
                    yield sse_event(chunk_body(completion_id, created, model, None, usage=usage))
                break
            event = await anext(events, None)
    except RouterError as exc:
        yield sse_event(FrontError.from_router(exc).body())
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    yield sse_event("[DONE]")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m router_frontend.openai_front",
        description="OpenAI-compatible HTTP front (/v1/chat/completions, /v1/models) for the Triton router.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: loopback only)")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port of the front (default %(default)s)")
    parser.add_argument(
        "--triton-url",
        default=DEFAULT_URL,
        help="Triton gRPC endpoint (default %(default)s, router-serve's gRPC port); checked at start",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per router call (default %(default)s)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("ROUTER_FRONT_API_KEY"),
        help="require `Authorization: Bearer KEY` on /v1 (default: $ROUTER_FRONT_API_KEY; none = open)",
    )
    parser.add_argument(
        "--feedback-file",
        type=Path,
        default=os.environ.get(FEEDBACK_ENV) or None,
        help=f"serve POST /v1/feedback, appending labels to this JSONL file (default: ${FEEDBACK_ENV}; none = off)",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn's log level (default %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    args = parse_args(argv)
    app = create_app(args.triton_url, timeout_s=args.timeout, api_key=args.api_key, feedback_file=args.feedback_file)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
