"""Python clients for the `router` (unary) and `router_stream` (decoupled) Triton models, over gRPC.

    from router_client.client import RouterClient, RouteOptions

    with RouterClient("localhost:8001") as client:
        result = client.route("Summarize: ...", max_tokens=64, options=RouteOptions(max_tier="tier_medium"))
        print(result.tier, result.cost, result.text)
        for event in client.stream("Write a haiku about GPUs"):
            if isinstance(event, StreamDelta):
                print(event.text, end="", flush=True)
            else:  # the last event is the RouterResult
                print(f"\\n[{event.tier}, ${event.cost:.6f}]")

`AsyncRouterClient` has the same methods as coroutines / async generators (tritonclient.grpc.aio).
Every error the server (or the connection) reports is raised as `RouterError` with the server's message.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from tritonclient.utils import InferenceServerException

DEFAULT_URL = "localhost:8001"
ROUTER_MODEL = "router"
ROUTER_STREAM_MODEL = "router_stream"
TIER_MODELS = ("tier_small", "tier_medium", "tier_large")
DEFAULT_TIMEOUT_S = 300.0

_FINAL_FLAG = "triton_final_response"
_ENABLE_EMPTY_FINAL = "triton_enable_empty_final_response"


class RouterError(RuntimeError):
    """The server (or the connection to it) reported an error; `message` is the server's own text."""

    def __init__(self, message: str, status: str | None = None) -> None:
        self.message = message
        self.status = status
        super().__init__(f"{status}: {message}" if status else message)

    @classmethod
    def from_triton(cls, exc: InferenceServerException) -> RouterError:
        status = exc.status()
        if status and status.startswith("StatusCode."):
            status = status[len("StatusCode.") :]
        return cls(exc.message() or str(exc), status or None)

    @classmethod
    def from_grpc(cls, exc: grpc.RpcError) -> RouterError:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else None
        return cls(details or str(exc), code.name if code is not None else None)


@dataclass(frozen=True)
class RouteOptions:
    """Per-request routing overrides, sent as Triton request parameters (see the router interface)."""

    force_tier: str | None = None
    min_tier: str | None = None
    max_tier: str | None = None
    confidence_threshold: float | None = None
    return_trace: bool = False

    def parameters(self) -> dict[str, str | float | bool]:
        """The request parameters for tritonclient: only the overrides that are set."""
        params: dict[str, str | float | bool] = {}
        for name in ("force_tier", "min_tier", "max_tier"):
            value = getattr(self, name)
            if value:
                params[name] = value
        if self.confidence_threshold is not None:
            params["confidence_threshold"] = float(self.confidence_threshold)
        if self.return_trace:
            params["return_trace"] = True
        return params


@dataclass(frozen=True)
class StreamDelta:
    """A piece of the answer from `router_stream`, from the tier that will answer."""

    text: str
    tier: str


@dataclass(frozen=True)
class RouterResult:
    """The router's answer and how it was produced."""

    text: str
    tier: str
    escalated: bool
    cost: float
    route: dict[str, Any] = field(default_factory=dict)
    latency_ms: float = 0.0

    @property
    def intent(self) -> str | None:
        return self.route.get("intent")

    def final_attempt(self) -> dict[str, Any] | None:
        """The trace entry of the answer that was returned (the last ok attempt of the final tier)."""
        attempts = [a for a in self.route.get("attempts", []) if isinstance(a, dict)]
        for attempt in reversed(attempts):
            if attempt.get("tier") == self.tier and attempt.get("status", "ok") == "ok":
                return attempt
        return None

    @property
    def prompt_tokens(self) -> int:
        """Input tokens of the tier that answered (0 when the route has no token counts)."""
        attempt = self.final_attempt()
        return int(attempt.get("input_tokens") or 0) if attempt else 0

    @property
    def completion_tokens(self) -> int:
        """Output tokens of the tier that answered (0 when the route has no token counts)."""
        attempt = self.final_attempt()
        return int(attempt.get("output_tokens") or 0) if attempt else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tier": self.tier,
            "escalated": self.escalated,
            "cost": self.cost,
            "latency_ms": round(self.latency_ms, 3),
            "route": self.route,
        }


StreamEvent = StreamDelta | RouterResult


# -- request building and response decoding (pure) ----


