"""The tier models in the real tritonserver over gRPC streaming: equal to transformers, streaming, chat templates,
in-flight batching, bad input."""

from __future__ import annotations

import json
import queue
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from llm_router.tier.chat import plain_conversation
from llm_router.tier.generation import Generator, SamplingParams
from router_export.stand_in import overlay_repository
from router_launcher.serve import LocalTritonServer

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What the shared test server serves: the repository with tiny stand-ins for the real tiers (tests/conftest.py).
SERVED = overlay_repository(PROJECT_ROOT / "model_repository")
TIERS = ["tier_small", "tier_medium", "tier_large"]
PROMPTS = ["Hello world, what is the capital of France?", "Write a haiku about routers."]
# A chat template for a copy of tier_small (the tiny tiers have none): BOS first, the tiny vocabulary's </s> ends turns.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}[{{ message['role'] }}]\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}[assistant]\n{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Another one?"},
]


@dataclass
class Reply:
    texts: list[str]
    logprobs: list[np.ndarray]
    input_tokens: int | None
    output_tokens: int | None
    finals: list[bool]
    error: str | None = None
    error_status: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def token_logprobs(self) -> np.ndarray:
        return np.concatenate(self.logprobs) if self.logprobs else np.zeros(0, dtype=np.float32)


def tensor(name: str, value: object, datatype: str) -> grpcclient.InferInput:
    if datatype == "BYTES":
        values = value if isinstance(value, list) else [value]
        array = np.array([[v.encode("utf-8") for v in values]], dtype=np.object_)
    else:
        array = np.array(
            [[value]], dtype={"INT32": np.int32, "FP32": np.float32, "UINT64": np.uint64, "BOOL": np.bool_}[datatype]
        )
    item = grpcclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return item


def call_tier(url: str, model: str, text: str, max_tokens: int, timeout_s: float = 60, **extra: object) -> Reply:
    """One request over the gRPC streaming API; collects every response up to the FINAL flag."""
    types = {
        "temperature": "FP32",
        "top_p": "FP32",
        "top_k": "INT32",
        "random_seed": "UINT64",
        "stop_words": "BYTES",
        "end_id": "INT32",
        "stream": "BOOL",
        "return_log_probs": "BOOL",
        "messages": "BYTES",
        "raw": "BOOL",
    }
    inputs = [tensor("text_input", text, "BYTES"), tensor("max_tokens", max_tokens, "INT32")]
    extra.setdefault("return_log_probs", True)
    inputs += [tensor(name, value, types[name]) for name, value in extra.items()]
    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    reply = Reply([], [], None, None, [])
    try:
        client.async_stream_infer(model, inputs, enable_empty_final_response=True)
        while True:
            result, error = responses.get(timeout=timeout_s)
            if error is not None:
                reply.error, reply.error_status = error.message(), error.status()
                return reply
            final = result.get_response().parameters["triton_final_response"].bool_param
            reply.finals.append(final)
            if result.as_numpy("text_output") is not None:
                reply.texts.append(result.as_numpy("text_output").reshape(-1)[0].decode("utf-8"))
                reply.logprobs.append(result.as_numpy("output_log_probs").reshape(-1))
                reply.input_tokens = int(result.as_numpy("input_tokens").reshape(-1)[0])
                reply.output_tokens = int(result.as_numpy("output_tokens").reshape(-1)[0])
            if final:
                return reply
    finally:
        client.stop_stream()
        client.close()


def hf_source(tier: str) -> Path:
    """The Hugging Face directory a tier was exported from (export.json), or skip."""
    stamp = SERVED / tier / "1" / "model" / "export.json"
    source = Path(json.loads(stamp.read_text())["source"])
    if not (source / "config.json").exists():
        pytest.skip(f"{tier} was exported from {source}, which is not on this machine")
    return source


