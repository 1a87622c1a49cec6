"""router_client.client without a server: request tensors, parameters, response decoding, stream assembly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from router_client.client import (
    RouteOptions,
    RouterError,
    RouterResult,
    StreamAssembler,
    StreamDelta,
    build_inputs,
    decode_result,
)
from tritonclient.utils import InferenceServerException


def _bytes(value: str) -> np.ndarray:
    return np.array([value.encode("utf-8")], dtype=np.object_)


def _final_outputs(tier: str = "tier_medium", text: str = "", route: dict | None = None) -> dict[str, np.ndarray]:
    route = route if route is not None else {"intent": "coding", "attempts": []}
    return {
        "text_output": _bytes(text),
        "tier": _bytes(tier),
        "escalated": np.array([True]),
        "cost": np.array([0.00125], dtype=np.float32),
        "route": _bytes(json.dumps(route)),
    }


def test_inputs_are_text_and_optional_max_tokens() -> None:
    inputs = build_inputs("héllo wörld", 48)
    text, tokens = inputs
    assert (text.name(), text.datatype(), text.shape()) == ("text_input", "BYTES", [1])
    assert (tokens.name(), tokens.datatype(), tokens.shape()) == ("max_tokens", "INT32", [1])
    # tritonclient serializes BYTES as a 4-byte length followed by the UTF-8 bytes
    raw = text._get_content()
    assert raw[4:].decode("utf-8") == "héllo wörld"
    assert np.frombuffer(tokens._get_content(), dtype=np.int32).tolist() == [48]
    assert [i.name() for i in build_inputs("x")] == ["text_input"]


@pytest.mark.parametrize("bad", [0, -3])
def test_non_positive_max_tokens_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        build_inputs("x", bad)


def test_prompt_must_be_str() -> None:
    with pytest.raises(TypeError):
        build_inputs(b"bytes")  # type: ignore[arg-type]


def test_route_options_send_only_what_is_set() -> None:
    assert RouteOptions().parameters() == {}
    params = RouteOptions(
        force_tier="tier_large",
        min_tier="tier_small",
        max_tier="tier_large",
        confidence_threshold=-1,
        return_trace=True,
    ).parameters()
    assert params == {
        "force_tier": "tier_large",
        "min_tier": "tier_small",
        "max_tier": "tier_large",
        "confidence_threshold": -1.0,
        "return_trace": True,
    }
    assert isinstance(params["confidence_threshold"], float)  # tritonclient sends float as double_param
    assert RouteOptions(confidence_threshold=0.0).parameters() == {"confidence_threshold": 0.0}


def test_decode_result_reads_every_output() -> None:
    route = {
        "intent": "coding",
        "attempts": [
            {
                "tier": "tier_small",
                "status": "ok",
                "input_tokens": 10,
                "output_tokens": 4,
                "decision": "escalate",
            },
            {
                "tier": "tier_medium",
                "status": "ok",
                "input_tokens": 11,
                "output_tokens": 7,
                "decision": "accept",
            },
        ],
    }
    result = decode_result(_final_outputs(text="def f(): pass", route=route))
    assert result.text == "def f(): pass"
    assert result.tier == "tier_medium"
    assert result.escalated is True
    assert result.cost == pytest.approx(0.00125)
    assert result.intent == "coding"
    assert (result.prompt_tokens, result.completion_tokens) == (11, 7)
    assert result.to_dict()["route"] == route


def test_token_counts_are_zero_without_a_matching_attempt() -> None:
    result = RouterResult("x", "tier_large", False, 0.0, {"attempts": [{"tier": "tier_small", "status": "error"}]})
    assert (result.prompt_tokens, result.completion_tokens) == (0, 0)


def test_decode_result_without_tier_or_with_bad_route_is_an_error() -> None:
    outputs = _final_outputs()
    del outputs["tier"]
    with pytest.raises(RouterError, match="tier"):
        decode_result(outputs)
    outputs = _final_outputs()
    outputs["route"] = _bytes("{not json")
    with pytest.raises(RouterError, match="route"):
        decode_result(outputs)


def test_stream_assembler_yields_deltas_then_the_result() -> None:
    assembler = StreamAssembler()
    events = []
    events += assembler.feed({"text_output": _bytes("Hel"), "tier": _bytes("tier_small")}, final=False)
    events += assembler.feed({"text_output": _bytes("lo"), "tier": _bytes("tier_small")}, final=False)
    assert not assembler.done
    events += assembler.feed(_final_outputs(tier="tier_small"), final=True)
    assert events[:2] == [StreamDelta("Hel", "tier_small"), StreamDelta("lo", "tier_small")]
    result = events[2]
    assert isinstance(result, RouterResult)
    assert result.text == "Hello" and result.tier == "tier_small"
    assert assembler.done
    # an empty final response after the result (enable_empty_final_response) adds nothing
    assert assembler.feed({}, final=True) == []


def test_stream_ending_without_a_result_is_an_error() -> None:
    assembler = StreamAssembler()
    assembler.feed({"text_output": _bytes("partial"), "tier": _bytes("tier_small")}, final=False)
    with pytest.raises(RouterError, match="final response"):
        assembler.feed({"text_output": _bytes("more"), "tier": _bytes("tier_small")}, final=True)


def test_router_error_keeps_the_server_message_and_status() -> None:
    exc = InferenceServerException(msg="input 'text_input' is empty", status="StatusCode.INVALID_ARGUMENT")
    error = RouterError.from_triton(exc)
    assert error.message == "input 'text_input' is empty"
    assert error.status == "INVALID_ARGUMENT"
    assert str(error) == "INVALID_ARGUMENT: input 'text_input' is empty"
    assert str(RouterError.from_triton(InferenceServerException(msg="boom"))) == "boom"


def test_messages_go_as_one_json_input_with_an_empty_text_input() -> None:
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Grüße"}]
    text, messages = build_inputs("", None, conversation)
    assert (messages.name(), messages.datatype(), messages.shape()) == ("messages", "BYTES", [1])
    assert json.loads(messages._get_content()[4:].decode("utf-8")) == conversation
    assert text._get_content()[4:] == b""
    with pytest.raises(ValueError, match="either a prompt or messages"):
        build_inputs("hi", None, conversation)
    for bad in ([], [{"content": "no role"}], "just text"):
        with pytest.raises(ValueError, match="messages"):
            build_inputs("", None, bad)  # type: ignore[arg-type]


def test_cost_has_no_float32_noise() -> None:
    outputs = _final_outputs()
    outputs["cost"] = np.array([0.00106], dtype=np.float32)
    cost = decode_result(outputs).cost
    assert repr(cost) == "0.00106"  # not 0.0010600000387057662, float32 widened to float64
