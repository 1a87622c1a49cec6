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

Tier names are the server's: `server_tiers(url)` (or `client.tiers()`) lists them cheapest first (see `tiers()`).
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypedDict, Unpack

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from llm_router.core.decide import Overrides
from llm_router.protocol import (
    StreamClosedError,
    first_value,
    is_final,
    missing_tier_interface,
    stream_results,
)
from tritonclient.utils import InferenceServerException

DEFAULT_URL = "localhost:8001"
ROUTER_MODEL = "router"
ROUTER_STREAM_MODEL = "router_stream"
DEFAULT_TIMEOUT_S = 300.0
DESCRIBE_POLICY = {"describe_policy": True}  # the router answers with its policy instead of routing


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
class RouteOptions(Overrides):
    """Per-request routing overrides, sent as Triton request parameters (see the router interface): the router's
    Overrides (force_tier, min_tier, max_tier, confidence_threshold; it checks them against its policy) and
    return_trace."""

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
        """The trace entry of the answer that was returned (the last attempt of the final tier)."""
        attempts = [a for a in self.route.get("attempts", []) if isinstance(a, dict)]
        return next((a for a in reversed(attempts) if a.get("tier") == self.tier), None)

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


Messages = Sequence[Mapping[str, Any]]


def messages_json(messages: Messages) -> str:
    """The router's `messages` input: an OpenAI-style conversation as one JSON list of {"role", "content"} objects."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ValueError('messages must be a non-empty list of {"role": ..., "content": ...} objects')
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise ValueError(f'messages[{index}] must be an object with a string "role" (and a "content")')
    return json.dumps(list(messages), ensure_ascii=False)


class RequestArgs(TypedDict, total=False):
    """The keyword arguments that `route` and `stream` (of both clients) take besides `prompt` and `model`."""

    max_tokens: int | None  # answer length cap (the policy caps it per tier too)
    options: RouteOptions | None  # per-request routing overrides
    messages: Messages | None  # an OpenAI-style conversation instead of a prompt (see build_inputs)
    request_id: str | None  # the Triton request id: the route trace's request_id and the outcome records' prompt_id


def _request(
    prompt: str,
    max_tokens: int | None = None,
    options: RouteOptions | None = None,
    messages: Messages | None = None,
    request_id: str | None = None,
) -> tuple[list[grpcclient.InferInput], dict[str, str | float | bool], str]:
    """One route/stream call's input tensors, request parameters and request id ("": the router makes one up)
    (RequestArgs are its keyword arguments)."""
    return build_inputs(prompt, max_tokens, messages), (options or RouteOptions()).parameters(), request_id or ""


@contextlib.contextmanager
def _server_errors() -> Iterator[None]:
    """Raise what the server (or the connection) reports as RouterError."""
    try:
        yield
    except InferenceServerException as exc:
        raise RouterError.from_triton(exc) from exc


def _bytes_input(name: str, value: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value.encode("utf-8")], dtype=np.object_))
    return tensor


def build_inputs(
    prompt: str, max_tokens: int | None = None, messages: Messages | None = None
) -> list[grpcclient.InferInput]:
    """The router's input tensors: `text_input` BYTES [1], and when given `max_tokens` INT32 [1] and `messages`
    BYTES [1] (a conversation as JSON, which the tiers render with their chat templates; `prompt` is then "")."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    if messages is not None and prompt:
        raise ValueError("send either a prompt or messages, not both")
    inputs = [_bytes_input("text_input", prompt)]
    if messages is not None:
        inputs.append(_bytes_input("messages", messages_json(messages)))
    if max_tokens is not None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        tokens = grpcclient.InferInput("max_tokens", [1], "INT32")
        tokens.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
        inputs.append(tokens)
    return inputs


def _scalar(outputs: Mapping[str, np.ndarray | None], name: str) -> Any:
    return first_value(outputs.get(name))


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
    cost = _shortest_float(outputs.get("cost"))
    escalated = _scalar(outputs, "escalated")
    return RouterResult(
        text=decode_text(outputs) if text is None else text,
        tier=str(tier),
        escalated=bool(escalated) if escalated is not None else False,
        cost=cost if cost is not None else 0.0,
        route=route if isinstance(route, dict) else {"value": route},
    )


