"""OpenAI-compatible HTTP front for the router: `POST /v1/chat/completions` (with `stream`), `GET /v1/models`.

    python -m router_frontend.openai_front --port 8080 --triton-url localhost:8001

Requests are forwarded over gRPC to Triton: `router` for plain requests, `router_stream` for `stream: true`.

- Model names: `router` runs the cascade (classifier -> start tier -> escalation); a tier name (`tier_small`,
  `tier_medium`, `tier_large`) forces that tier (`force_tier`, no escalation). Any other name is a
  404 in OpenAI's error format.
- Messages become one prompt (`render_messages`): a conversation of one user message is sent verbatim;
  otherwise every message becomes `<Role>: <content>` (System, User, Assistant, Tool), in order, separated by
  a blank line. Content given as a list of parts keeps its text parts (joined by newlines); other part types
  are rejected with a 400.
- `max_tokens` (or `max_completion_tokens`) is passed to the router (which caps it by the policy). Sampling
  parameters (temperature, top_p, stop, ...) are accepted and ignored: the tiers' generation settings come
  from the routing policy. `n` must be 1.
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
- Errors use the OpenAI format `{"error": {"message", "type", "param", "code"}}`; INVALID_ARG becomes
  a 400, UNAVAILABLE a 503, others a 500. An error after a stream has started arrives as a
  `data: {"error": ...}` event, which the OpenAI SDK raises as an APIError. Errors of `router_stream` carry no
  status code (gRPC streams only carry the message), so the front checks tier names and empty prompts itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import tritonclient.grpc.aio as grpcclient_aio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from router_client.client import (
    DEFAULT_URL,
    ROUTER_MODEL,
    ROUTER_STREAM_MODEL,
    TIER_MODELS,
    AsyncRouterClient,
    RouteOptions,
    RouterError,
    RouterResult,
    StreamDelta,
)
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

MODEL_NAMES = (ROUTER_MODEL, *TIER_MODELS)
OWNER = "triton-llm-router"
DIRECT_TIER_MAX_TOKENS = 64

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
    """The fields of OpenAI's chat completion request the front uses; the others are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
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


