"""Reliability at the gRPC boundary: bad input, faults, shared memory and security, against the real server.

test_router.py already covers the router's basic bad inputs (empty, non-UTF-8, unknown tiers, thresholds,
max_tokens 0/-3, unknown parameters) and its fallback past tier_faulty/tier_slow; test_tiers.py covers the tiers'
sampling-value checks. This file covers the rest of the contract:

- every bad request gets INVALID_ARG with a message that says what to fix, and the server stays live and ready;
- faults (a tier that errors, raises, hangs, is unloaded mid-traffic; the classifier unloaded; an invalid policy
  reload; a killed stub) are bounded in time, visible in the metrics, and end in an answer or a clear error;
- the largest prompt and answer fit the Python backend's shared memory; the server binds loopback only.

Destructive tests (killed stubs, a failed reload) run on a second server of their own (`spare_server`).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from helpers import metric_value, router_inputs, server_options, stream, tensor, text_array, write_smoke_repository
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llm_router.core import load_policy
from router_export.stand_in import overlay_repository
from router_launcher.serve import SHM_DEFAULT_BYTES, SHM_GROWTH_BYTES, LocalTritonServer, ServerOptions, free_ports
from router_launcher.watchdog import check, live_stubs
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parents[2]
# What the shared test server serves: the repository with tiny stand-ins for the real tiers (tests/conftest.py).
SERVED = overlay_repository(ROOT / "model_repository")
POLICY = load_policy(ROOT / "model_repository" / "router" / "1" / "policy.yaml")
MAX_PROMPT_CHARS = 100_000  # the router's limit (llm_router.router.model.MAX_PROMPT_CHARS)


def tier_context(tier: str) -> int:
    """A tier's context in tokens (its exported config.json)."""
    config = json.loads((SERVED / tier / "1" / "model" / "config.json").read_text())
    return int(config.get("max_position_embeddings") or config["n_positions"])


LONGEST_CONTEXT = max(tier_context(t) for t in POLICY.tier_names)
PROMPT = "Summarize: the city council approved a new budget that raises spending on public transit."
ALWAYS_CONFIDENT = -1e9
INVALID = "StatusCode.INVALID_ARGUMENT"
CLASSIFIER = "intent_classifier"


# -- helpers --------------------------------------------------------------------------------------------------------
def tier_inputs(text: str | bytes, max_tokens: int = 4, **extra: tuple[Any, str]) -> list[grpcclient.InferInput]:
    inputs = [
        tensor("text_input", text_array(text, (1, 1)), "BYTES"),
        tensor("max_tokens", np.array([[max_tokens]], dtype=np.int32), "INT32"),
    ]
    dtypes = {"INT32": np.int32, "FP32": np.float32, "BOOL": np.bool_, "UINT64": np.uint64, "INT64": np.int64}
    inputs += [tensor(n, np.array([[v]], dtype=dtypes[t]), t) for n, (v, t) in extra.items()]
    return inputs


def route(client: grpcclient.InferenceServerClient, text: str | bytes, model: str = "router", max_tokens: int = 4,
          timeout_s: float = 60, **params: Any) -> dict[str, Any]:  # fmt: skip
    result = client.infer(model, router_inputs(text, max_tokens), parameters=params or None, client_timeout=timeout_s)
    return {
        "text": result.as_numpy("text_output")[0].decode(),
        "tier": result.as_numpy("tier")[0].decode(),
        "route": json.loads(result.as_numpy("route")[0]),
    }


def invalid_arg(call: Callable[[], Any], streaming: bool = False) -> str:
    """Run `call`, which must fail with INVALID_ARG; returns the message.

    Over the gRPC stream (decoupled models) Triton sends only the error's message, not its status code
    (ModelStreamInferResponse.error_message), so there only the message can be checked.
    """
    with pytest.raises(InferenceServerException) as info:
        call()
    expected = None if streaming else INVALID
    assert info.value.status() == expected, f"{info.value.status()}: {info.value.message()}"
    return info.value.message()


