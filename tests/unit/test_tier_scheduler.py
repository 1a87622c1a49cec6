"""In-flight batching (llm_router.tier.generation.DecodeBatch / InflightScheduler) on the tiny ONNX tier.

A request that joins a running batch, or shares it with others, must get the tokens it gets alone (greedy and
seeded sampling) and log-probs equal up to float noise; cancellation, errors and stopping answer every request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import pytest
from llm_router.tier.generation import (
    DecodeBatch,
    GenerationRequest,
    Generator,
    InflightScheduler,
    SamplingParams,
    SchedulerStopped,
    TokenEvent,
)
from router_export.tiers import ExportOptions, export_tier
from router_export.tiny_tiers import TINY_TIERS, build_hf_model

PROMPTS = [
    "Hello world, what is the capital of France?",
    "def f(x): return",
    "Tell me a story about a dog that learned to fly over the mountains and the sea.",
    "Hi",
]
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Generator:
    work = tmp_path_factory.mktemp("sched")
    build_hf_model(TINY_TIERS[0], work / "hf")
    repo = work / "repo"
    repo.mkdir()
    return Generator(export_tier(work / "hf", ExportOptions(tier="tier_small", model_repository=repo)))


@dataclass
class Collected:
    """Everything one request received from the scheduler."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    reason: str | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def on_event(self, event: TokenEvent) -> None:
        if event.token_id is not None:
            self.tokens.append(event.token_id)
            self.logprobs.append(event.logprob)
        self.text.append(event.text_delta)
        if event.finished:
            self.reason = event.finish_reason
            self.done.set()

    def on_error(self, exc: BaseException) -> None:
        self.error = exc
        self.done.set()

    def wait(self) -> Collected:
        assert self.done.wait(TIMEOUT_S), "the request never finished"
        return self


def submit(scheduler: InflightScheduler, generator: Generator, prompt: str, params: SamplingParams, **kw) -> Collected:
    out = Collected()
    request = GenerationRequest(generator.encode(prompt), params, **kw)
    scheduler.submit(request, out.on_event, out.on_error)
    return out


def assert_same_as_alone(generator: Generator, prompt: str, params: SamplingParams, got: Collected) -> None:
    alone = generator.generate(prompt, params)
    assert got.error is None, got.error
    assert got.tokens == alone.token_ids
    assert "".join(got.text) == alone.text
    assert got.reason == alone.finish_reason
    np.testing.assert_allclose(got.logprobs, alone.logprobs, atol=1e-4)


def test_requests_joining_a_decoding_batch_get_what_they_get_alone(generator: Generator) -> None:
    """Each request is submitted from the previous one's callback after its 3rd token: it joins mid-generation."""
    scheduler = InflightScheduler(generator, max_rows=8)
    params = [SamplingParams(max_tokens=n) for n in (20, 9, 14, 6)]
    outs = [Collected() for _ in PROMPTS]
    active_at_join: list[int] = []

    def chain(index: int):
        def on_event(event: TokenEvent) -> None:
            outs[index].on_event(event)
            if len(outs[index].tokens) == 3 and index + 1 < len(PROMPTS) and not outs[index + 1].tokens:
                active_at_join.append(scheduler.active_rows)
                request = GenerationRequest(generator.encode(PROMPTS[index + 1]), params[index + 1])
                scheduler.submit(request, chain(index + 1), outs[index + 1].on_error)

        return on_event

    try:
        scheduler.submit(GenerationRequest(generator.encode(PROMPTS[0]), params[0]), chain(0), outs[0].on_error)
        for out in outs:
            out.wait()
    finally:
        scheduler.stop()
    assert active_at_join and all(rows >= 1 for rows in active_at_join), "each request joined a running batch"
    for prompt, param, out in zip(PROMPTS, params, outs, strict=True):
        assert_same_as_alone(generator, prompt, param, out)


def test_concurrent_mixed_requests_equal_alone(generator: Generator) -> None:
    """Greedy, seeded sampling, stop words and end ids in one batch, submitted from several threads."""
    full = generator.generate(PROMPTS[0], SamplingParams(max_tokens=12))
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    cases = [
        (PROMPTS[0], SamplingParams(max_tokens=12, stop_words=(stop,))),
        (PROMPTS[0], SamplingParams(max_tokens=12, end_ids=frozenset([full.token_ids[5]]))),
        (PROMPTS[1], SamplingParams(max_tokens=16, temperature=1.3, top_p=0.9, random_seed=11)),
        (PROMPTS[2], SamplingParams(max_tokens=16, temperature=0.8, top_k=20, random_seed=5)),
        (PROMPTS[3], SamplingParams(max_tokens=25)),
        (PROMPTS[2], SamplingParams(max_tokens=3)),
    ]
    scheduler = InflightScheduler(generator, max_rows=4)  # more requests than rows: some wait for a free row
    try:
        outs: list[Collected | None] = [None] * len(cases)

        def run(index: int) -> None:
            outs[index] = submit(scheduler, generator, *cases[index])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cases))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for out in outs:
            assert out is not None
            out.wait()
    finally:
        scheduler.stop()
    for (prompt, params), out in zip(cases, outs, strict=True):
        assert_same_as_alone(generator, prompt, params, out)
    assert outs[0].reason == "stop" and outs[1].reason == "stop"