def route_options(body: ChatCompletionRequest) -> RouteOptions:
    """Routing overrides for a request; raises a 404 FrontError for an unknown model."""
    if body.model not in MODEL_NAMES:
        raise FrontError(
            404, f"The model `{body.model}` does not exist. Available: {', '.join(MODEL_NAMES)}",
            param="model", code="model_not_found",
        )  # fmt: skip
    for name in ("min_tier", "max_tier"):
        value = getattr(body, name)
        if value is not None and value not in TIER_MODELS:
            raise FrontError(400, f"{name} must be one of {', '.join(TIER_MODELS)}, not {value!r}", param=name)
    return RouteOptions(
        force_tier=body.model if body.model in TIER_MODELS else None,
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
    """'length' when the answer used the whole max_tokens budget that was asked for, else 'stop'."""
    return "length" if max_tokens is not None and result.completion_tokens >= max_tokens else "stop"


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


@dataclass
class TierPiece:
    """One streamed piece of a direct tier call, with its tokens' log-probs and the running token counts."""

    text: str
    logprobs: list[float]
    input_tokens: int
    output_tokens: int


def _tier_tensor(name: str, value: Any, dtype: Any) -> grpcclient_aio.InferInput:
    array = np.array([[value]], dtype=dtype)
    tensor = grpcclient_aio.InferInput(name, [1, 1], np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array)
    return tensor


async def tier_pieces(
    client: grpcclient_aio.InferenceServerClient, tier: str, prompt: str, max_tokens: int, timeout_s: float
) -> AsyncIterator[TierPiece]:
    """Generate with one tier model directly (gRPC streaming, log-probs on); RouterError on any failure."""
    inputs = [
        _tier_tensor("text_input", prompt.encode("utf-8"), np.object_),
        _tier_tensor("max_tokens", max_tokens, np.int32),
        _tier_tensor("return_log_probs", True, np.bool_),
        _tier_tensor("stream", True, np.bool_),
    ]
    done = asyncio.Event()

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": tier, "inputs": inputs, "parameters": {"triton_enable_empty_final_response": True}}
        await done.wait()

    responses = client.stream_infer(requests(), stream_timeout=timeout_s)
    finished = False
    try:
        async for result, error in responses:
            if error is not None:
                message = error.message() if hasattr(error, "message") else str(error)
                # a streamed error carries no status code: a prompt above the tier's context is the client's fault
                status = "INVALID_ARGUMENT" if "context" in message or "max_tokens" in message else "INTERNAL"
                raise RouterError(f"{tier}: {message}", status)
            response = result.get_response()
            if response.outputs:
                logprobs = result.as_numpy("output_log_probs")
                text = result.as_numpy("text_output")
                yield TierPiece(
                    text=_decode(text),
                    logprobs=[float(x) for x in logprobs.reshape(-1)] if logprobs is not None else [],
                    input_tokens=_int(result.as_numpy("input_tokens")),
                    output_tokens=_int(result.as_numpy("output_tokens")),
                )
            params = response.parameters
            if "triton_final_response" in params and params["triton_final_response"].bool_param:
                finished = True
                return
        raise RouterError(f"the stream from {tier} closed before its final response", "UNAVAILABLE")
    except InferenceServerException as exc:
        raise RouterError.from_triton(exc) from exc
    finally:
        done.set()
        if not finished:
            responses.cancel()


def _decode(value: np.ndarray | None) -> str:
    if value is None or value.size == 0:
        return ""
    item = value.reshape(-1)[0]
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


def _int(value: np.ndarray | None) -> int:
    return int(value.reshape(-1)[0]) if value is not None and value.size else 0


def logprob_entries(piece: TierPiece) -> list[dict[str, Any]]:
    """OpenAI `logprobs.content` entries of one piece: its text on the first token, "" on the others."""
    entries = []
    for i, logprob in enumerate(piece.logprobs):
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


def create_app(triton_url: str = DEFAULT_URL, *, timeout_s: float = 300.0, api_key: str | None = None) -> FastAPI:
    """The FastAPI app; one AsyncRouterClient (one gRPC channel) per app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.router = AsyncRouterClient(triton_url, timeout_s=timeout_s)
        app.state.tiers = grpcclient_aio.InferenceServerClient(triton_url)  # direct tier calls (logprobs)
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
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else str(first.get("msg", exc))
        return FrontError(400, message, param=where or None).response()

    @app.middleware("http")
    async def _check_api_key(request: Request, call_next: Any) -> Any:
        if api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given, f"Bearer {api_key}"):
                return FrontError(
                    401, "invalid or missing API key", "authentication_error", code="invalid_api_key"
                ).response()
        return await call_next(request)

    async def ready_models() -> list[str]:
        try:
            ready = set(await app.state.router.ready_models())
        except RouterError as exc:
            raise FrontError(503, f"Triton at {triton_url} is not reachable: {exc.message}", "server_error") from exc
        if ROUTER_MODEL not in ready:
            return []
        return [name for name in MODEL_NAMES if name in ready]

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
        options = route_options(body)
        prompt = render_messages(body.messages)
        max_tokens = body.max_completion_tokens or body.max_tokens
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        router: AsyncRouterClient = app.state.router
        if body.logprobs and options.force_tier is not None:
            return await direct_tier_completion(body, prompt, completion_id, created)
        if not body.stream:
            try:
                result = await router.route(prompt, max_tokens=max_tokens, options=options)
            except RouterError as exc:
                raise FrontError.from_router(exc) from exc
            return completion_body(result, body.model, completion_id, created, max_tokens)

        events = router.stream(prompt, max_tokens=max_tokens, options=options, model=ROUTER_STREAM_MODEL).__aiter__()
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

    async def direct_tier_completion(body: ChatCompletionRequest, prompt: str, completion_id: str, created: int) -> Any:
        """`logprobs: true` with a tier as the model: call the tier itself (see the module docstring)."""
        tier = body.model
        max_tokens = body.max_completion_tokens or body.max_tokens or DIRECT_TIER_MAX_TOKENS
        pieces = tier_pieces(app.state.tiers, tier, prompt, max_tokens, timeout_s).__aiter__()
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
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--triton-url", default=DEFAULT_URL, help="Triton gRPC endpoint (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per router call")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("ROUTER_FRONT_API_KEY"),
        help="require `Authorization: Bearer KEY` on /v1 (default: $ROUTER_FRONT_API_KEY; none = open)",
    )
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    args = parse_args(argv)
    app = create_app(args.triton_url, timeout_s=args.timeout, api_key=args.api_key)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