def hf_greedy(source: Path, prompt: str, max_new_tokens: int) -> tuple[list[int], np.ndarray, str, int]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source).eval()
    encoded = tokenizer(prompt, return_tensors="pt")
    out = model.generate(
        **encoded, max_new_tokens=max_new_tokens, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    new = out.sequences[0, encoded.input_ids.shape[1] :].tolist()
    logprobs = np.array([torch.log_softmax(s[0].float(), -1)[t].item() for s, t in zip(out.logits, new, strict=True)])
    return new, logprobs, tokenizer.decode(new, skip_special_tokens=True), int(encoded.input_ids.shape[1])


@pytest.mark.parametrize("tier", TIERS)
def test_greedy_text_and_logprobs_equal_transformers_generate(triton_server: LocalTritonServer, tier: str) -> None:
    source = hf_source(tier)
    for prompt in PROMPTS:
        tokens, logprobs, text, prompt_tokens = hf_greedy(source, prompt, 24)
        assert len(tokens) == 24, "the tiny tier should not stop early"
        reply = call_tier(triton_server.grpc_url, tier, prompt, 24)
        assert reply.error is None, reply.error
        assert reply.finals == [True], "a non-streaming request gets exactly one response, the final one"
        assert reply.text == text
        assert reply.output_tokens == 24 and reply.input_tokens == prompt_tokens
        np.testing.assert_allclose(reply.token_logprobs, logprobs, atol=2e-3)


def test_streaming_sends_the_same_text_in_several_responses(triton_server: LocalTritonServer) -> None:
    unary = call_tier(triton_server.grpc_url, "tier_medium", PROMPTS[0], 20)
    streamed = call_tier(triton_server.grpc_url, "tier_medium", PROMPTS[0], 20, stream=True)
    assert streamed.error is None, streamed.error
    assert len(streamed.finals) > 3
    assert streamed.finals[-1] and not any(streamed.finals[:-1])
    assert streamed.text == unary.text
    assert streamed.output_tokens == 20
    np.testing.assert_allclose(streamed.token_logprobs, unary.token_logprobs, atol=1e-5)


def test_concurrent_requests_all_get_their_own_answer(triton_server: LocalTritonServer) -> None:
    prompts = [f"{PROMPTS[i % 2]} number {i}" for i in range(8)]
    alone = [call_tier(triton_server.grpc_url, "tier_small", p, 6 + i) for i, p in enumerate(prompts)]
    with ThreadPoolExecutor(8) as pool:
        together = list(
            pool.map(lambda a: call_tier(triton_server.grpc_url, "tier_small", a[1], 6 + a[0]), enumerate(prompts))
        )
    for one, other in zip(alone, together, strict=True):
        assert other.error is None and other.text == one.text
        assert other.output_tokens == one.output_tokens
        np.testing.assert_allclose(other.token_logprobs, one.token_logprobs, atol=2e-3)


def test_sampling_stop_words_and_end_id(triton_server: LocalTritonServer) -> None:
    url = triton_server.grpc_url
    sampled = [
        call_tier(url, "tier_small", PROMPTS[1], 16, temperature=1.2, top_p=0.9, top_k=50, random_seed=7)
        for _ in range(2)
    ]
    greedy = call_tier(url, "tier_small", PROMPTS[1], 16)
    assert sampled[0].error is None and sampled[0].text == sampled[1].text != greedy.text
    stop = greedy.text[len(greedy.text) // 2 : len(greedy.text) // 2 + 3]
    stopped = call_tier(url, "tier_small", PROMPTS[1], 16, stop_words=[stop, "zzzzqqq"], stream=True)
    assert stopped.text == greedy.text[: greedy.text.index(stop)]
    assert stopped.finals[-1]


@pytest.mark.parametrize(
    ("text", "max_tokens", "extra", "message"),
    [
        ("", 8, {}, "empty"),
        ("   ", 8, {}, "empty"),
        ("hi", 0, {}, "max_tokens must be >= 1"),
        ("hi", -3, {}, "max_tokens must be >= 1"),
        ("hi", 100000, {}, "above this model's limit"),
        ("hi", 8, {"temperature": -1.0}, "temperature must be >= 0"),
        ("hi", 8, {"top_p": 0.0}, "top_p must be in (0, 1]"),
        ("hi", 8, {"top_p": 1.5}, "top_p must be in (0, 1]"),
        ("hi", 8, {"top_k": -2}, "top_k must be >= 0"),
        ("word " * 2500, 8, {}, "context is 2048 tokens"),
        ("word " * 300, 1900, {}, "exceed this model's context"),
    ],
)
def test_bad_input_gets_invalid_arg(
    triton_server: LocalTritonServer, text: str, max_tokens: int, extra: dict, message: str
) -> None:
    for stream in (False, True):
        reply = call_tier(triton_server.grpc_url, "tier_small", text, max_tokens, stream=stream, **extra)
        assert reply.error is not None and message in reply.error, reply.error
        # (the gRPC stream carries only the error message, not Triton's INVALID_ARG code)
        assert reply.texts == []


def start_long_stream(url: str, model: str) -> tuple[grpcclient.InferenceServerClient, queue.Queue]:
    """A streamed 400-token request in flight on its own client; its (result, error) pairs arrive on the queue."""
    client = grpcclient.InferenceServerClient(url)
    got: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: got.put((result, error)))
    inputs = [
        tensor("text_input", PROMPTS[0], "BYTES"),
        tensor("max_tokens", 400, "INT32"),
        tensor("stream", True, "BOOL"),
    ]
    client.async_stream_infer(model, inputs)
    return client, got


def test_cancelled_stream_leaves_the_tier_serving(triton_server: LocalTritonServer) -> None:
    url = triton_server.grpc_url
    client, got = start_long_stream(url, "tier_large")
    first, error = got.get(timeout=30)
    assert error is None
    client.stop_stream(cancel_requests=True)
    client.close()
    reply = call_tier(url, "tier_large", PROMPTS[1], 4)
    assert reply.error is None and reply.output_tokens == 4


# -- chat templates ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chat_tier(
    triton_server: LocalTritonServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Generator]]:
    """A copy of tier_small whose tokenizer has a chat template, loaded into the running server as `tier_chat`
    (config and files sent with the load request)."""
    import tritonclient.grpc as grpcclient

    version_dir = SERVED / "tier_small" / "1"
    local = tmp_path_factory.mktemp("tier_chat") / "model"
    shutil.copytree(version_dir / "model", local)
    tokenizer_config = local / "tokenizer_config.json"
    settings = json.loads(tokenizer_config.read_text())
    tokenizer_config.write_text(json.dumps({**settings, "chat_template": CHAT_TEMPLATE}))
    files = {"file:1/model.py": (version_dir / "model.py").read_bytes()}
    files.update({f"file:1/model/{path.name}": path.read_bytes() for path in local.iterdir() if path.is_file()})
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    config = client.get_model_config("tier_small", as_json=True)["config"]
    client.load_model("tier_chat", config=json.dumps({**config, "name": "tier_chat"}), files=files)
    try:
        yield "tier_chat", Generator(local)
    finally:
        client.unload_model("tier_chat")
        client.close()


