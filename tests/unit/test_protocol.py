"""The tier protocol (llm_router.protocol): the tier configs agree with it; rejections, pieces, decoders, streams."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llm_router.protocol import (
    CONTEXT_MARKER,
    ENABLE_EMPTY_FINAL_RESPONSE,
    FINAL_RESPONSE,
    TIER_INPUTS,
    TIER_OUTPUTS,
    PieceCollector,
    StreamClosedError,
    TensorSpec,
    context_rejection,
    first_int,
    first_text,
    first_value,
    is_input_rejection,
    logprob_list,
    missing_tier_interface,
    numpy_type,
    read_model_config,
    repository_tiers,
    stream_results,
    tier_request_arrays,
)

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
TIER_CONFIGS = sorted(REPOSITORY.glob("tier_*/config.pbtxt"))


def _declared(items: list[dict[str, Any]]) -> list[TensorSpec]:
    """Config entries (JSON form: int64 dims are strings, `optional` absent when false) as TensorSpecs."""
    return [
        TensorSpec(i["name"], i["data_type"], tuple(int(d) for d in i["dims"]), bool(i.get("optional", False)))
        for i in items
    ]


@pytest.mark.parametrize("path", TIER_CONFIGS, ids=lambda p: p.parent.name)
def test_tier_configs_declare_exactly_the_protocol(path: Path) -> None:
    config = read_model_config(path)
    assert config["name"] == path.parent.name
    assert _declared(config["input"]) == list(TIER_INPUTS)
    assert _declared(config["output"]) == list(TIER_OUTPUTS)
    assert config["model_transaction_policy"]["decoupled"] is True
    assert int(config["max_batch_size"]) > 0  # every tensor has the batch dimension: a request is shape [1, 1]


def test_the_shipped_tiers_are_found_and_only_they() -> None:
    assert len(TIER_CONFIGS) == 3
    assert repository_tiers(REPOSITORY) == [p.parent.name for p in TIER_CONFIGS]
    router = read_model_config(REPOSITORY / "router" / "config.pbtxt")
    assert "output output_log_probs" in missing_tier_interface(router)


def test_a_config_that_drifts_from_the_protocol_is_caught(tmp_path: Path) -> None:
    text = (
        TIER_CONFIGS[0]
        .read_text()
        .replace('name: "max_tokens" data_type: TYPE_INT32', 'name: "max_tokens" data_type: TYPE_INT64')
    )
    (tmp_path / "config.pbtxt").write_text(text)
    assert _declared(read_model_config(tmp_path / "config.pbtxt")["input"]) != list(TIER_INPUTS)
    assert missing_tier_interface({"input": [{"name": "text_input"}], "output": [{"name": "text_output"}]}) == [
        "input max_tokens", "output output_log_probs", "output input_tokens", "output output_tokens",
    ]  # fmt: skip


def test_request_arrays_follow_the_declared_types() -> None:
    arrays = tier_request_arrays("héllo", 7, stream=True)
    types = {spec.name: numpy_type(spec.data_type) for spec in TIER_INPUTS}
    assert list(arrays) == ["text_input", "max_tokens", "return_log_probs", "stream"]
    for name, array in arrays.items():
        assert array.shape == (1, 1) and array.dtype == types[name], name
    assert arrays["text_input"][0, 0] == "héllo".encode() and arrays["max_tokens"][0, 0] == 7
    assert bool(arrays["stream"][0, 0]) and bool(arrays["return_log_probs"][0, 0])
    assert tier_request_arrays("x", 1, stream=False, batched=False)["stream"].shape == (1,)
    assert numpy_type("INT32") is np.int32


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        ("INVALID_ARG", "anything", True),  # Triton's code name (BLS)
        ("StatusCode.INVALID_ARGUMENT", "anything", True),  # tritonclient's gRPC status
        ("400", "bad request", True),  # HTTP (OpenAI-compatible endpoints)
        ("INTERNAL", "tier_small: prompt is 900 tokens long; this model's context is 512 tokens", True),  # BLS 24.10
        (None, "prompt (10 tokens) + max_tokens (600) exceed This Model's Context of 512 tokens", True),  # a stream
        ("INTERNAL", "CUDA out of memory", False),
        (None, "the context manager failed", False),
        ("UNAVAILABLE", "tier_small is shutting down", False),
    ],
)
def test_one_rule_for_input_rejections(code: str | None, message: str, expected: bool) -> None:
    assert is_input_rejection(code, message) is expected


def test_context_messages_carry_the_marker() -> None:
    alone = context_rejection(900, 512)
    assert alone == "prompt is 900 tokens long; this model's context is 512 tokens"
    both = context_rejection(100, 512, max_tokens=600)
    assert "max_tokens (600)" in both and "at most 412" in both
    assert CONTEXT_MARKER in alone and CONTEXT_MARKER in both and is_input_rejection(None, both)


def test_first_value_decoders() -> None:
    assert first_value(np.array([[b"caf\xc3\xa9"]], dtype=np.object_)) == "café"
    assert first_value(np.array([1.5], dtype=np.float32)) == 1.5 and first_value(np.array([True])) is True
    assert first_value(None) is None and first_value(np.array([])) is None
    assert first_text(None) == "" and first_text(np.array([[b"a", b"b"]], dtype=np.object_)) == "a"
    assert first_int(np.array([[12]], dtype=np.int32)) == 12 and first_int(None) == 0
    assert logprob_list(np.array([[[-0.5, -1.0]]], dtype=np.float32)) == [-0.5, -1.0] and logprob_list(None) is None


def test_collector_streamed_pieces_and_counts() -> None:
    seen: list[tuple[str, list[float]]] = []
    collector = PieceCollector(stream=True, on_piece=lambda text, lp: seen.append((text, lp)) and False)
    assert not collector.add("Hel", [-0.1])
    collector.counts(9, 1)
    assert not collector.add("lo", [-0.2, -0.3])
    collector.counts(0, 3)  # 0: not reported, the last value stays
    assert not collector.add("", [])  # the empty final response is no piece
    answer = collector.answer()
    assert (answer.text, answer.token_logprobs, answer.deltas) == ("Hello", [-0.1, -0.2, -0.3], ["Hel", "lo"])
    assert (answer.input_tokens, answer.output_tokens) == (9, 3)
    assert seen == [("Hel", [-0.1]), ("lo", [-0.2, -0.3])]


def test_collector_whole_answer_and_missing_logprobs() -> None:
    collector = PieceCollector(stream=False)
    collector.add("whole answer", [-1.0, -2.0])
    collector.add("", None)  # an empty final response keeps the answer
    answer = collector.answer()
    assert (answer.text, answer.token_logprobs, answer.deltas, answer.output_tokens) == (
        "whole answer", [-1.0, -2.0], [], 2,
    )  # fmt: skip
    filled = PieceCollector(stream=True, fill_logprob=-0.5)
    filled.add("12345678", None)  # no log-probs sent: one filled value per estimated token (8 chars / 4)
    assert filled.answer().token_logprobs == [-0.5, -0.5] and filled.answer().output_tokens == 2
    estimated = PieceCollector(stream=True)
    estimated.add("123456789", None)
    assert estimated.answer().token_logprobs == [] and estimated.answer().output_tokens == 3


def test_collector_stops_when_asked() -> None:
    collector = PieceCollector(stream=True, on_piece=lambda text, lp: len(lp) > 1)
    assert not collector.add("a", [-1.0])
    assert collector.add("bc", [-1.0, -2.0])


# -- stream_results with a stand-in for tritonclient.grpc.aio -------------------------------------------------------
class _Param:
    def __init__(self, value: bool) -> None:
        self.bool_param = value


class _Response:
    def __init__(self, final: bool) -> None:
        self.parameters = {FINAL_RESPONSE: _Param(final)}


class _Result:
    def __init__(self, name: str, final: bool = False) -> None:
        self.name = name
        self.response = _Response(final)

    def get_response(self) -> _Response:
        return self.response


class _Responses:
    def __init__(self, items: list[tuple[Any, Any]], requests: Any) -> None:
        self.items = items
        self.requests = requests
        self.cancelled = False

    def __aiter__(self) -> _Responses:
        return self

    async def __anext__(self) -> tuple[Any, Any]:
        if not self.items:
            raise StopAsyncIteration
        return self.items.pop(0)

    def cancel(self) -> None:
        self.cancelled = True


class _Client:
    def __init__(self, items: list[tuple[Any, Any]]) -> None:
        self.items = items
        self.sent: list[dict[str, Any]] = []

    def stream_infer(self, requests: Any, stream_timeout: Any = None, headers: Any = None) -> _Responses:
        self.responses = _Responses(self.items, requests)
        return self.responses


async def _collect(client: _Client, limit: int | None = None, **options: Any) -> list[str]:
    names = []
    results = stream_results(client, {"model_name": "m", "inputs": [], "parameters": {"a": 1}}, **options)
    async for result in results:
        names.append(result.name)
        if limit is not None and len(names) >= limit:
            await results.aclose()
            break
    client.sent = [request async for request in client.responses.requests]
    return names


def test_stream_results_up_to_the_final_response() -> None:
    client = _Client([(_Result("a"), None), (_Result("b", final=True), None), (_Result("never"), None)])
    assert asyncio.run(_collect(client)) == ["a", "b"]
    assert client.sent == [{"model_name": "m", "inputs": [], "parameters": {"a": 1, ENABLE_EMPTY_FINAL_RESPONSE: True}}]
    assert not client.responses.cancelled  # a finished request is not cancelled


def test_stream_results_of_a_plain_model_end_after_one_response() -> None:
    client = _Client([(_Result("only"), None), (_Result("never"), None)])
    assert asyncio.run(_collect(client, decoupled=False)) == ["only"]


def test_stream_results_raise_errors_and_early_ends() -> None:
    client = _Client([(_Result("a"), None), (None, ValueError("tier failed"))])
    with pytest.raises(ValueError, match="tier failed"):
        asyncio.run(_collect(client))
    with pytest.raises(StreamClosedError):
        asyncio.run(_collect(_Client([(_Result("a"), None)])))


def test_stream_results_cancel_a_request_left_unfinished() -> None:
    client = _Client([(_Result("a"), None), (_Result("b", final=True), None)])
    assert asyncio.run(_collect(client, limit=1)) == ["a"]
    assert client.responses.cancelled