def assert_healthy(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()


def metric_becomes(url: str, name: str, predicate: Callable[[float], bool], **labels: str) -> float:
    """The metric's value once `predicate` holds (the router records metrics just after it answers), or the last."""
    deadline = time.monotonic() + 10
    value = metric_value(url, name, **labels)
    while not predicate(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = metric_value(url, name, **labels)
    return value


def stats(client: grpcclient.InferenceServerClient, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) of a model."""
    entry = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(entry.get("inference_count", 0)), int(entry.get("execution_count", 0))


def classifier_loaded(client: grpcclient.InferenceServerClient) -> bool:
    try:
        return client.is_model_ready(CLASSIFIER)
    except InferenceServerException:
        return False


def wait_for(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return False


# -- router: bad input the router tests do not cover -----------------------------------------------------------------
@pytest.mark.parametrize("model", ["router", "router_stream"])
def test_prompt_limits_are_invalid_arg_saying_what_to_fix(
    triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient, model: str
) -> None:
    """100,000 characters is the router's limit; above a tier's context every tier refuses, and the router says so."""

    def send(text: str) -> Any:
        if model == "router":
            return route(grpc_client, text, force_tier="tier_small")
        return stream(triton_server.grpc_url, model, router_inputs(text), {"force_tier": "tier_small"})

    streaming = model == "router_stream"
    message = invalid_arg(lambda: send("a" * (MAX_PROMPT_CHARS + 1)), streaming)
    assert f"at most {MAX_PROMPT_CHARS}" in message and "shorten the prompt" in message
    message = invalid_arg(lambda: send("word " * (MAX_PROMPT_CHARS // 5)), streaming)
    assert f"this model's context is {tier_context('tier_small')} tokens" in message, message
    assert "tier_small" in message and "shorten the prompt or lower max_tokens" in message
    assert_healthy(grpc_client)


def test_prompt_above_every_tiers_context_lists_each_tier(grpc_client: grpcclient.InferenceServerClient) -> None:
    """Without force_tier the router falls back through every tier (a larger one may have a larger context)."""
    message = invalid_arg(lambda: route(grpc_client, "word " * (LONGEST_CONTEXT + 10)))
    for tier in POLICY.tier_names:
        assert f"{tier}: prompt is" in message, message
    assert_healthy(grpc_client)


def test_prompt_that_fits_but_leaves_no_room_for_the_answer(grpc_client: grpcclient.InferenceServerClient) -> None:
    text = "word " * (tier_context("tier_small") - 10)
    message = invalid_arg(lambda: route(grpc_client, text, force_tier="tier_small", max_tokens=64))
    assert "lower max_tokens to at most" in message, message


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([tensor("text_input", np.array([7], dtype=np.int32), "INT32")], "expects 'BYTES'"),
        ([tensor("text_input", np.array([b"a", b"b"], dtype=np.object_), "BYTES")], "Expected [1], got [2]"),
        ([tensor("text_input", np.array([[b"hello"]], dtype=np.object_), "BYTES")], "Expected [1], got [1,1]"),
        ([], "missing required input(s) ['text_input']"),
        ([tensor("max_tokens", np.array([4], dtype=np.int32), "INT32")], "missing required input 'text_input'"),
        (router_inputs(PROMPT, None) + [tensor("max_tokens", np.array([4], dtype=np.int64), "INT64")],
         "expects 'INT32'"),
        (router_inputs(PROMPT, None) + [tensor("max_tokens", np.array([4, 5], dtype=np.int32), "INT32")],
         "unexpected shape for input 'max_tokens'"),
        (router_inputs(PROMPT) + [tensor("temperature", np.array([0.5], dtype=np.float32), "FP32")],
         "unexpected inference input 'temperature'"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("model", ["router", "router_stream"])
def test_router_wrong_datatype_shape_or_missing_input(
    request: pytest.FixtureRequest, grpc_client: grpcclient.InferenceServerClient, model: str, inputs: list,
    message: str,
) -> None:  # fmt: skip
    if model == "router":
        got = invalid_arg(lambda: grpc_client.infer(model, inputs, client_timeout=30))
        assert_healthy(grpc_client)
    else:  # rejected by Triton itself on the stream: on the spare server (a pinned model was once seen, see README)
        server = request.getfixturevalue("spare_server")
        got = invalid_arg(lambda: stream(server.grpc_url, model, inputs, timeout_s=30), streaming=True)
        assert_healthy(grpc_client)
    assert message in got


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"force_tier": 3}, "force_tier: must be a tier name, got 3"),
        ({"force_tier": ""}, "force_tier: must be a tier name"),
        ({"max_tier": True}, "max_tier: must be a tier name, got True"),
        ({"confidence_threshold": True}, "confidence_threshold: must be a finite number"),
        ({"confidence_threshold": "-1e999"}, "confidence_threshold: must be a finite number"),
        ({"return_trace": 5}, "parameter 'return_trace' must be a boolean"),
        ({"": "x"}, "unknown request parameter(s) ['']"),
        ({"force_tier": "tier_small", "max_tier": "tier_small", "min_tier": "tier_medium"}, "min_tier"),
    ],
)
@pytest.mark.parametrize("model", ["router", "router_stream"])
def test_router_malformed_parameters(
    triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient, model: str, params: dict,
    message: str,
) -> None:  # fmt: skip
    if model == "router":
        got = invalid_arg(lambda: grpc_client.infer(model, router_inputs(PROMPT), parameters=params))
    else:
        got = invalid_arg(lambda: stream(triton_server.grpc_url, model, router_inputs(PROMPT), params), streaming=True)
    assert message in got, got
    assert_healthy(grpc_client)


def test_max_tokens_is_capped_by_the_policy_and_refused_above_every_cap(
    grpc_client: grpcclient.InferenceServerClient,
) -> None:
    largest = max(t.max_tokens for t in POLICY.tiers)
    answer = route(grpc_client, PROMPT, force_tier="tier_small", max_tokens=largest)
    attempt = answer["route"]["attempts"][0]
    assert attempt["outcome"] == "ok"
    assert 0 < attempt["output_tokens"] <= POLICY.tier("tier_small").max_tokens
    message = invalid_arg(lambda: route(grpc_client, PROMPT, force_tier="tier_small", max_tokens=2**31 - 1))
    assert f"at most {largest}" in message, message


@pytest.mark.parametrize("name", ["force_tier", "min_tier", "max_tier"])
@pytest.mark.parametrize(
    "target", ["router", "router_stream", "router_faults", "tier_faulty", CLASSIFIER, "tier_small ", "../tier_small"]
)
def test_parameters_cannot_select_models_outside_the_policy(
    grpc_client: grpcclient.InferenceServerClient, name: str, target: str
) -> None:
    before = stats(grpc_client, "tier_faulty")
    message = invalid_arg(lambda: route(grpc_client, PROMPT, **{name: target}))
    assert f"{name}: unknown tier {target!r}" in message and "tier_small, tier_medium, tier_large" in message
    assert stats(grpc_client, "tier_faulty") == before, "a model outside the policy was called"


# -- tiers (streaming API): bad input test_tiers.py does not cover -------------------------------------------------
@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (tier_inputs(b"\xc3\x28 invalid"), "is not valid UTF-8"),
        (tier_inputs("word " * (MAX_PROMPT_CHARS // 5)), f"this model's context is {tier_context('tier_medium')}"),
        (tier_inputs("hi", 2**31 - 1), "above this model's limit"),
        ([tensor("text_input", np.array([[b"a"], [b"b"]], dtype=np.object_), "BYTES"),
          tensor("max_tokens", np.array([[4], [4]], dtype=np.int32), "INT32")], "must hold exactly one string"),
        ([tensor("text_input", np.array([[1]], dtype=np.int32), "INT32"),
          tensor("max_tokens", np.array([[4]], dtype=np.int32), "INT32")], "expects 'BYTES'"),
        (tier_inputs("hi")[:1], "missing required input(s) ['max_tokens']"),
        (tier_inputs("hi")[1:], "missing required input(s) ['text_input']"),
        (tier_inputs("hi", stream=(1, "INT32")), "expects 'BOOL'"),
        (tier_inputs("hi", nonsense=(1, "INT32")), "unexpected inference input 'nonsense'"),
    ],
)  # fmt: skip
def test_tier_bad_input_is_invalid_arg(spare_server: LocalTritonServer, inputs: list, message: str) -> None:
    """On the spare server: Triton itself rejects these on the stream (a pinned model was once seen, see README)."""
    got = invalid_arg(lambda: stream(spare_server.grpc_url, "tier_medium", inputs, timeout_s=30), streaming=True)
    assert message in got, got
    client = grpcclient.InferenceServerClient(spare_server.grpc_url)
    assert_healthy(client)
    client.close()


def test_mixed_good_and_bad_requests_in_one_tier_batch(
    triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient
) -> None:
    """Good and bad requests batched together by the dynamic batcher: the good ones get their own answers."""
    url = triton_server.grpc_url
    good = {i: f"{PROMPT} Number {i}." for i in (0, 2, 4, 6)}
    bad = {1: b"", 3: b"\xff\xfe", 5: ("too long " * tier_context("tier_small")).encode(), 7: b"   "}
    solo = {i: stream(url, "tier_small", tier_inputs(text, 6)) for i, text in good.items()}
    clients = [grpcclient.InferenceServerClient(url) for _ in range(9)]
    answers: list[queue.Queue] = [queue.Queue() for _ in range(9)]
    for client, answer in zip(clients, answers, strict=True):
        client.start_stream(callback=lambda result=None, error=None, q=answer: q.put((result, error)))
    before = stats(grpc_client, "tier_small")
    try:
        # a 100k-character prompt keeps the instance busy tokenizing, so the next eight queue up and batch together
        clients[8].async_stream_infer("tier_small", tier_inputs("\U0001f642" * MAX_PROMPT_CHARS))
        for i in range(8):
            clients[i].async_stream_infer("tier_small", tier_inputs(good.get(i, bad.get(i)), 6),
                                          enable_empty_final_response=True)  # fmt: skip
        outcomes = [answer.get(timeout=60) for answer in answers]
    finally:
        for client in clients:
            client.stop_stream()
            client.close()
    for i in good:
        result, error = outcomes[i]
        assert error is None, error
        assert result.get_response().parameters["triton_final_response"].bool_param
        assert result.as_numpy("text_output").reshape(-1)[0].decode() == solo[i][-1]["text_output"]
    for i in [*bad, 8]:
        result, error = outcomes[i]
        assert error is not None and result is None, (i, result, error)
        assert re.search(r"empty|UTF-8|context", error.message()), error.message()
    inferences, executions = (a - b for a, b in zip(stats(grpc_client, "tier_small"), before, strict=True))
    assert inferences == 9 and executions <= 3, f"{inferences} requests in {executions} executions: not batched"
    assert_healthy(grpc_client)


# -- intent_classifier ------------------------------------------------------------------------------------------------
@pytest.fixture
def classifier(grpc_client: grpcclient.InferenceServerClient) -> grpcclient.InferenceServerClient:
    if not classifier_loaded(grpc_client):
        pytest.skip(f"{CLASSIFIER} is not in the model repository (build it with `make models`)")
    return grpc_client


def classify(client: grpcclient.InferenceServerClient, text: str | bytes) -> tuple[str, np.ndarray]:
    result = client.infer(CLASSIFIER, [tensor("text", text_array(text, (1, 1)), "BYTES")], client_timeout=30)
    return result.as_numpy("intent").reshape(-1)[0].decode(), result.as_numpy("intent_probs").reshape(-1)


def test_classifier_truncates_long_prompts(classifier: grpcclient.InferenceServerClient) -> None:
    for text in ("Summarize this article: " + "word " * (MAX_PROMPT_CHARS // 5), "🙂" * MAX_PROMPT_CHARS):
        intent, probs = classify(classifier, text)
        assert intent and probs.size == 9 and abs(float(probs.sum()) - 1.0) < 1e-3


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([tensor("text", text_array(b"\xff\xfe", (1, 1)), "BYTES")], "UTF-8"),
        ([tensor("text", text_array("", (1, 1)), "BYTES")], "empty"),
        ([tensor("text", text_array(" \n\t ", (1, 1)), "BYTES")], "empty"),
        ([tensor("text", np.array([[1]], dtype=np.int32), "INT32")], "expects 'BYTES'"),
        ([tensor("text", np.array([[b"a", b"b"]], dtype=np.object_), "BYTES")], "unexpected shape"),
        ([], "missing required input"),
    ],
)
def test_classifier_bad_input_is_invalid_arg(
    classifier: grpcclient.InferenceServerClient, inputs: list, message: str
) -> None:
    got = invalid_arg(lambda: classifier.infer(CLASSIFIER, inputs, client_timeout=30))
    assert message in got, got
    assert_healthy(classifier)


def test_classifier_mixed_batch_good_requests_succeed(classifier: grpcclient.InferenceServerClient) -> None:
    texts: list[str | bytes] = [PROMPT, b"\xff", "Write a poem about the sea.", "", "Plan a trip to Rome.", b"\xc3"]
    solo = {i: classify(classifier, t) for i, t in enumerate(texts) if i % 2 == 0}

    def one(i: int) -> Any:
        try:
            return classify(classifier, texts[i])
        except InferenceServerException as exc:
            return exc.status()

    with ThreadPoolExecutor(len(texts) * 2) as pool:
        together = list(pool.map(one, list(range(len(texts))) * 2))
    for i, got in enumerate(together):
        i %= len(texts)
        if i in solo:
            assert got[0] == solo[i][0]
            # the int8 encoder quantizes activations per batch, so batch-mates move probabilities slightly
            np.testing.assert_allclose(got[1], solo[i][1], atol=0.05)
        else:
            assert got == INVALID


# -- fuzz (slow) ----------------------------------------------------------------------------------------------------
FUZZ_TEXT = st.one_of(
    st.text(max_size=200),  # any code point, surrogates included (sent as invalid UTF-8)
    st.binary(max_size=200),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=4000),
    st.builds(lambda unit, n: unit * n, st.sampled_from(["a", " ", "\u00e9", "\U0001f642", "\x00", "\n"]),
              st.integers(0, MAX_PROMPT_CHARS)),
)  # fmt: skip
EXPECTED_REJECTIONS = re.compile(r"empty|only control characters|not valid UTF-8|context|at most|lower max_tokens")


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=FUZZ_TEXT)
def test_fuzz_text_input(
    triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient, text: str | bytes
) -> None:
    """Any text: an answer or INVALID_ARG with a known reason, from the router, a tier and the classifier."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    try:
        route(grpc_client, raw, force_tier="tier_small", max_tokens=1)
    except InferenceServerException as exc:
        assert exc.status() == INVALID and EXPECTED_REJECTIONS.search(exc.message()), exc.message()
    try:
        stream(triton_server.grpc_url, "tier_small", tier_inputs(raw, 1))
    except InferenceServerException as exc:
        assert EXPECTED_REJECTIONS.search(exc.message()), exc.message()
    if classifier_loaded(grpc_client):
        try:
            classify(grpc_client, raw)
        except InferenceServerException as exc:
            assert exc.status() == INVALID and EXPECTED_REJECTIONS.search(exc.message()), exc.message()
    assert_healthy(grpc_client)


# -- faults -------------------------------------------------------------------------------------------------------
def test_failing_raising_and_hanging_tiers_under_concurrency(
    triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient
) -> None:
    """router_faults: tier_faulty errors (or raises in execute), tier_slow overruns its 1 s deadline, tier_small
    answers. Concurrent requests all finish in bounded time; the metrics count each fallback and failure."""
    url = triton_server.metrics_url
    labels = {"model": "router_faults"}
    before = {
        "error": metric_value(url, "router_fallbacks_total", tier="tier_faulty", reason="error", **labels),
        "timeout": metric_value(url, "router_fallbacks_total", tier="tier_slow", reason="timeout", **labels),
        "answered": metric_value(url, "router_requests_total", tier="tier_small", **labels),
        "failed": metric_value(url, "router_failures_total", **labels),
    }
    prompts = [PROMPT, "raise: " + PROMPT] * 4

    def one(i: int) -> Any:
        started = time.monotonic()
        params = {"max_tier": "tier_slow"} if i == 0 else {}
        try:
            result: Any = route(grpc_client, prompts[i], model="router_faults", timeout_s=30, **params)
        except InferenceServerException as exc:
            result = exc
        return result, time.monotonic() - started

    with ThreadPoolExecutor(len(prompts)) as pool:
        outcomes = list(pool.map(one, range(len(prompts))))
    for i, (result, elapsed) in enumerate(outcomes):
        assert elapsed < 10, f"request {i} took {elapsed:.1f}s (tier_slow's deadline is 1 s)"
        if i == 0:  # tier_small not allowed: every tier failed
            assert isinstance(result, InferenceServerException) and result.status() == "StatusCode.UNAVAILABLE"
            assert "tier_faulty" in result.message() and "tier_slow" in result.message()
            continue
        attempts = [(a["tier"], a["outcome"]) for a in result["route"]["attempts"]]
        assert attempts == [("tier_faulty", "error"), ("tier_slow", "timeout"), ("tier_small", "ok")]
        error = result["route"]["attempts"][0]["error"]
        if prompts[i].startswith("raise:"):
            # Triton 24.10 usually relays the exception; once in a while the stream closes with a bare FINAL flag,
            # which the router records as a failure too (never as an empty "ok" answer)
            assert "raised in execute()" in error or "closed its response stream without an answer" in error, error
        else:
            assert "always fails" in error, error
        assert "too late" not in result["text"], "the late answer of tier_slow reached the client"
    n = len(prompts)
    expected = {
        ("router_fallbacks_total", "tier_faulty", "error"): before["error"] + n,
        ("router_fallbacks_total", "tier_slow", "timeout"): before["timeout"] + n,
        ("router_requests_total", "tier_small", None): before["answered"] + n - 1,
        ("router_failures_total", None, None): before["failed"] + 1,
    }
    for (name, tier, reason), want in expected.items():
        extra = {k: v for k, v in (("tier", tier), ("reason", reason)) if v is not None}
        assert metric_becomes(url, name, lambda v, w=want: v >= w, **extra, **labels) == want, (name, tier, reason)
    assert_healthy(grpc_client)


def test_tier_unloaded_while_traffic_runs(
    triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient
) -> None:
    """Unload then reload tier_medium under concurrent router traffic: every request ends, answered by a fallback
    tier or with an error naming tier_medium; nothing hangs; the server is ready again afterwards."""
    url = triton_server.metrics_url
    fallbacks_before = metric_value(url, "router_fallbacks_total", model="router", tier="tier_medium")
    stop = threading.Event()
    results: list[tuple[str, str, float]] = []
    lock = threading.Lock()

    def traffic(worker: int) -> None:
        client = grpcclient.InferenceServerClient(triton_server.grpc_url)
        params = {"force_tier": "tier_medium"} if worker % 3 == 0 else {"min_tier": "tier_medium"}
        while not stop.is_set():
            started = time.monotonic()
            try:
                answer = route(client, PROMPT, max_tokens=8, timeout_s=30,
                               confidence_threshold=ALWAYS_CONFIDENT, **params)  # fmt: skip
                outcome = ("ok", answer["tier"])
            except InferenceServerException as exc:
                outcome = (exc.status(), exc.message())
            with lock:
                results.append((*outcome, time.monotonic() - started))
        client.close()

    threads = [threading.Thread(target=traffic, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        grpc_client.unload_model("tier_medium")
        assert wait_for(lambda: not grpc_client.is_model_ready("tier_medium"), 30)
        time.sleep(1.5)
        grpc_client.load_model("tier_medium")
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a request hung"
    assert len(results) >= 12
    assert max(r[2] for r in results) < 30
    kinds = {(status, tier) for status, tier, _ in results if status == "ok"}
    assert ("ok", "tier_medium") in kinds, "tier_medium never answered"
    assert ("ok", "tier_large") in kinds, "no request fell back to tier_large while tier_medium was away"
    for status, message, _ in results:
        if status != "ok":
            assert status == "StatusCode.UNAVAILABLE" and "tier_medium" in message, (status, message)
    assert metric_becomes(url, "router_fallbacks_total", lambda v: v > fallbacks_before, model="router",
                          tier="tier_medium") > fallbacks_before  # fmt: skip
    assert grpc_client.is_model_ready("tier_medium")
    assert wait_for(grpc_client.is_server_ready, 30), "the server did not become ready again"
    assert route(grpc_client, PROMPT, force_tier="tier_medium")["tier"] == "tier_medium"


def test_classifier_unavailable_routes_by_default(
    triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient
) -> None:
    """Without the classifier (not built, or unloaded) the router uses the policy's default start tier."""
    url = triton_server.metrics_url
    was_loaded = classifier_loaded(grpc_client)
    if was_loaded:
        assert route(grpc_client, PROMPT)["route"]["classifier"] == "ok"
        grpc_client.unload_model(CLASSIFIER)
        assert wait_for(lambda: not classifier_loaded(grpc_client), 30)
    unclassified = metric_value(url, "router_requests_total", model="router", intent="unclassified")
    try:
        answer = route(grpc_client, PROMPT, confidence_threshold=ALWAYS_CONFIDENT)
        trace = answer["route"]
        assert trace["classifier"] != "ok" and trace["intent"] is None
        assert CLASSIFIER in trace["classifier_error"]
        assert trace["attempts"][0]["tier"] == POLICY.default_start_tier
        assert "classifier unavailable" in trace["attempts"][0]["called_because"]
        assert answer["tier"] == POLICY.default_start_tier and answer["text"]
        assert metric_becomes(url, "router_requests_total", lambda v: v > unclassified, model="router",
                              intent="unclassified") == unclassified + 1  # fmt: skip
    finally:
        if was_loaded:
            grpc_client.load_model(CLASSIFIER)
    if was_loaded:
        assert route(grpc_client, PROMPT)["route"]["classifier"] == "ok"
        assert wait_for(grpc_client.is_server_ready, 30)


# -- shared memory ----------------------------------------------------------------------------------------------------
def test_stubs_run_with_the_configured_shared_memory(triton_server: LocalTritonServer) -> None:
    stubs = live_stubs(triton_server.process.pid)
    assert {s.model for s in stubs} >= {"router", "router_stream", *POLICY.tier_names}
    for stub in stubs:
        argv = Path(f"/proc/{stub.pid}/cmdline").read_bytes().split(b"\0")
        assert argv[3:5] == [str(SHM_DEFAULT_BYTES).encode(), str(SHM_GROWTH_BYTES).encode()], stub


def test_largest_prompt_and_answer_pass(
    triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient
) -> None:
    """The largest prompt each layer accepts, with the largest answer, goes through the stubs' shared memory."""
    # router: a prompt that fills the tier's context up to the policy's answer cap, answered in full
    cap = POLICY.tier("tier_large").max_tokens
    prompt = "word " * (tier_context("tier_large") - cap - 2)
    answer = route(grpc_client, prompt, force_tier="tier_large", max_tokens=cap, return_trace=True)
    attempt = answer["route"]["attempts"][0]
    assert attempt["outcome"] == "ok" and attempt["input_tokens"] + cap <= tier_context("tier_large")
    assert attempt["input_tokens"] > tier_context("tier_large") - cap - 10
    assert answer["route"]["answers"][0]["text"] == answer["text"]
    # a tier directly: a short prompt and an answer filling the rest of the context (end_id -1: never stops early)
    longest = tier_context("tier_small") - 4
    events = stream(triton_server.grpc_url, "tier_small", tier_inputs("Once", longest, end_id=(-1, "INT32"),
                                                                       stream=(True, "BOOL")))  # fmt: skip
    assert events[-1]["final"] and events[-1]["output_tokens"] == longest
    # the router's largest input (100,000 4-byte characters = 400 kB), several at once: a clean INVALID_ARG each
    big = "🙂" * MAX_PROMPT_CHARS

    def one(_: int) -> str:
        return invalid_arg(lambda: route(grpc_client, big, force_tier="tier_small", timeout_s=120))

    with ThreadPoolExecutor(4) as pool:
        messages = list(pool.map(one, range(4)))
    assert all("this model's context" in m for m in messages), messages
    assert_healthy(grpc_client)


# -- security -------------------------------------------------------------------------------------------------------
def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.add(address)
    return found


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1 in tcp, ::ffff:127.0.0.1 in tcp6


def test_local_server_listens_on_loopback_only(triton_server: LocalTritonServer) -> None:
    options = triton_server.options
    for port in (options.grpc_port, options.http_port, options.metrics_port):
        addresses = _listening(port)
        assert addresses, f"nothing listens on {port}"
        assert addresses <= LOOPBACK, f"port {port} listens on {addresses}, not only on 127.0.0.1"


# -- destructive faults on a server of their own -----------------------------------------------------------------
SECRET_ENV = "ROUTER_RELIABILITY_TEST_API_KEY"


@pytest.fixture(scope="module")
def spare_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTritonServer]:
    """The project's repository on a second server (explicit model control, stub watchdog restarting)."""
    work = tmp_path_factory.mktemp("spare")
    (work / "empty_repository").mkdir()  # a second repository: the server then serves a merged copy of symlinks
    options = server_options(
        SERVED,
        work,
        stop_grace_s=6,
        stub_watchdog="restart",
        extra_model_repositories=[work / "empty_repository"],
    )
    secret = f"sk-test-{uuid.uuid4().hex}"
    os.environ[SECRET_ENV] = secret  # inherited by tritonserver: must never reach its log
    server = LocalTritonServer(options)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        os.environ.pop(SECRET_ENV, None)
    assert secret not in server.log_path.read_text(errors="replace"), "an environment secret reached the log"


def _stub_pid(server: LocalTritonServer, model: str) -> int | None:
    return next((s.pid for s in live_stubs(server.process.pid) if s.model == model), None)


def _restarted(server: LocalTritonServer, client: grpcclient.InferenceServerClient, model: str, old: int) -> bool:
    pid = _stub_pid(server, model)
    return (
        pid is not None and pid != old and client.is_server_ready() and not check(server.http_url, server.process.pid)
    )


def test_killed_tier_stub_router_falls_back_and_the_watchdog_restarts_it(spare_server: LocalTritonServer) -> None:
    client = grpcclient.InferenceServerClient(spare_server.grpc_url)
    url = spare_server.metrics_url
    assert route(client, PROMPT, force_tier="tier_small")["tier"] == "tier_small"
    fallbacks = metric_value(url, "router_fallbacks_total", model="router", tier="tier_small", reason="error")
    old = _stub_pid(spare_server, "tier_small")
    os.kill(old, signal.SIGKILL)
    assert wait_for(lambda: _stub_pid(spare_server, "tier_small") != old, 5)
    # Triton 2.51 itself keeps saying ready; the project's check sees the dead stub at once
    problems = check(spare_server.http_url, spare_server.process.pid)
    assert problems and "tier_small" in problems[0], problems
    # the compose healthcheck's form: named models' readiness instead of the server's, plus the stubs
    problems = check(spare_server.http_url, spare_server.process.pid, models=["router", "tier_small"])
    assert problems and "tier_small" in problems[0], problems
    started = time.monotonic()
    answer = route(client, PROMPT, min_tier="tier_small", max_tier="tier_medium", confidence_threshold=ALWAYS_CONFIDENT)
    assert time.monotonic() - started < 10
    first = answer["route"]["attempts"][0]
    if first["outcome"] == "error":  # the watchdog may already have restarted tier_small; if not, fallback
        assert "is not healthy" in first["error"] and answer["tier"] == "tier_medium"
        after = metric_becomes(url, "router_fallbacks_total", lambda v: v > fallbacks, model="router",
                               tier="tier_small", reason="error")  # fmt: skip
        assert after > fallbacks
    assert wait_for(lambda: _restarted(spare_server, client, "tier_small", old), 30), "tier_small was not restarted"
    assert check(spare_server.http_url, spare_server.process.pid, models=["router", "tier_small"]) == []
    assert check(spare_server.http_url, spare_server.process.pid, models=["router", "no_such_model"]) == [
        "model(s) not ready: no_such_model"
    ]
    assert route(client, PROMPT, force_tier="tier_small")["tier"] == "tier_small"
    log = spare_server.log_path.read_text()
    assert "stub of tier_small_0_0 (model 'tier_small') has died" in log
    assert "restarted model 'tier_small'" in log
    client.close()


def test_killed_router_stub_fails_fast_then_is_restarted(spare_server: LocalTritonServer) -> None:
    client = grpcclient.InferenceServerClient(spare_server.grpc_url)
    old = _stub_pid(spare_server, "router")
    readiness: list[bool] = []
    os.kill(old, signal.SIGKILL)
    started = time.monotonic()
    try:
        route(client, PROMPT, force_tier="tier_small", timeout_s=30)
        failed_fast = None  # already restarted (the watchdog polls every second)
    except InferenceServerException as exc:
        failed_fast = exc
    assert time.monotonic() - started < 10, "a request to a dead stub hung"
    if failed_fast is not None:
        assert "Stub process 'router_0_0' is not healthy" in failed_fast.message()

    def restarted() -> bool:
        readiness.append(client.is_server_ready())
        return _restarted(spare_server, client, "router", old)

    assert wait_for(restarted, 30), "the router was not restarted"
    assert False in readiness or failed_fast is None, "Triton said ready during the restart"
    assert route(client, PROMPT, force_tier="tier_small")["tier"] == "tier_small"
    assert "restarted model 'router'" in spare_server.log_path.read_text()
    client.close()


def test_invalid_policy_reload_is_refused_and_the_old_version_serves(spare_server: LocalTritonServer) -> None:
    """A new version of (a copy of) the router with an invalid policy fails to load; version 1 keeps serving."""
    client = grpcclient.InferenceServerClient(spare_server.grpc_url)
    models = spare_server._run_dir / "models"  # merged repository of symlinks; the copy lives only there
    assert models.is_dir() and (models / "router").is_symlink()
    copy = models / "router_reload_test"
    source = ROOT / "model_repository" / "router"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir()
    (copy / "config.pbtxt").write_text(
        (source / "config.pbtxt").read_text().replace('name: "router"', 'name: "router_reload_test"')
    )
    shutil.copytree(source / "1", copy / "1")
    client.load_model("router_reload_test")
    assert route(client, PROMPT, model="router_reload_test", force_tier="tier_small")["tier"] == "tier_small"
    marker = copy / "executed"
    bad_policies = {
        "2": POLICY.to_yaml().replace("max_escalations: 2", "max_escalations: -1"),
        "3": f"!!python/object/apply:os.system ['touch {marker}']\n",
    }
    for version, text in bad_policies.items():
        (copy / version).mkdir()
        shutil.copy(source / "1" / "model.py", copy / version / "model.py")
        (copy / version / "policy.yaml").write_text(text)
        with pytest.raises(InferenceServerException) as info:
            client.load_model("router_reload_test")
        assert "PolicyError" in info.value.message(), info.value.message()
        assert ("max_escalations: must be >= 0" if version == "2" else "not valid YAML") in info.value.message()
        metadata = client.get_model_metadata("router_reload_test", as_json=True)
        assert metadata["versions"] == ["1"], metadata
        answer = route(client, PROMPT, model="router_reload_test", force_tier="tier_small")
        assert answer["tier"] == "tier_small", "the old version stopped serving"
        shutil.rmtree(copy / version)
    assert not marker.exists(), "the YAML payload ran"
    refused = {m["version"]: m for m in client.get_model_repository_index(as_json=True)["models"]
               if m["name"] == "router_reload_test"}  # fmt: skip
    assert refused["1"]["state"] == "READY"
    assert all("PolicyError" in refused[v].get("reason", "") for v in bad_policies)
    # Triton 2.51 keeps the refused versions' records, so strict readiness stays false until a restart: loud, and
    # why a policy should be checked (llm_router.core.load_policy) before it is copied into the repository
    assert not client.is_server_ready()
    client.close()


def _model_state(client: grpcclient.InferenceServerClient, model: str) -> str:
    index = client.get_model_repository_index(as_json=True)["models"]
    return next(m["state"] for m in index if m["name"] == model)


def test_malformed_stream_request_does_not_pin_a_decoupled_model(spare_server: LocalTritonServer) -> None:
    """A streaming request that Triton's own input check rejects (here: max_tokens missing) is released: its
    decoupled model unloads completely and loads again (what the stub watchdog does)."""
    client = grpcclient.InferenceServerClient(spare_server.grpc_url)
    invalid_arg(lambda: stream(spare_server.grpc_url, "tier_large", tier_inputs("hi")[:1], timeout_s=30), True)
    client.unload_model("tier_large")
    assert wait_for(lambda: _model_state(client, "tier_large") == "UNAVAILABLE", 30), _model_state(client, "tier_large")
    client.load_model("tier_large")
    assert _model_state(client, "tier_large") == "READY"
    assert route(client, PROMPT, force_tier="tier_large")["tier"] == "tier_large"
    client.close()


def test_killed_stub_without_explicit_model_control_stops_the_server(tmp_path: Path) -> None:
    """Model control `none` cannot reload: the watchdog stops tritonserver so its supervisor restarts it."""
    repo = write_smoke_repository(tmp_path / "repo")
    grpc_port, http_port, metrics_port = free_ports(3)
    server = LocalTritonServer(
        ServerOptions(model_repository=repo, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port,
                      log_file=tmp_path / "triton.log", stop_grace_s=5)
    )  # fmt: skip
    server.start()
    try:
        assert server.watchdog is not None and server.watchdog.action == "exit"
        stub = live_stubs(server.process.pid)[0]
        os.kill(stub.pid, signal.SIGKILL)
        assert wait_for(lambda: server.process.poll() is not None, 30), "tritonserver kept running"
        log = server.log_path.read_text()
        assert f"stub of {stub.instance}" in log and "stopping tritonserver" in log
    finally:
        server.stop()
