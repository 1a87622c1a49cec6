"""perf_analyzer input data from real prompts: layouts, files, the data-dir reader and the committed sample."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from router_benchmarks import inputs
from router_benchmarks.inputs import (
    BENCH_SAMPLE,
    INTENT_SOURCES,
    Prompt,
    input_data,
    interleave,
    load_prompts,
    read_sample,
    request_entry,
    sample_from_data_dir,
    write_input_files,
)


def test_router_and_tier_layouts_send_text_and_max_tokens() -> None:
    assert request_entry("router", "héllo", 32) == {
        "text_input": {"content": ["héllo"], "shape": [1]},
        "max_tokens": {"content": [32], "shape": [1]},
    }
    assert request_entry("tier", "x", 8)["max_tokens"] == {"content": [8], "shape": [1]}
    assert "stream" not in request_entry("tier", "x", 8)
    assert request_entry("tier", "x", 8, stream=True)["stream"] == {"content": [True], "shape": [1]}


def test_classifier_layout_sends_only_text() -> None:
    assert request_entry("classifier", "x", 8) == {"text": {"content": ["x"], "shape": [1]}}


def test_unknown_layout_and_no_prompts_are_errors() -> None:
    with pytest.raises(ValueError, match="layout"):
        request_entry("vision", "x", 1)
    with pytest.raises(ValueError, match="no prompts"):
        input_data("router", [], 8)


def test_input_files_are_perf_analyzer_json(tmp_path: Path) -> None:
    prompts = [Prompt("a\u2028b", "rewriting", "s1"), Prompt("c", "coding", "s2")]
    paths = write_input_files(tmp_path, prompts, 16)
    assert set(paths) == {"router", "classifier", "tier"}
    router = json.loads(paths["router"].read_text(encoding="utf-8"))
    assert [entry["text_input"]["content"][0] for entry in router["data"]] == ["a\u2028b", "c"]
    classifier = json.loads(paths["classifier"].read_text(encoding="utf-8"))
    assert len(classifier["data"]) == 2
    used = [json.loads(line) for line in (tmp_path / "prompts.jsonl").read_text().split("\n") if line]
    assert used[1] == {"prompt": "c", "source": "s2", "expected_intent": "coding"}


def test_interleave_mixes_intents() -> None:
    prompts = [Prompt(f"{i}{n}", i, "s") for i in ("a", "b", "c") for n in range(2)]
    mixed = interleave(prompts)
    assert [p.intent for p in mixed] == ["a", "b", "c", "a", "b", "c"]
    assert sorted(p.text for p in mixed) == sorted(p.text for p in prompts)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def _fake_data_dir(root: Path) -> Path:
    """A data dir shaped like ../shared/data/intent: 3-5 prompts per source (and one too long)."""
    intent = root / "intent"
    for sources in INTENT_SOURCES.values():
        for source in sources:
            kind, _, name = source.partition(":")
            if kind == "t0":
                rows = [{"prompt": f"{name} prompt {n}", "completion": "x"} for n in range(3)]
                rows.append({"prompt": "x" * (inputs.MAX_PROMPT_CHARS + 1), "completion": "x"})
                _write_jsonl(intent / "t0_templates" / f"{name}.jsonl", rows)
    arena = [
        {"uid": f"{sub}{n}", "subcategory": sub, "prompt": f"arena {sub} {n}"}
        for sub in ("coding", "math", "creative_writing")
        for n in range(5)
    ]
    _write_jsonl(intent / "arena_hard" / "data" / "arena-hard-v2.0" / "question.jsonl", arena)
    apps = [s.split(":", 1)[1] for v in INTENT_SOURCES.values() for s in v if s.startswith("self_instruct:")]
    rows = [
        {"motivation_app": app, "instruction": f"do {app} {n}", "instances": [{"input": "in" if n else ""}]}
        for app in apps
        for n in range(3)
    ]
    _write_jsonl(intent / "self_instruct_user_oriented" / "human_eval" / "user_oriented_instructions.jsonl", rows)
    return root


def test_sample_from_data_dir_takes_each_intent_from_its_sources(tmp_path: Path) -> None:
    data_dir = _fake_data_dir(tmp_path / "data")
    prompts = sample_from_data_dir(data_dir, per_intent=4, seed=3)
    counts = Counter(p.intent for p in prompts)
    assert counts == {intent: 4 for intent in INTENT_SOURCES}
    assert all(len(p.text) <= inputs.MAX_PROMPT_CHARS for p in prompts)
    rewriting_sources = {p.source for p in prompts if p.intent == "rewriting"}
    assert len(rewriting_sources) >= 3  # round-robin over the intent's sources
    self_instruct = [p.text for p in prompts if p.source.startswith("self_instruct")]
    assert all(t.startswith("do ") for t in self_instruct)
    assert any(t.endswith("\n\nin") for t in self_instruct)  # instruction + the instance's input
    assert prompts == sample_from_data_dir(data_dir, per_intent=4, seed=3)  # deterministic


def test_load_prompts_falls_back_to_the_committed_sample(tmp_path: Path) -> None:
    prompts, origin = load_prompts(tmp_path / "no-such-dir", limit=20)
    assert len(prompts) == 20
    assert "committed sample" in origin
    assert len({p.intent for p in prompts}) == len(INTENT_SOURCES)  # interleaved: all intents early


def test_committed_sample_is_real_mixed_and_from_apache_sources() -> None:
    sample = read_sample(BENCH_SAMPLE)
    assert len(sample) == 99
    assert Counter(p.intent for p in sample) == {intent: 11 for intent in INTENT_SOURCES}
    allowed = ("t0_templates/", "arena_hard v2.0 (", "self_instruct_user_oriented (")
    assert all(p.source.startswith(allowed) for p in sample)
    assert all(p.text.strip() and len(p.text) <= inputs.MAX_PROMPT_CHARS for p in sample)
    sources = (BENCH_SAMPLE.parent / "SOURCES.md").read_text()
    assert "bench_prompts.jsonl" in sources and "Apache-2.0" in sources


def test_accept_filter_is_applied_while_sampling(tmp_path: Path) -> None:
    data_dir = _fake_data_dir(tmp_path / "data")
    prompts = sample_from_data_dir(data_dir, per_intent=2, seed=1, accept=lambda text: not text.endswith(" 0"))
    assert prompts and all(not p.text.endswith(" 0") for p in prompts)
    assert Counter(p.intent for p in prompts) == {intent: 2 for intent in INTENT_SOURCES}
    short, _ = load_prompts(tmp_path / "none", accept=lambda text: len(text) < 300)
    assert short and all(len(p.text) < 300 for p in short)