def test_conversation_is_templated_and_counted(triton_server: LocalTritonServer, chat_tier) -> None:
    tier, generator = chat_tier
    url = triton_server.grpc_url
    messages = json.dumps(CONVERSATION)
    expected = generator.generate(None, SamplingParams(max_tokens=10), messages=messages)
    for stream in (False, True):
        reply = call_tier(url, tier, "", 10, messages=messages, stream=stream)
        assert reply.error is None, reply.error
        assert reply.text == expected.text and reply.output_tokens == 10
        assert reply.input_tokens == expected.input_tokens == len(generator.prompt_ids(messages=messages))
        np.testing.assert_allclose(reply.token_logprobs, expected.logprobs, atol=2e-3)
    # text_input alone is one user message; raw sends it untouched (the tokenizer's own BOS only)
    as_user = call_tier(url, tier, PROMPTS[0], 8)
    one_message = call_tier(url, tier, "", 8, messages=json.dumps([{"role": "user", "content": PROMPTS[0]}]))
    raw = call_tier(url, tier, PROMPTS[0], 8, raw=True)
    plain = call_tier(url, "tier_small", PROMPTS[0], 8)
    assert as_user.text == one_message.text and as_user.input_tokens == one_message.input_tokens
    assert as_user.input_tokens == len(generator.prompt_ids(PROMPTS[0]))
    assert raw.text == plain.text and raw.input_tokens == plain.input_tokens < as_user.input_tokens


def test_a_tier_without_template_renders_a_conversation_as_plain_text(triton_server: LocalTritonServer) -> None:
    url = triton_server.grpc_url
    plain = call_tier(url, "tier_small", PROMPTS[0], 8)
    message = call_tier(url, "tier_small", "", 8, messages=json.dumps([{"role": "user", "content": PROMPTS[0]}]))
    assert message.error is None and message.text == plain.text and message.input_tokens == plain.input_tokens
    many = call_tier(url, "tier_small", "", 8, messages=json.dumps(CONVERSATION))
    flat = call_tier(url, "tier_small", plain_conversation(CONVERSATION), 8)
    assert many.error is None and (many.text, many.input_tokens) == (flat.text, flat.input_tokens)