def _shortest_float(array: np.ndarray | None) -> float | None:
    """The first element of a float output as the shortest decimal that is the same float32 (0.00106, not the
    0.0010600000387057662 that widening float32 to float64 prints)."""
    if array is None or array.size == 0:
        return None
    value = array.reshape(-1)[0]
    return float(str(value)) if isinstance(value, np.floating) else float(value)


def _outputs_of(result: grpcclient.InferResult) -> dict[str, np.ndarray | None]:
    response = result.get_response()
    return {out.name: result.as_numpy(out.name) for out in response.outputs}


def policy_tiers(result: RouterResult) -> list[str]:
    """The tier names of a router's describe_policy answer, cheapest first."""
    tiers = result.route.get("tiers")
    if not isinstance(tiers, list) or not all(isinstance(t, str) for t in tiers):
        raise RouterError("the router's answer to describe_policy has no tier list", "INTERNAL")
    return tiers


def ready_names(index: Mapping[str, Any]) -> list[str]:
    """Names of the READY models in a repository index (JSON form), sorted."""
    return sorted({m["name"] for m in index.get("models", []) if m.get("state") == "READY"})


def _describe_inputs() -> list[grpcclient.InferInput]:
    return build_inputs("")  # text_input is required by the router's config; describe_policy ignores it


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


class _Connection:
    """What both clients hold: the server's URL, the per-request timeout and tritonclient's gRPC client."""

    grpc_client: ClassVar[Any]  # tritonclient's InferenceServerClient class (blocking or asyncio)

    def __init__(self, url: str = DEFAULT_URL, *, timeout_s: float = DEFAULT_TIMEOUT_S, verbose: bool = False):
        self.url = url
        self.timeout_s = timeout_s
        with _server_errors():
            self._client = self.grpc_client(url, verbose=verbose)


def _policy_answer_tiers(result: grpcclient.InferResult) -> list[str]:
    """The tier names in the router's answer to a describe_policy request."""
    return policy_tiers(decode_result(_outputs_of(result)))