def test_batch_cache_grows_for_a_longer_prompt_and_shrinks_when_it_leaves(generator: Generator) -> None:
    batch = DecodeBatch(generator)
    short = GenerationRequest(generator.encode(PROMPTS[3]), SamplingParams(max_tokens=10))
    long = GenerationRequest(generator.encode(PROMPTS[2]), SamplingParams(max_tokens=3))
    events: dict[str, list[TokenEvent]] = {"short": [], "long": []}
    for key, event in batch.admit([short], keys=["short"]):
        events[key].append(event)
    for key, event in batch.step():
        events[key].append(event)
    assert batch.attention.shape == (1, len(short.prompt_ids) + 1)
    for key, event in batch.admit([long], keys=["long"]):  # longer than the running row: the running row is padded
        events[key].append(event)
    assert batch.attention.shape == (2, len(long.prompt_ids))
    assert batch.attention[0].sum() == len(short.prompt_ids) + 1
    past = next(iter(batch.past.values()))
    assert past.shape[0] == 2 and past.shape[2] == len(long.prompt_ids)
    while "long" in batch.keys:
        for key, event in batch.step():
            events[key].append(event)
    # the long row left: the columns only it used are cut, the short row's cache is as long as its own tokens
    real = len(short.prompt_ids) + sum(e.token_id is not None for e in events["short"]) - 1
    assert batch.attention.shape == (1, real) and batch.attention.all()
    assert next(iter(batch.past.values())).shape[2] == real
    while len(batch):
        for key, event in batch.step():
            events[key].append(event)
    for name, request in (("short", short), ("long", long)):
        alone = list(generator.generate_batch([request]))
        assert [e.token_id for e in events[name]] == [e.token_id for e in alone]


def test_cancelling_one_row_leaves_the_others_untouched(generator: Generator) -> None:
    scheduler = InflightScheduler(generator)
    cancel = threading.Event()
    try:
        doomed = submit(scheduler, generator, PROMPTS[0], SamplingParams(max_tokens=200), is_cancelled=cancel.is_set)
        kept = submit(scheduler, generator, PROMPTS[1], SamplingParams(max_tokens=30))
        while len(doomed.tokens) < 5:
            assert not doomed.done.wait(0.01)
        cancel.set()
        doomed.wait()
        kept.wait()
    finally:
        scheduler.stop()
    assert doomed.reason == "cancelled" and 5 <= len(doomed.tokens) < 200
    assert_same_as_alone(generator, PROMPTS[1], SamplingParams(max_tokens=30), kept)


def test_a_request_cancelled_while_waiting_is_not_prefilled(generator: Generator) -> None:
    scheduler = InflightScheduler(generator, max_rows=1)
    try:
        first = submit(scheduler, generator, PROMPTS[0], SamplingParams(max_tokens=40))
        waiting = submit(scheduler, generator, PROMPTS[1], SamplingParams(max_tokens=40), is_cancelled=lambda: True)
        waiting.wait()
        assert not first.done.is_set(), "the cancelled request was answered while the only row was busy"
        first.wait()
    finally:
        scheduler.stop()
    assert waiting.reason == "cancelled" and waiting.tokens == []
    assert first.reason == "length" and len(first.tokens) == 40


def test_a_failing_step_fails_its_batch_and_the_scheduler_goes_on(
    generator: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_step = generator.decoder.step
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("device lost")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(generator.decoder, "step", flaky)
    scheduler = InflightScheduler(generator)
    try:
        failed = [submit(scheduler, generator, p, SamplingParams(max_tokens=10)) for p in PROMPTS[:2]]
        for out in failed:
            out.wait()
        after = submit(scheduler, generator, PROMPTS[2], SamplingParams(max_tokens=8)).wait()
    finally:
        scheduler.stop()
    assert all(isinstance(out.error, RuntimeError) and "device lost" in str(out.error) for out in failed)
    monkeypatch.undo()
    assert_same_as_alone(generator, PROMPTS[2], SamplingParams(max_tokens=8), after)


def test_a_caller_whose_callback_fails_is_dropped(generator: Generator) -> None:
    scheduler = InflightScheduler(generator)
    broken = Collected()

    def explode(event: TokenEvent) -> None:
        broken.on_event(event)
        if event.token_id is not None and not event.finished:
            raise ConnectionError("client went away")

    try:
        scheduler.submit(GenerationRequest(generator.encode(PROMPTS[0]), SamplingParams(max_tokens=50)), explode, print)
        healthy = submit(scheduler, generator, PROMPTS[1], SamplingParams(max_tokens=12)).wait()
        broken.wait()
    finally:
        scheduler.stop()
    assert broken.reason == "cancelled" and len(broken.tokens) == 1
    assert_same_as_alone(generator, PROMPTS[1], SamplingParams(max_tokens=12), healthy)


def test_stop_answers_running_and_waiting_requests(generator: Generator) -> None:
    scheduler = InflightScheduler(generator, max_rows=1)
    running = submit(scheduler, generator, PROMPTS[0], SamplingParams(max_tokens=1000))
    waiting = submit(scheduler, generator, PROMPTS[1], SamplingParams(max_tokens=10))
    while not running.tokens:
        assert not running.done.wait(0.01)
    scheduler.stop(timeout_s=TIMEOUT_S)
    assert isinstance(running.wait().error, SchedulerStopped)
    assert isinstance(waiting.wait().error, SchedulerStopped)
    with pytest.raises(SchedulerStopped):
        submit(scheduler, generator, PROMPTS[1], SamplingParams(max_tokens=10))
