"""llm_router.tier.generation without Triton: sampling, text assembly, and the ONNX decoder loop vs PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from llm_router.tier.generation import (
    GenerationInputError,
    GenerationRequest,
    Generator,
    SamplingParams,
    TextAssembler,
    choose_token,
    log_softmax,
)
from router_export.tiers import ExportOptions, export_tier
from router_export.tiny_tiers import TINY_TIERS, build_hf_model

PROMPTS = ["Hello world, what is the capital of France?", "def f(x): return", "Tell me a story about a dog."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Generator]:
    """The small tiny tier built from scratch: (HF dir, Generator on its ONNX export)."""
    work = tmp_path_factory.mktemp("tiny")
    hf_dir = work / "hf"
    build_hf_model(TINY_TIERS[0], hf_dir)
    repo = work / "repo"
    repo.mkdir()
    target = export_tier(hf_dir, ExportOptions(tier="tier_small", model_repository=repo))
    return hf_dir, Generator(target)


def hf_greedy(hf_dir: Path, prompt: str, max_new_tokens: int) -> tuple[list[int], list[float], str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    encoded = tokenizer(prompt, return_tensors="pt")
    out = model.generate(
        **encoded, max_new_tokens=max_new_tokens, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    new = out.sequences[0, encoded.input_ids.shape[1] :].tolist()
    logprobs = [torch.log_softmax(step[0].float(), -1)[tok].item() for step, tok in zip(out.logits, new, strict=True)]
    return new, logprobs, tokenizer.decode(new, skip_special_tokens=True)


# -- sampling ----------------------------------------------------------------------------------------
def test_greedy_picks_argmax_and_reports_raw_logprob() -> None:
    logits = np.array([0.1, 3.0, 2.0, -1.0], dtype=np.float32)
    token, logprob = choose_token(logits, SamplingParams(max_tokens=1), np.random.default_rng(0))
    assert token == 1
    assert logprob == pytest.approx(float(log_softmax(logits)[1]))
    # top_k 1 is greedy too, whatever the temperature
    assert (
        choose_token(logits, SamplingParams(max_tokens=1, temperature=5.0, top_k=1), np.random.default_rng(0))[0] == 1
    )


def test_top_k_and_top_p_restrict_the_candidates() -> None:
    logits = np.array([5.0, 4.0, 3.0, 0.0, -2.0], dtype=np.float32)
    rng = np.random.default_rng(1)
    top_k = {choose_token(logits, SamplingParams(1, temperature=3.0, top_k=2), rng)[0] for _ in range(300)}
    assert top_k == {0, 1}
    probs = np.exp(log_softmax(logits))  # p0 ~0.66, p0+p1 ~0.90
    top_p = {choose_token(logits, SamplingParams(1, temperature=1.0, top_p=0.8), rng)[0] for _ in range(300)}
    assert top_p == {0, 1} and probs[0] < 0.8
    every = {choose_token(logits, SamplingParams(1, temperature=10.0), rng)[0] for _ in range(500)}
    assert every == {0, 1, 2, 3, 4}


def test_sampling_logprob_ignores_temperature() -> None:
    logits = np.array([2.0, 1.0, 0.5], dtype=np.float32)
    token, logprob = choose_token(logits, SamplingParams(1, temperature=7.0), np.random.default_rng(3))
    assert logprob == pytest.approx(float(log_softmax(logits)[token]))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (SamplingParams(max_tokens=0), "max_tokens must be >= 1"),
        (SamplingParams(max_tokens=-5), "max_tokens must be >= 1"),
        (SamplingParams(max_tokens=600), "above this model's limit of 512"),
        (SamplingParams(max_tokens=4, temperature=-0.1), "temperature must be >= 0"),
        (SamplingParams(max_tokens=4, temperature=float("nan")), "temperature must be >= 0"),
        (SamplingParams(max_tokens=4, top_p=0.0), "top_p must be in (0, 1]"),
        (SamplingParams(max_tokens=4, top_p=1.5), "top_p must be in (0, 1]"),
        (SamplingParams(max_tokens=4, top_k=-1), "top_k must be >= 0"),
        (SamplingParams(max_tokens=4, stop_words=("",)), "empty string"),
    ],
)
def test_bad_sampling_values_are_rejected(params: SamplingParams, message: str) -> None:
    with pytest.raises(GenerationInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        params.validate(512)


# -- text assembly -----------------------------------------------------------------------------------
def char_decoder(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


def test_text_assembler_holds_back_a_possible_stop_word_and_cuts_before_it() -> None:
    text = TextAssembler(char_decoder, stop_words=["END"])
    deltas = [text.add(ord(c)) for c in "abcEN"]
    assert "".join(deltas) == "abc"  # "EN" could start "END"
    assert not text.stopped
    assert text.add(ord("X")) == "ENX"  # it did not
    assert "".join(text.add(ord(c)) for c in "yEND") == "y"
    assert text.stopped and text.text == "abcENXy"


def test_text_assembler_holds_back_incomplete_utf8() -> None:
    data = "é!".encode()  # 0xC3 0xA9 0x21

    def byte_decoder(ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    text = TextAssembler(byte_decoder)
    assert text.add(data[0]) == ""
    assert text.add(data[1]) == "é"
    assert text.add(data[2]) == "!"
    assert text.flush() == ""


# -- the ONNX decoder loop ---------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_generation_equals_transformers_generate(tiny: tuple[Path, Generator], prompt: str) -> None:
    hf_dir, generator = tiny
    tokens, logprobs, text = hf_greedy(hf_dir, prompt, 20)
    result = generator.generate(prompt, SamplingParams(max_tokens=20))
    assert len(tokens) == 20  # the tiny tiers never pick their end token
    assert result.token_ids == tokens
    assert result.text == text
    np.testing.assert_allclose(result.logprobs, logprobs, atol=1e-3)
    assert result.finish_reason == "length" and result.output_tokens == 20


def test_batched_generation_equals_one_by_one(tiny: tuple[Path, Generator]) -> None:
    _, generator = tiny
    lengths = [5, 12, 8]
    requests = [
        GenerationRequest(generator.encode(p), SamplingParams(max_tokens=n))
        for p, n in zip(PROMPTS, lengths, strict=True)
    ]
    tokens: dict[int, list[int]] = {i: [] for i in range(len(PROMPTS))}
    logprobs: dict[int, list[float]] = {i: [] for i in range(len(PROMPTS))}
    finished = []
    for event in generator.generate_batch(requests):
        if event.token_id is not None:
            tokens[event.index].append(event.token_id)
            logprobs[event.index].append(event.logprob)
        if event.finished:
            finished.append(event.index)
    assert sorted(finished) == [0, 1, 2] and finished[0] == 0  # the shortest leaves the batch first
    for index, (prompt, n) in enumerate(zip(PROMPTS, lengths, strict=True)):
        alone = generator.generate(prompt, SamplingParams(max_tokens=n))
        assert tokens[index] == alone.token_ids
        np.testing.assert_allclose(logprobs[index], alone.logprobs, atol=1e-3)


def test_end_id_and_stop_words_end_generation(tiny: tuple[Path, Generator]) -> None:
    _, generator = tiny
    full = generator.generate(PROMPTS[0], SamplingParams(max_tokens=12))
    end = full.token_ids[4]
    first = full.token_ids.index(end)
    ended = generator.generate(PROMPTS[0], SamplingParams(max_tokens=12, end_ids=frozenset([end])))
    assert ended.token_ids == full.token_ids[:first]
    assert ended.finish_reason == "stop"
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    stopped = generator.generate(PROMPTS[0], SamplingParams(max_tokens=12, stop_words=(stop,)))
    assert stopped.text == full.text[: full.text.index(stop)]
    assert stopped.finish_reason == "stop" and stopped.output_tokens < 12


def test_seeded_sampling_repeats_and_differs_from_greedy(tiny: tuple[Path, Generator]) -> None:
    _, generator = tiny
    params = SamplingParams(max_tokens=16, temperature=1.5, top_p=0.95, random_seed=1234)
    first = generator.generate(PROMPTS[1], params)
    again = generator.generate(PROMPTS[1], params)
    greedy = generator.generate(PROMPTS[1], SamplingParams(max_tokens=16))
    assert first.token_ids == again.token_ids
    assert first.token_ids != greedy.token_ids


def test_cancellation_stops_generation(tiny: tuple[Path, Generator]) -> None:
    _, generator = tiny
    calls = {"n": 0}

    def cancelled() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    request = GenerationRequest(generator.encode(PROMPTS[0]), SamplingParams(max_tokens=50), cancelled)
    events = list(generator.generate_batch([request]))
    assert sum(e.token_id is not None for e in events) == 3
    assert events[-1].finished and events[-1].finish_reason == "cancelled"


def test_prompts_that_do_not_fit_the_context_are_rejected(tiny: tuple[Path, Generator]) -> None:
    _, generator = tiny
    long_prompt = "word " * 2500
    with pytest.raises(GenerationInputError, match="context is 2048 tokens"):
        generator.prepare(long_prompt, SamplingParams(max_tokens=1))
    prompt = "word " * 200
    with pytest.raises(GenerationInputError, match="exceed this model's context of 2048"):
        generator.prepare(prompt, SamplingParams(max_tokens=1900))