@pytest.mark.parametrize(
    ("text", "messages", "message"),
    [
        ("", "[{'role': 'user'}]", "'messages' is not valid JSON"),
        ("", '{"role": "user", "content": "hi"}', "must be a JSON list"),
        ("", '[{"role": "robot", "content": "hi"}]', "has role 'robot'"),
        ("", '[{"role": "user"}]', "messages[0] (user) has no 'content'"),
        ("", '[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]', "'image_url' part"),
        ("hello", '[{"role": "user", "content": "hi"}]', "either text_input or messages"),
        ("", json.dumps([{"role": "user", "content": "word " * 2500}]), "this model's context is 2048 tokens"),
    ],
)
def test_bad_conversations_get_invalid_arg(
    triton_server: LocalTritonServer, chat_tier, text: str, messages: str, message: str
) -> None:
    tier, _ = chat_tier
    for stream in (False, True):
        reply = call_tier(triton_server.grpc_url, tier, text, 8, messages=messages, stream=stream)
        assert reply.error is not None and message in reply.error, reply.error
        assert reply.texts == []


# -- in-flight batching ------------------------------------------------------------------------------------------
def test_a_request_joining_a_running_generation_gets_its_alone_answer(triton_server: LocalTritonServer) -> None:
    url = triton_server.grpc_url
    long_tokens = 1200  # the tiny tier makes ~1,000 tokens/s: long enough to be decoding when the short ones come
    alone_long = call_tier(url, "tier_small", PROMPTS[0], long_tokens)
    alone_short = [call_tier(url, "tier_small", f"{PROMPTS[1]} {i}", 5 + i) for i in range(3)]
    client = grpcclient.InferenceServerClient(url)
    got: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: got.put((result, error, time.monotonic())))
    inputs = [
        tensor("text_input", PROMPTS[0], "BYTES"),
        tensor("max_tokens", long_tokens, "INT32"),
        tensor("stream", True, "BOOL"),
        tensor("return_log_probs", True, "BOOL"),
    ]
    try:
        client.async_stream_infer("tier_small", inputs, enable_empty_final_response=True)
        responses = [got.get(timeout=30)]  # the long request is decoding
        shorts = [call_tier(url, "tier_small", f"{PROMPTS[1]} {i}", 5 + i) for i in range(3)]
        shorts_done = time.monotonic()
        while not responses[-1][0].get_response().parameters["triton_final_response"].bool_param:
            responses.append(got.get(timeout=60))
            assert responses[-1][1] is None, responses[-1][1]
    finally:
        client.stop_stream()
        client.close()
    assert shorts_done < responses[-1][2], "the short requests waited for the long one to finish"
    pieces = [r.as_numpy("text_output") for r, _, _ in responses if r.as_numpy("text_output") is not None]
    logprobs = [
        r.as_numpy("output_log_probs").reshape(-1) for r, _, _ in responses if r.as_numpy("text_output") is not None
    ]
    assert "".join(p.reshape(-1)[0].decode() for p in pieces) == alone_long.text
    np.testing.assert_allclose(np.concatenate(logprobs), alone_long.token_logprobs, atol=2e-3)
    for got_short, alone in zip(shorts, alone_short, strict=True):
        assert got_short.error is None and got_short.text == alone.text
        assert got_short.output_tokens == alone.output_tokens
        np.testing.assert_allclose(got_short.token_logprobs, alone.token_logprobs, atol=2e-3)


def test_cancelling_one_stream_leaves_the_batch_generating(triton_server: LocalTritonServer) -> None:
    url = triton_server.grpc_url
    expected = call_tier(url, "tier_small", PROMPTS[1], 60)
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(call_tier, url, "tier_small", PROMPTS[1], 60, stream=True)
        client, got = start_long_stream(url, "tier_small")
        assert got.get(timeout=30)[1] is None
        client.stop_stream(cancel_requests=True)
        client.close()
        reply = other.result(timeout=60)
    assert reply.error is None and reply.text == expected.text and reply.output_tokens == 60