def _tier_models(names: list[str], configs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The models among `names` whose config (name -> JSON config) serves the tier interface."""
    return [name for name in names if not missing_tier_interface(configs[name])]


# -- sync client ----


class RouterClient(_Connection):
    """Blocking client. Safe to share between threads for `route`; one `stream` at a time per client."""

    grpc_client = grpcclient.InferenceServerClient

    def __init__(self, url: str = DEFAULT_URL, *, timeout_s: float = DEFAULT_TIMEOUT_S, verbose: bool = False):
        super().__init__(url, timeout_s=timeout_s, verbose=verbose)
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

    def tiers(self) -> list[str]:
        """The server's tier names, cheapest first: the `router` policy's when the router is ready (the policy is the
        source of truth, and names remote tiers too); otherwise the READY models that serve the tier interface
        (llm_router.protocol), by name, since without the router's policy there are no prices to order them by."""
        with _server_errors():
            if self.is_ready(ROUTER_MODEL):
                return _policy_answer_tiers(
                    self._client.infer(ROUTER_MODEL, _describe_inputs(), parameters=DESCRIBE_POLICY, client_timeout=10)
                )
            names = ready_names(self._client.get_model_repository_index(as_json=True, client_timeout=10))
            configs = {n: self._client.get_model_config(n, as_json=True, client_timeout=10)["config"] for n in names}
        return _tier_models(names, configs)

    def route(self, prompt: str = "", *, model: str = ROUTER_MODEL, **request: Unpack[RequestArgs]) -> RouterResult:
        """One unary call to `router`: a `prompt`, or `messages` (an OpenAI-style conversation, rendered by the tiers
        with their chat templates; the router must declare the `messages` input); see RequestArgs."""
        inputs, parameters, request_id = _request(prompt, **request)
        started = time.perf_counter()
        with _server_errors():
            result = self._client.infer(
                model, inputs, parameters=parameters or None, client_timeout=self.timeout_s, request_id=request_id
            )
        return _with_latency(decode_result(_outputs_of(result)), started)

    def stream(
        self, prompt: str = "", *, model: str = ROUTER_STREAM_MODEL, **request: Unpack[RequestArgs]
    ) -> Iterator[StreamEvent]:
        """Call `router_stream`: yields StreamDelta events as they arrive, then the RouterResult."""
        inputs, parameters, request_id = _request(prompt, **request)
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
                    parameters=parameters or None,
                    enable_empty_final_response=True,
                    request_id=request_id,
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
                    final = is_final(result)
                    for event in assembler.feed(_outputs_of(result), final):
                        yield _with_latency(event, started) if isinstance(event, RouterResult) else event
                    if final:
                        if not assembler.done:
                            raise RouterError(f"{model} ended without its final response", "INTERNAL")
                        finished = True
                        return
            except InferenceServerException as exc:
                raise RouterError.from_triton(_stream_cause(responses, exc)) from exc
            finally:
                self._client.stop_stream(cancel_requests=not finished)


def _stream_cause(responses: queue.Queue[tuple[Any, Any]], exc: InferenceServerException) -> InferenceServerException:
    """The error that broke a stream: tritonclient reports it (e.g. UNAVAILABLE for a server that is not there) to
    the stream's callback and raises only "The stream is no longer in valid state" to the caller. The callback may
    run just after, so wait for it briefly; `exc` when no error arrives."""
    deadline = time.monotonic() + 2.0
    while (left := deadline - time.monotonic()) > 0:
        try:
            _result, error = responses.get(timeout=left)
        except queue.Empty:
            break
        if error is not None:
            return error
    return exc


def _with_latency(result: RouterResult, started: float) -> RouterResult:
    return replace(result, latency_ms=(time.perf_counter() - started) * 1000)


# -- asyncio client ----


class AsyncRouterClient(_Connection):
    """asyncio client (tritonclient.grpc.aio); any number of concurrent `route` and `stream` calls."""

    grpc_client = grpcclient_aio.InferenceServerClient

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
        with _server_errors():
            return ready_names(await self._client.get_model_repository_index(as_json=True, client_timeout=10))

    async def tiers(self) -> list[str]:
        """The server's tier names, cheapest first (as RouterClient.tiers)."""
        with _server_errors():
            if await self.is_ready(ROUTER_MODEL):
                return _policy_answer_tiers(
                    await self._client.infer(
                        ROUTER_MODEL, _describe_inputs(), parameters=DESCRIBE_POLICY, client_timeout=10
                    )
                )
            names = await self.ready_models()
            configs = {
                n: (await self._client.get_model_config(n, as_json=True, client_timeout=10))["config"] for n in names
            }
        return _tier_models(names, configs)

    async def route(
        self, prompt: str = "", *, model: str = ROUTER_MODEL, **request: Unpack[RequestArgs]
    ) -> RouterResult:
        """As RouterClient.route."""
        inputs, parameters, request_id = _request(prompt, **request)
        started = time.perf_counter()
        with _server_errors():
            result = await self._client.infer(
                model, inputs, parameters=parameters or None, client_timeout=self.timeout_s, request_id=request_id
            )
        return _with_latency(decode_result(_outputs_of(result)), started)

    async def stream(
        self, prompt: str = "", *, model: str = ROUTER_STREAM_MODEL, **request: Unpack[RequestArgs]
    ) -> AsyncIterator[StreamEvent]:
        """Call `router_stream`: yields StreamDelta events as they arrive, then the RouterResult."""
        inputs, parameters, request_id = _request(prompt, **request)
        started = time.perf_counter()
        assembler = StreamAssembler()
        call = {"model_name": model, "inputs": inputs, "parameters": parameters, "request_id": request_id}
        results = stream_results(self._client, call, timeout_s=self.timeout_s)
        try:
            async with contextlib.aclosing(results):
                async for result in results:
                    for event in assembler.feed(_outputs_of(result), is_final(result)):
                        yield _with_latency(event, started) if isinstance(event, RouterResult) else event
        except InferenceServerException as exc:
            raise RouterError.from_triton(exc) from exc
        except grpc.RpcError as exc:
            raise RouterError.from_grpc(exc) from exc
        except StreamClosedError as exc:
            raise RouterError(str(exc), "UNAVAILABLE") from exc
        if not assembler.done:
            raise RouterError(f"{model} ended without its final response", "INTERNAL")


def server_tiers(url: str = DEFAULT_URL) -> list[str]:
    """The tier names of the Triton server at `url` (gRPC host:port), cheapest first; see RouterClient.tiers."""
    with RouterClient(url, timeout_s=30) as client:
        return client.tiers()
