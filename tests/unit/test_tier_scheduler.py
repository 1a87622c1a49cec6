"""In-flight batching (llm_router.tier.generation.DecodeBatch / InflightScheduler) on the tiny ONNX tier.

A request that joins a running batch, or shares it with others, must get the tokens it gets alone (greedy and
seeded sampling) and log-probs equal up to float noise; so must requests prefilled together (left-padded, one call)
and from a cached prompt prefix. Cancellation, errors and stopping answer every request.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from helpers import export_tiny_tier
from llm_router.tier.generation import (
    DecodeBatch,
    GenerationRequest,
    Generator,
    InflightScheduler,
    PrefixCache,
    SamplingParams,
    SchedulerStopped,
    TokenEvent,
)

PROMPTS = [
    "Hello world, what is the capital of France?",
    "def f(x): return",
    "Tell me a story about a dog that learned to fly over the mountains and the sea.",
    "Hi",
]
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny tier's exported model folder (no chat template)."""
    return export_tiny_tier(tmp_path_factory.mktemp("sched"))


@pytest.fixture(scope="module")
def generator(model_dir: Path) -> Generator:
    return Generator(model_dir)


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


# -- batched prefill, prefix cache, gathering ---------------------------------------------------------------
@pytest.fixture
def prefills(generator: Generator, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """(rows, tokens fed per row, cached positions before them) of each prefill call (> 1 token fed) from now on."""
    calls: list[tuple[int, int, int]] = []
    real_step = generator.decoder.step

    def recording(input_ids, attention, positions, past):
        if input_ids.shape[1] > 1:
            calls.append((input_ids.shape[0], input_ids.shape[1], next(iter(past.values())).shape[2]))
        return real_step(input_ids, attention, positions, past)

    monkeypatch.setattr(generator.decoder, "step", recording)
    return calls


def run_to_end(batch: DecodeBatch, events: dict[str, list[TokenEvent]]) -> None:
    while len(batch):
        for key, event in batch.step():
            events[key].append(event)


def assert_events_equal_alone(generator: Generator, request: GenerationRequest, got: list[TokenEvent]) -> None:
    alone = list(generator.generate_batch([GenerationRequest(request.prompt_ids, request.params)]))
    assert [e.token_id for e in got] == [e.token_id for e in alone]
    assert [e.finish_reason for e in got] == [e.finish_reason for e in alone]
    assert "".join(e.text_delta for e in got) == "".join(e.text_delta for e in alone)
    np.testing.assert_allclose(
        [e.logprob for e in got if e.logprob is not None],
        [e.logprob for e in alone if e.logprob is not None],
        atol=1e-4,
    )


def test_a_batched_prefill_of_prompts_of_different_lengths_joins_a_running_batch(
    generator: Generator, prefills: list[tuple[int, int, int]]
) -> None:
    running = GenerationRequest(generator.encode(PROMPTS[0]), SamplingParams(max_tokens=14))
    joining = {
        "story": GenerationRequest(generator.encode(PROMPTS[2]), SamplingParams(max_tokens=9)),
        "code": GenerationRequest(
            generator.encode(PROMPTS[1]), SamplingParams(max_tokens=12, temperature=0.9, top_k=30, random_seed=3)
        ),
        "hi": GenerationRequest(generator.encode(PROMPTS[3]), SamplingParams(max_tokens=16)),
    }
    lengths = {len(r.prompt_ids) for r in joining.values()}
    assert len(lengths) == 3, "the joining prompts have different lengths"
    batch = DecodeBatch(generator)
    events: dict[str, list[TokenEvent]] = {key: [] for key in ["running", *joining]}
    for key, event in batch.admit([running], keys=["running"]):
        events[key].append(event)
    for _ in range(3):
        for key, event in batch.step():
            events[key].append(event)
    for key, event in batch.admit(list(joining.values()), keys=list(joining)):
        events[key].append(event)
    assert batch.keys == ["running", *joining]
    run_to_end(batch, events)
    # one prefill for the running row, then ONE left-padded call for the three joining prompts
    assert prefills == [(1, len(running.prompt_ids), 0), (3, max(lengths), 0)]
    assert_events_equal_alone(generator, running, events["running"])
    for key, request in joining.items():
        assert_events_equal_alone(generator, request, events[key])


def test_requests_waiting_at_a_step_are_prefilled_in_one_call(
    generator: Generator, prefills: list[tuple[int, int, int]]
) -> None:
    """Three requests submitted during one step (from the running row's callback) join it at the next, together."""
    scheduler = InflightScheduler(generator, max_rows=8)
    first = Collected()
    joining = [(PROMPTS[1], SamplingParams(max_tokens=8)), (PROMPTS[2], SamplingParams(max_tokens=11))]
    joining.append((PROMPTS[3], SamplingParams(max_tokens=5)))
    outs = [Collected() for _ in joining]

    def on_event(event: TokenEvent) -> None:
        first.on_event(event)
        if len(first.tokens) == 2 and not event.finished:
            for (prompt, params), out in zip(joining, outs, strict=True):
                scheduler.submit(GenerationRequest(generator.encode(prompt), params), out.on_event, out.on_error)

    try:
        scheduler.submit(
            GenerationRequest(generator.encode(PROMPTS[0]), SamplingParams(max_tokens=20)), on_event, print
        )
        for out in [first, *outs]:
            out.wait()
    finally:
        scheduler.stop()
    widths = [len(generator.encode(prompt)) for prompt, _ in joining]
    assert prefills == [(1, len(generator.encode(PROMPTS[0])), 0), (3, max(widths), 0)]
    assert_same_as_alone(generator, PROMPTS[0], SamplingParams(max_tokens=20), first)
    for (prompt, params), out in zip(joining, outs, strict=True):
        assert_same_as_alone(generator, prompt, params, out)


def test_prompts_with_a_cached_prefix_are_prefilled_after_it_and_equal_alone(
    generator: Generator, prefills: list[tuple[int, int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [
        "You are a careful assistant. Question: what is the capital of France?",
        "You are a careful assistant. Question: name a dog",
        "You are a careful assistant. Write a haiku",
    ]
    hits = [generator.encode(text) for text in texts]
    prefix = os.path.commonprefix(hits)  # the tokens of "You are a careful assistant." (and BOS)
    assert len(prefix) >= 3 and all(ids[: len(prefix)] == prefix and len(ids) > len(prefix) + 1 for ids in hits)
    assert len({len(ids) for ids in hits}) == 3
    miss = generator.encode(PROMPTS[2])
    params = [SamplingParams(max_tokens=10), SamplingParams(max_tokens=13, temperature=1.1, random_seed=7)]
    params += [SamplingParams(max_tokens=6), SamplingParams(max_tokens=15)]
    requests = [GenerationRequest(ids, p) for ids, p in zip([*hits, miss], params, strict=True)]
    running = GenerationRequest(generator.encode(PROMPTS[3]), SamplingParams(max_tokens=18))
    expected = {i: list(generator.generate_batch([r])) for i, r in enumerate([*requests, running])}

    cache = PrefixCache(generator.decoder, prefix)
    cache.past(1)  # computed once, before the calls recorded below
    prefills.clear()
    monkeypatch.setattr(generator, "prefix_cache", cache)
    assert not cache.matches(prefix) and not cache.matches(miss) and cache.matches(hits[0])
    batch = DecodeBatch(generator)
    events: dict[int, list[TokenEvent]] = {i: [] for i in expected}
    for key, event in batch.admit([running], keys=[4]):
        events[key].append(event)
    for key, event in batch.step():
        events[key].append(event)
    for key, event in batch.admit(requests, keys=range(4)):  # three hits and a miss join the running row
        events[key].append(event)
    run_to_end(batch, events)
    suffix = max(len(ids) for ids in hits) - len(prefix)
    assert prefills == [(1, len(running.prompt_ids), 0), (3, suffix, len(prefix)), (1, len(miss), 0)]
    for key, alone in expected.items():
        assert [e.token_id for e in events[key]] == [e.token_id for e in alone]
        assert [e.finish_reason for e in events[key]] == [e.finish_reason for e in alone]
        got = [e.logprob for e in events[key] if e.logprob is not None]
        np.testing.assert_allclose(got, [e.logprob for e in alone if e.logprob is not None], atol=1e-4)


def test_the_chat_template_head_is_cached(model_dir: Path, tmp_path: Path) -> None:
    """A template with a default system prompt: every templated prompt starts with the cached head."""
    model_dir = shutil.copytree(model_dir, tmp_path / "model")
    (model_dir / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}system: You are a terse helper.\n"
        "{% endif %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:"
        "{% endif %}"
    )
    templated = Generator(model_dir)
    plain = Generator(model_dir, prefix_cache=False)
    assert plain.prefix_cache is None and templated.prefix_cache is not None
    head = list(templated.prefix_cache.ids)
    assert "You are a terse helper." in templated.decode(head)
    for text in ("What is the capital of France?", "Hi", "x"):
        assert templated.prefix_cache.matches(templated.prompt_ids(text))
        params = SamplingParams(max_tokens=8)
        with_cache, without = templated.generate(text, params), plain.generate(text, params)
        assert with_cache.token_ids == without.token_ids and with_cache.text == without.text
        np.testing.assert_allclose(with_cache.logprobs, without.logprobs, atol=1e-4)
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert not templated.prefix_cache.matches(templated.prompt_ids(messages=conversation))


def test_callers_of_finished_rows_are_gathered_into_one_prefill(
    generator: Generator, prefills: list[tuple[int, int, int]]
) -> None:
    """The batch empties with two rows finished: the first next request waits (up to gather_s) for the second."""
    scheduler = InflightScheduler(generator, max_rows=4, gather_s=10.0)
    try:
        for out in [submit(scheduler, generator, p, SamplingParams(max_tokens=4)) for p in PROMPTS[:2]]:
            out.wait()
        prefills.clear()
        early = submit(scheduler, generator, PROMPTS[2], SamplingParams(max_tokens=6))
        time.sleep(0.3)
        assert not early.tokens, "the first request was prefilled without waiting for the second"
        late = submit(scheduler, generator, PROMPTS[3], SamplingParams(max_tokens=6))
        early.wait(), late.wait()
        assert len(prefills) == 1 and prefills[0][0] == 2
    finally:
        scheduler.stop()
    # one row finished and its caller sent the next request: nothing more is owed, so nothing waits
    scheduler = InflightScheduler(generator, max_rows=4, gather_s=10.0)
    try:
        submit(scheduler, generator, PROMPTS[0], SamplingParams(max_tokens=3)).wait()
        started = time.monotonic()
        submit(scheduler, generator, PROMPTS[1], SamplingParams(max_tokens=3)).wait()
        assert time.monotonic() - started < 5.0
    finally:
        scheduler.stop()
    assert_same_as_alone(generator, PROMPTS[2], SamplingParams(max_tokens=6), early)
    assert_same_as_alone(generator, PROMPTS[3], SamplingParams(max_tokens=6), late)


def test_gathering_gives_up_after_gather_s(generator: Generator) -> None:
    scheduler = InflightScheduler(generator, max_rows=4, gather_s=0.4)
    try:
        for out in [submit(scheduler, generator, p, SamplingParams(max_tokens=3)) for p in PROMPTS[:3]]:
            out.wait()
        started = time.monotonic()
        alone = submit(scheduler, generator, PROMPTS[3], SamplingParams(max_tokens=3)).wait()
        waited = time.monotonic() - started
    finally:
        scheduler.stop()
    assert waited >= 0.4, "two more requests were owed: it waits gather_s for them, then goes on"
    assert_same_as_alone(generator, PROMPTS[3], SamplingParams(max_tokens=3), alone)