def build_inputs(prompt: str, max_tokens: int | None = None) -> list[grpcclient.InferInput]:
    """The router's input tensors: `text_input` BYTES [1] and, when given, `max_tokens` INT32 [1]."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    text = grpcclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt.encode("utf-8")], dtype=np.object_))
    inputs = [text]
    if max_tokens is not None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        tokens = grpcclient.InferInput("max_tokens", [1], "INT32")
        tokens.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
        inputs.append(tokens)
    return inputs


def _scalar(outputs: Mapping[str, np.ndarray | None], name: str) -> Any:
    array = outputs.get(name)
    if array is None or array.size == 0:
        return None
    value = array.reshape(-1)[0]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value.item() if isinstance(value, np.generic) else value


def decode_text(outputs: Mapping[str, np.ndarray | None]) -> str:
    """`text_output` as str ('' when absent)."""
    return _scalar(outputs, "text_output") or ""


def decode_result(outputs: Mapping[str, np.ndarray | None], text: str | None = None) -> RouterResult:
    """A RouterResult from the router's output tensors (name -> numpy array); `text` replaces text_output."""
    tier = _scalar(outputs, "tier")
    if tier is None:
        raise RouterError("the router's response has no `tier` output", "INTERNAL")
    route_json = _scalar(outputs, "route")
    try:
        route = json.loads(route_json) if route_json else {}
    except json.JSONDecodeError as exc:
        raise RouterError(f"the router's `route` output is not JSON: {exc}", "INTERNAL") from exc
    cost = _scalar(outputs, "cost")
    escalated = _scalar(outputs, "escalated")
    return RouterResult(
        text=decode_text(outputs) if text is None else text,
        tier=str(tier),
        escalated=bool(escalated) if escalated is not None else False,
        cost=float(cost) if cost is not None else 0.0,
        route=route if isinstance(route, dict) else {"value": route},
    )


def _outputs_of(result: grpcclient.InferResult) -> dict[str, np.ndarray | None]:
    response = result.get_response()
    return {out.name: result.as_numpy(out.name) for out in response.outputs}


def _is_final(result: grpcclient.InferResult) -> bool:
    params = result.get_response().parameters
    return _FINAL_FLAG in params and params[_FINAL_FLAG].bool_param


