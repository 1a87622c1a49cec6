"""Calls to tiers served outside this Triton server (a policy tier with a `remote:` block, see core.policy.RemoteSpec).

`call_remote_tier` is the remote counterpart of `bls.call_tier`: same TierOutput, same TierCallError statuses
(error | timeout | abandoned), same `on_delta(text, logprobs) -> abandon?` streaming hook, so the router's deadline,
fallback, cost and confidence handling is the same for local and remote tiers.

- kind `triton`: another Triton server over gRPC (tritonclient.grpc.aio, always the streaming RPC, which serves
  decoupled and plain models alike). The remote model's config is read once per (url, model) and decides the input
  shapes ([1, 1] when max_batch_size > 0, e.g. TensorRT-LLM's `ensemble`), which optional inputs are sent
  (`return_log_probs`, `stream` only when declared) and which outputs are asked for. Deltas are streamed only when
  the model is decoupled and declares `stream`.
- kind `openai`: an OpenAI-compatible endpoint (aiohttp, a tritonclient[http] dependency) at `<url>/chat/completions`
  or `<url>/completions`, greedy (temperature 0), with log-probs requested and, when streaming, SSE with
  `stream_options.include_usage`.

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
import json
import math
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from llm_router.core.policy import RemoteSpec, TierSpec
from llm_router.router.bls import TierCallError, TierOutput

OnDelta = Callable[[str, list[float]], bool | None]
CHARS_PER_TOKEN = 4
_FINAL_FLAG = "triton_final_response"
_CONTEXT_REJECTION = re.compile(r"context|too long|maximum.*tokens", re.IGNORECASE)
_TRITON_OUTPUTS = ("text_output", "output_log_probs", "input_tokens", "output_tokens")

_triton_clients: dict[tuple[int, str], Any] = {}
_triton_configs: dict[tuple[str, str], dict[str, Any]] = {}
_http_sessions: dict[int, Any] = {}


def estimate_tokens(text: str) -> int:
    """Token count estimated from text (ceil(chars / 4)); used only when the endpoint reports none."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


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


def _where(spec: TierSpec) -> str:
    assert spec.remote is not None
    return f"{spec.name} (remote {spec.remote.kind} {public_url(spec.remote.url)})"


async def call_remote_tier(
    spec: TierSpec,
    text: str,
    max_tokens: int,
    deadline_s: float,
    stream: bool = False,
    on_delta: OnDelta | None = None,
) -> TierOutput:
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
        output = await asyncio.wait_for(call(spec, text, max_tokens, stream, on_delta, key), timeout=deadline_s)
    except TimeoutError:
        raise TierCallError(f"{_where(spec)} overran its {deadline_s:.2f}s deadline", status="timeout") from None
    except TierCallError as exc:
        reason = exc.reason if exc.reason.startswith(spec.name) else f"{_where(spec)}: {exc.reason}"
        raise TierCallError(
            _redact(reason, key, remote), status=exc.status, rejected_input=exc.rejected_input
        ) from None
    except Exception as exc:  # noqa: BLE001 - any client failure is this tier's failure (fallback)
        reason = f"{_where(spec)} could not be called: {type(exc).__name__}: {exc}"
        raise TierCallError(_redact(reason, key, remote)) from None
    output.latency_ms = (time.monotonic() - started) * 1000
    if not output.input_tokens:
        output.input_tokens = estimate_tokens(text)
    return output


class _Collector:
    """Assembles streamed pieces (or one whole answer) into a TierOutput, filling in missing log-probs."""

    def __init__(self, spec: TierSpec, stream: bool, on_delta: OnDelta | None) -> None:
        assert spec.remote is not None
        self.name = spec.name
        self.fill = spec.remote.confidence_when_missing
        self.stream = stream
        self.on_delta = on_delta
        self.pieces: list[str] = []
        self.logprobs: list[float] = []
        self.input_tokens = 0
        self.output_tokens = 0

    def add(self, text: str, logprobs: list[float] | None) -> None:
        """One piece of the answer (the whole answer when not streaming); None = the endpoint sent no log-probs."""
        if logprobs is None:
            logprobs = [self.fill] * estimate_tokens(text) if self.fill is not None and text else []
        if self.stream:
            self.pieces.append(text)
            self.logprobs.extend(logprobs)
        elif text or logprobs:
            self.pieces, self.logprobs = [text], list(logprobs)
        if self.on_delta is not None and (text or logprobs) and self.on_delta(text, logprobs):
            raise TierCallError(f"{self.name} abandoned after {len(self.logprobs)} tokens", status="abandoned")

    def output(self) -> TierOutput:
        text = "".join(self.pieces)
        output_tokens = self.output_tokens or len(self.logprobs) or estimate_tokens(text)
        return TierOutput(
            text=text,
            token_logprobs=self.logprobs,
            input_tokens=self.input_tokens,
            output_tokens=output_tokens,
            latency_ms=0.0,
            deltas=self.pieces if self.stream else [],
        )


# -- kind: triton ------------------------------------------------------------------------------------------------------


def _triton_client(url: str) -> Any:
    import tritonclient.grpc.aio as grpcclient_aio

    key = (id(asyncio.get_running_loop()), url)
    client = _triton_clients.get(key)
    if client is None:
        client = _triton_clients[key] = grpcclient_aio.InferenceServerClient(url)
    return client


def _np_dtype(data_type: str) -> Any:
    from tritonclient.utils import triton_to_np_dtype

    name = data_type.removeprefix("TYPE_")
    return triton_to_np_dtype("BYTES" if name == "STRING" else name)


