"""Calls to tiers served outside this Triton server (a policy tier with a `remote:` block, see core.policy.RemoteSpec).

`call_remote_tier` is the remote counterpart of `bls.call_tier`: same TierAnswer, same TierCallError statuses
(error | timeout | abandoned), same `on_delta(text, logprobs) -> abandon?` streaming hook, so the router's deadline,
fallback, cost and confidence handling is the same for local and remote tiers.

- kind `triton`: another Triton server over gRPC (tritonclient.grpc.aio, always the streaming RPC, which serves
  decoupled and plain models alike). The remote model's config is read once per (url, model) and decides the input
  shapes ([1, 1] when max_batch_size > 0, e.g. TensorRT-LLM's `ensemble`), which optional inputs are sent
  (`return_log_probs`, `stream`, `messages`, `raw` only when declared) and which outputs are asked for. A
  conversation goes to the model's `messages` input when it declares one, else flattened into `text_input`. Deltas
  are streamed only when the model is decoupled and declares `stream`. The gRPC channel keeps tritonclient's default
  arguments and balances round_robin over every address the host name resolves to (`grpc_channel_args`).
- kind `openai`: an OpenAI-compatible endpoint (aiohttp, a tritonclient[http] dependency) at `<url>/chat/completions`
  or `<url>/completions`, greedy (temperature 0), with log-probs requested and, when streaming, SSE with
  `stream_options.include_usage`; a conversation is sent as chat messages (api chat) or flattened (api completions).

Token counts: the endpoint's own (`input_tokens`/`output_tokens` outputs, OpenAI `usage`); otherwise output tokens =
number of log-probs returned; otherwise estimated as ceil(characters / 4) (OpenAI's rule of thumb for English) for
the prompt and the answer. Cost is the policy's prices times these counts, as for local tiers.

Confidence: from the returned per-token log-probs. An endpoint that returns none gets the tier's
`remote.confidence_when_missing` as a constant per-token log-prob (one per output token), so the mean / min /
first-k confidence functions score the answer exactly that value and the streaming hold-back counts tokens as
usual. Unset, no log-probs are filled in and the answer scores -inf (it escalates whenever a larger tier is allowed).

Secrets: the API key is read from `os.environ[api_key_env]` at call time and sent only as a request header
(`Authorization: Bearer`; gRPC metadata for kind triton). Every reason that reaches the route trace or the log passes
through `_redact` (the key, and user:password@ or query strings of the URL, are removed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from llm_router.core.policy import RemoteSpec, TierSpec
from llm_router.protocol import (
    ANSWER_OUTPUTS,
    MESSAGES,
    RAW,
    STREAM,
    TEXT_INPUT,
    TEXT_OUTPUT,
    OnPiece,
    PieceCollector,
    StreamClosedError,
    TierAnswer,
    estimate_tokens,
    is_input_rejection,
    stream_results,
    tier_piece,
    tier_request_arrays,
)
from llm_router.router.conversation import Prompt
from llm_router.router.errors import TierCallError

_triton_clients: dict[tuple[int, str], Any] = {}
_triton_configs: dict[tuple[str, str], dict[str, Any]] = {}
_http_sessions: dict[int, Any] = {}


def public_url(url: str) -> str:
    """The URL without user:password@, query or fragment (what may appear in traces and logs)."""
    if "://" not in url:
        return url.rpartition("@")[2]
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def api_key(remote: RemoteSpec) -> str | None:
    """The API key named by `api_key_env`, read now; TierCallError if the variable is unset or empty."""
    if remote.api_key_env is None:
        return None
    value = os.environ.get(remote.api_key_env, "")
    if not value:
        raise TierCallError(f"environment variable {remote.api_key_env} (remote.api_key_env) is not set")
    return value


def _redact(message: str, key: str | None, remote: RemoteSpec) -> str:
    if key:
        message = message.replace(key, "***")
    if remote.url != public_url(remote.url):
        message = message.replace(remote.url, public_url(remote.url))
    return message


def _target(spec: TierSpec) -> tuple[RemoteSpec, str]:
    """A remote tier's remote block and the model to ask it for (the tier's own name unless `model` is set)."""
    assert spec.remote is not None
    return spec.remote, spec.remote.model or spec.name


def _where(spec: TierSpec) -> str:
    assert spec.remote is not None
    return f"{spec.name} (remote {spec.remote.kind} {public_url(spec.remote.url)})"


async def call_remote_tier(
    spec: TierSpec,
    prompt: Prompt,
    max_tokens: int,
    deadline_s: float,
    stream: bool = False,
    on_delta: OnPiece | None = None,
) -> TierAnswer:
    """Generate with the remote tier `spec` within `deadline_s`; the remote twin of `bls.call_tier`.

    Raises TierCallError(status="timeout" | "error" | "abandoned") with a reason free of secrets.
    """
    remote = spec.remote
    if remote is None:
        raise ValueError(f"tier {spec.name} has no remote block")
    started = time.monotonic()
    key: str | None = None
    try:
        key = api_key(remote)
        call = _call_triton if remote.kind == "triton" else _call_openai
        output = await asyncio.wait_for(call(spec, prompt, max_tokens, stream, on_delta, key), timeout=deadline_s)
    except TimeoutError:
        raise TierCallError(f"{_where(spec)} overran its {deadline_s:.2f}s deadline", status="timeout") from None
    except TierCallError as exc:
        reason = exc.reason if exc.reason.startswith(spec.name) else f"{_where(spec)}: {exc.reason}"
        if exc.partial is not None:
            exc.partial.latency_ms = (time.monotonic() - started) * 1000
            exc.partial.input_tokens = exc.partial.input_tokens or estimate_tokens(prompt.flat_text)
        raise TierCallError(
            _redact(reason, key, remote), status=exc.status, rejected_input=exc.rejected_input, partial=exc.partial
        ) from None
    except Exception as exc:  # noqa: BLE001 - any client failure is this tier's failure (fallback)
        reason = f"{_where(spec)} could not be called: {type(exc).__name__}: {exc}"
        raise TierCallError(_redact(reason, key, remote)) from None
    output.latency_ms = (time.monotonic() - started) * 1000
    if not output.input_tokens:
        output.input_tokens = estimate_tokens(prompt.flat_text)
    return output


def _collector(spec: TierSpec, stream: bool, on_delta: OnPiece | None) -> PieceCollector:
    assert spec.remote is not None
    return PieceCollector(stream, fill_logprob=spec.remote.confidence_when_missing, on_piece=on_delta)


def _add(collector: PieceCollector, spec: TierSpec, text: str, logprobs: list[float] | None) -> None:
    if collector.add(text, logprobs):
        reason = f"{spec.name} abandoned after {len(collector.logprobs)} tokens"
        raise TierCallError(reason, status="abandoned", partial=collector.answer())


# -- kind: triton ------------------------------------------------------------------------------------------------------


LB_POLICY_ENV = "ROUTER_GRPC_LB_POLICY"


def grpc_channel_args() -> list[tuple[str, Any]]:
    """tritonclient's default channel arguments (message sizes, keep-alive) plus a load-balancing policy:
    round_robin spreads calls over every address the name resolves to (a Kubernetes headless Service), where gRPC's
    default pick_first would pin one pod; ROUTER_GRPC_LB_POLICY overrides it."""
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

    keepalive = KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.lb_policy_name", os.environ.get(LB_POLICY_ENV, "round_robin")),
    ]


def _triton_client(url: str) -> Any:
    import tritonclient.grpc.aio as grpcclient_aio

    key = (id(asyncio.get_running_loop()), url)
    client = _triton_clients.get(key)
    if client is None:
        client = grpcclient_aio.InferenceServerClient(url, channel_args=grpc_channel_args())
        _triton_clients[key] = client
    return client


def _np_dtype(data_type: str) -> Any:
    from tritonclient.utils import triton_to_np_dtype

    name = data_type.removeprefix("TYPE_")
    return triton_to_np_dtype("BYTES" if name == "STRING" else name)


async def _call_triton(
    spec: TierSpec, prompt: Prompt, max_tokens: int, stream: bool, on_delta: OnPiece | None, key: str | None
) -> TierAnswer:
    import tritonclient.grpc.aio as grpcclient_aio
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    remote, model = _target(spec)
    client = _triton_client(remote.url)
    headers = {"authorization": f"Bearer {key}"} if key else None
    config = _triton_configs.get((remote.url, model))
    if config is None:
        try:
            config = (await client.get_model_config(model, headers=headers, as_json=True))["config"]
        except InferenceServerException as exc:
            raise TierCallError(f"model {model!r} is not available: {exc.message()}") from None
        _triton_configs[(remote.url, model)] = config
    declared = {item["name"]: item for item in config.get("input", [])}
    outputs = {item["name"] for item in config.get("output", [])}
    if TEXT_INPUT not in declared or TEXT_OUTPUT not in outputs:
        raise TierCallError(f"model {model!r} lacks the text_input / text_output interface of a tier")
    decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled", False))
    streaming = stream and decoupled and STREAM in declared
    # a conversation goes to the model's own `messages` input when it declares one, else as one flattened prompt
    conversation = prompt.messages if MESSAGES in declared else None
    text = "" if conversation is not None else prompt.flat_text
    raw = prompt.raw and RAW in declared
    batched = int(config.get("max_batch_size", 0)) > 0
    arrays = tier_request_arrays(text, max_tokens, streaming, batched, messages=conversation, raw=raw)
    inputs = []
    for name, array in arrays.items():
        if name not in declared:  # only the optional inputs the model declares, in the types it declares
            continue
        typed = array.astype(_np_dtype(declared[name]["data_type"]))
        tensor = grpcclient_aio.InferInput(name, list(typed.shape), np_to_triton_dtype(typed.dtype))
        tensor.set_data_from_numpy(typed)
        inputs.append(tensor)
    request = {
        "model_name": model,
        "inputs": inputs,
        "outputs": [grpcclient_aio.InferRequestedOutput(n) for n in ANSWER_OUTPUTS if n in outputs],
    }
    collector = _collector(spec, streaming, on_delta)
    results = stream_results(client, request, decoupled=decoupled, headers=headers)
    try:
        async with contextlib.aclosing(results):
            async for result in results:
                if not result.get_response().outputs:
                    continue
                # an output the model does not declare is not asked for, so it reads as absent
                piece = tier_piece(result.as_numpy)
                collector.counts(piece.input_tokens, piece.output_tokens)
                _add(collector, spec, piece.text, piece.logprobs)
    except InferenceServerException as exc:
        _triton_configs.pop((remote.url, model), None)  # the model may have changed: re-read its config
        message = exc.message() or str(exc)
        raise TierCallError(f"failed: {message}", rejected_input=is_input_rejection(exc.status(), message)) from None
    except StreamClosedError:
        raise TierCallError("the stream closed before the final response") from None
    return collector.answer()


# -- kind: openai ------------------------------------------------------------------------------------------------------


def _http_session() -> Any:
    import aiohttp

    key = id(asyncio.get_running_loop())
    session = _http_sessions.get(key)
    if session is None or session.closed:
        session = _http_sessions[key] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
    return session


def openai_request_body(
    remote: RemoteSpec, model: str, prompt: Prompt | str, max_tokens: int, stream: bool
) -> dict[str, Any]:
    """The JSON body for /chat/completions (api chat: the conversation's messages, or the prompt as one user
    message) or /completions (api completions: the prompt, a conversation flattened), log-probs requested."""
    prompt = Prompt(prompt) if isinstance(prompt, str) else prompt
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    if remote.api == "chat":
        if prompt.conversation is not None:
            messages = [dict(m) for m in prompt.conversation.messages]
        else:
            messages = [{"role": "user", "content": prompt.text}]
        body.update(messages=messages, logprobs=True)
    else:
        body.update(prompt=prompt.flat_text, logprobs=1)
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def openai_choice_piece(choice: dict[str, Any], api: str, streamed: bool) -> tuple[str, list[float] | None]:
    """(text, per-token log-probs or None when absent) of one choice of a response or stream chunk."""
    if api == "chat":
        message = choice.get("delta" if streamed else "message") or {}
        text = message.get("content") or ""
        content = (choice.get("logprobs") or {}).get("content")
        logprobs = [float(t["logprob"]) for t in content if t.get("logprob") is not None] if content else None
    else:
        text = choice.get("text") or ""
        values = (choice.get("logprobs") or {}).get("token_logprobs")
        logprobs = [float(v) for v in values if v is not None] if values else None
    return text, logprobs


def _error_message(payload: Any, fallback: str) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return str(payload["error"].get("message") or fallback)
    return fallback


async def _call_openai(
    spec: TierSpec, prompt: Prompt, max_tokens: int, stream: bool, on_delta: OnPiece | None, key: str | None
) -> TierAnswer:
    remote, model = _target(spec)
    path = "/chat/completions" if remote.api == "chat" else "/completions"
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    body = openai_request_body(remote, model, prompt, max_tokens, stream)
    collector = _collector(spec, stream, on_delta)
    async with _http_session().post(remote.url.rstrip("/") + path, json=body, headers=headers) as response:
        if response.status != 200:
            raw = await response.text()
            try:
                message = _error_message(json.loads(raw), raw[:300])
            except ValueError:
                message = raw[:300]
            raise TierCallError(
                f"HTTP {response.status}: {message}",
                rejected_input=is_input_rejection(str(response.status), message),
            )
        if not stream:
            payload = await response.json(content_type=None)
            choices = payload.get("choices") or []
            if not choices:
                raise TierCallError(_error_message(payload, "the response has no choices"))
            _add(collector, spec, *openai_choice_piece(choices[0], remote.api, streamed=False))
            _usage(collector, payload.get("usage"))
            return collector.answer()
        finished = False
        async for raw_line in response.content:
            line = raw_line.decode("utf-8", errors="replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                finished = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise TierCallError(f"failed while streaming: {_error_message(chunk, 'error event')}")
            _usage(collector, chunk.get("usage"))
            for choice in chunk.get("choices") or []:
                if choice.get("index", 0) == 0:
                    piece, logprobs = openai_choice_piece(choice, remote.api, streamed=True)
                    _add(collector, spec, piece, logprobs)
        if not finished:
            raise TierCallError("the event stream closed before [DONE]")
    return collector.answer()


def _usage(collector: PieceCollector, usage: Any) -> None:
    if isinstance(usage, dict):
        collector.counts(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