class StreamAssembler:
    """Turns the responses of one `router_stream` request into StreamDelta events and a RouterResult."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.result: RouterResult | None = None

    def feed(self, outputs: Mapping[str, np.ndarray | None], final: bool) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        text = decode_text(outputs)
        tier = _scalar(outputs, "tier")
        carries_result = any(_scalar(outputs, name) is not None for name in ("cost", "route"))
        if text:
            self.parts.append(text)
            events.append(StreamDelta(text, str(tier or "")))
        if carries_result:
            self.result = decode_result(outputs, text="".join(self.parts))
            events.append(self.result)
        elif final and outputs:
            raise RouterError("router_stream ended without its final response (tier, cost, route)", "INTERNAL")
        return events

    @property
    def done(self) -> bool:
        return self.result is not None


# -- sync client ----


class RouterClient:
    """Blocking client. Safe to share between threads for `route`; one `stream` at a time per client."""

    def __init__(self, url: str = DEFAULT_URL, *, timeout_s: float = DEFAULT_TIMEOUT_S, verbose: bool = False):
        self.url = url
        self.timeout_s = timeout_s
        try:
            self._client = grpcclient.InferenceServerClient(url, verbose=verbose)
        except InferenceServerException as exc:
            raise RouterError.from_triton(exc) from exc
        self._stream_lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RouterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_ready(self, model: str = ROUTER_MODEL) -> bool:
        try:
            return bool(self._client.is_model_ready(model, client_timeout=10))
        except InferenceServerException:
            return False

    def route(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        options: RouteOptions | None = None,
        model: str = ROUTER_MODEL,
    ) -> RouterResult:
        """One unary call to `router`."""
        inputs = build_inputs(prompt, max_tokens)
        started = time.perf_counter()
        try:
            result = self._client.infer(
                model,
                inputs,
                parameters=(options or RouteOptions()).parameters() or None,
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            raise RouterError.from_triton(exc) from exc
        decoded = decode_result(_outputs_of(result))
        return _with_latency(decoded, started)

    def stream(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        options: RouteOptions | None = None,
        model: str = ROUTER_STREAM_MODEL,
    ) -> Iterator[StreamEvent]:
        """Call `router_stream`: yields StreamDelta events as they arrive, then the RouterResult."""
        inputs = build_inputs(prompt, max_tokens)
        responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        started = time.perf_counter()
        with self._stream_lock:
            finished = False
            try:
                self._client.start_stream(
                    callback=lambda result=None, error=None: responses.put((result, error)),
                    stream_timeout=self.timeout_s,
                )
                self._client.async_stream_infer(
                    model,
                    inputs,
                    parameters=(options or RouteOptions()).parameters() or None,
                    enable_empty_final_response=True,
                )
                assembler = StreamAssembler()
                while True:
                    try:
                        result, error = responses.get(timeout=self.timeout_s)
                    except queue.Empty:
                        raise RouterError(
                            f"no response from {model} within {self.timeout_s:g}s", "DEADLINE_EXCEEDED"
                        ) from None
                    if error is not None:
                        raise RouterError.from_triton(error)
                    final = _is_final(result)
                    for event in assembler.feed(_outputs_of(result), final):
                        yield _with_latency(event, started) if isinstance(event, RouterResult) else event
                    if final:
                        if not assembler.done:
                            raise RouterError(f"{model} ended without its final response", "INTERNAL")
                        finished = True
                        return
            except InferenceServerException as exc:
                raise RouterError.from_triton(exc) from exc
            finally:
                self._client.stop_stream(cancel_requests=not finished)


def _with_latency(result: RouterResult, started: float) -> RouterResult:
    return replace(result, latency_ms=(time.perf_counter() - started) * 1000)


# -- asyncio client ----


class AsyncRouterClient:
    """asyncio client (tritonclient.grpc.aio); any number of concurrent `route` and `stream` calls."""

    def __init__(self, url: str = DEFAULT_URL, *, timeout_s: float = DEFAULT_TIMEOUT_S, verbose: bool = False):
        self.url = url
        self.timeout_s = timeout_s
        try:
            self._client = grpcclient_aio.InferenceServerClient(url, verbose=verbose)
        except InferenceServerException as exc:
            raise RouterError.from_triton(exc) from exc

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncRouterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def is_ready(self, model: str = ROUTER_MODEL) -> bool:
        try:
            return bool(await self._client.is_model_ready(model, client_timeout=10))
        except InferenceServerException:
            return False

    async def ready_models(self) -> list[str]:
        """Names of the models that are loaded and ready on the server."""
        try:
            index = await self._client.get_model_repository_index(as_json=True, client_timeout=10)
        except InferenceServerException as exc:
            raise RouterError.from_triton(exc) from exc
        return sorted({m["name"] for m in index.get("models", []) if m.get("state") == "READY"})

    async def route(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        options: RouteOptions | None = None,
        model: str = ROUTER_MODEL,
    ) -> RouterResult:
        inputs = build_inputs(prompt, max_tokens)
        started = time.perf_counter()
        try:
            result = await self._client.infer(
                model,
                inputs,
                parameters=(options or RouteOptions()).parameters() or None,
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            raise RouterError.from_triton(exc) from exc
        return _with_latency(decode_result(_outputs_of(result)), started)

    async def stream(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        options: RouteOptions | None = None,
        model: str = ROUTER_STREAM_MODEL,
    ) -> AsyncIterator[StreamEvent]:
        """Call `router_stream`: yields StreamDelta events as they arrive, then the RouterResult."""
        inputs = build_inputs(prompt, max_tokens)
        parameters: dict[str, Any] = {**(options or RouteOptions()).parameters(), _ENABLE_EMPTY_FINAL: True}
        done = asyncio.Event()

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": model, "inputs": inputs, "parameters": parameters}
            await done.wait()  # keep our side of the stream open until the final response arrived

        started = time.perf_counter()
        try:
            responses = self._client.stream_infer(requests(), stream_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise RouterError.from_triton(exc) from exc
        assembler = StreamAssembler()
        try:
            async for result, error in responses:
                if error is not None:
                    raise RouterError.from_triton(error)
                final = _is_final(result)
                for event in assembler.feed(_outputs_of(result), final):
                    yield _with_latency(event, started) if isinstance(event, RouterResult) else event
                if final:
                    if not assembler.done:
                        raise RouterError(f"{model} ended without its final response", "INTERNAL")
                    return
            raise RouterError(f"the stream from {model} closed before its final response", "UNAVAILABLE")
        except InferenceServerException as exc:
            raise RouterError.from_triton(exc) from exc
        except grpc.RpcError as exc:
            raise RouterError.from_grpc(exc) from exc
        finally:
            done.set()
            if not assembler.done:
                responses.cancel()