def _first_text(value: np.ndarray | None) -> str:
    if value is None or value.size == 0:
        return ""
    item = value.reshape(-1)[0]
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


def _first_int(value: np.ndarray | None) -> int:
    return int(value.reshape(-1)[0]) if value is not None and value.size else 0


async def _call_triton(
    spec: TierSpec, text: str, max_tokens: int, stream: bool, on_delta: OnDelta | None, key: str | None
) -> TierOutput:
    import tritonclient.grpc.aio as grpcclient_aio
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    remote = spec.remote
    assert remote is not None
    model = remote.model or spec.name
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
    if "text_input" not in declared or "text_output" not in outputs:
        raise TierCallError(f"model {model!r} lacks the text_input / text_output interface of a tier")
    decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled", False))
    streaming = stream and decoupled and "stream" in declared
    shape = [1, 1] if int(config.get("max_batch_size", 0)) > 0 else [1]
    values: dict[str, Any] = {"text_input": text.encode("utf-8"), "max_tokens": max_tokens}
    if "return_log_probs" in declared:
        values["return_log_probs"] = True
    if "stream" in declared:
        values["stream"] = streaming
    inputs = []
    for name, value in values.items():
        if name not in declared:
            continue
        dtype = _np_dtype(declared[name]["data_type"])
        array = np.array([value], dtype=dtype).reshape(shape)
        tensor = grpcclient_aio.InferInput(name, shape, np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    requested = [grpcclient_aio.InferRequestedOutput(n) for n in _TRITON_OUTPUTS if n in outputs]
    done = asyncio.Event()

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {
            "model_name": model,
            "inputs": inputs,
            "outputs": requested,
            "parameters": {"triton_enable_empty_final_response": True},
        }
        await done.wait()  # our side of the stream stays open until the final response

    collector = _Collector(spec, streaming, on_delta)
    responses = client.stream_infer(requests(), headers=headers)
    try:
        async for result, error in responses:
            if error is not None:
                _triton_configs.pop((remote.url, model), None)  # the model may have changed: re-read its config
                message = error.message() if hasattr(error, "message") else str(error)
                status = error.status() if hasattr(error, "status") else None
                raise TierCallError(
                    f"failed: {message}",
                    rejected_input=status == "StatusCode.INVALID_ARGUMENT"
                    or bool(re.search(r"this model's context", message)),
                )
            response = result.get_response()
            if response.outputs:
                logprobs = result.as_numpy("output_log_probs") if "output_log_probs" in outputs else None
                collector.add(
                    _first_text(result.as_numpy("text_output")),
                    [float(x) for x in logprobs.reshape(-1)] if logprobs is not None else None,
                )
                collector.input_tokens = _first_int(result.as_numpy("input_tokens")) or collector.input_tokens
                reported = _first_int(result.as_numpy("output_tokens"))
                collector.output_tokens = reported or collector.output_tokens
            params = response.parameters
            if (_FINAL_FLAG in params and params[_FINAL_FLAG].bool_param) or not decoupled:
                break
        else:
            raise TierCallError("the stream closed before the final response")
    finally:
        done.set()
        responses.cancel()  # nothing more is read: a timed-out or abandoned generation is cancelled remotely
    if collector.logprobs and collector.output_tokens < len(collector.logprobs):
        collector.output_tokens = len(collector.logprobs)
    return collector.output()


# -- kind: openai ------------------------------------------------------------------------------------------------------


def _http_session() -> Any:
    import aiohttp

    key = id(asyncio.get_running_loop())
    session = _http_sessions.get(key)
    if session is None or session.closed:
        session = _http_sessions[key] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
    return session


def openai_request_body(remote: RemoteSpec, model: str, text: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    """The JSON body for /chat/completions (api chat) or /completions (api completions), log-probs requested."""
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    if remote.api == "chat":
        body.update(messages=[{"role": "user", "content": text}], logprobs=True)
    else:
        body.update(prompt=text, logprobs=1)
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
    spec: TierSpec, text: str, max_tokens: int, stream: bool, on_delta: OnDelta | None, key: str | None
) -> TierOutput:
    remote = spec.remote
    assert remote is not None
    model = remote.model or spec.name
    path = "/chat/completions" if remote.api == "chat" else "/completions"
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    body = openai_request_body(remote, model, text, max_tokens, stream)
    collector = _Collector(spec, stream, on_delta)
    async with _http_session().post(remote.url.rstrip("/") + path, json=body, headers=headers) as response:
        if response.status != 200:
            raw = await response.text()
            try:
                message = _error_message(json.loads(raw), raw[:300])
            except ValueError:
                message = raw[:300]
            raise TierCallError(
                f"HTTP {response.status}: {message}",
                rejected_input=response.status == 400 and bool(_CONTEXT_REJECTION.search(message)),
            )
        if not stream:
            payload = await response.json(content_type=None)
            choices = payload.get("choices") or []
            if not choices:
                raise TierCallError(_error_message(payload, "the response has no choices"))
            collector.add(*openai_choice_piece(choices[0], remote.api, streamed=False))
            _usage(collector, payload.get("usage"))
            return collector.output()
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
                    if piece or logprobs:
                        collector.add(piece, logprobs)
        if not finished:
            raise TierCallError("the event stream closed before [DONE]")
    return collector.output()


def _usage(collector: _Collector, usage: Any) -> None:
    if isinstance(usage, dict):
        collector.input_tokens = int(usage.get("prompt_tokens") or collector.input_tokens)
        collector.output_tokens = int(usage.get("completion_tokens") or collector.output_tokens)
