"""The difficulty head's data and report: tier_small outcome logs, the held-out split by prompt (label tasks by
dataset row), source weights, the weighted fit and the evaluation report's per-source fields."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from router_export import classifier_data
from router_export.classifier_data import (
    ROUTELLM,
    TIER_SMALL,
    DifficultyData,
    GradedPrompt,
    difficulty_data,
    is_held_out,
    is_label_task,
    source_weights,
    split_group,
    tier_small_outcomes,
)
from router_export.classifier_evaluation import difficulty_report, print_difficulty
from router_export.classifier_training import fit_difficulty_head


def _log_row(prompt_id: str, prompt: str, benchmark: str, correct: bool, tier: str = "tier_small") -> dict:
    return {"prompt_id": prompt_id, "prompt": prompt, "tier": tier, "correct": correct, "benchmark": benchmark}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_label_task_templates_of_one_dataset_row_share_a_group():
    a = split_group("amazon_polarity_Is_this_review-17", "amazon_polarity_Is_this_review", "Review A ... Positive?")
    b = split_group("amazon_polarity_flattering_or_not-17", "amazon_polarity_flattering_or_not", "Review A ... flat?")
    assert a == b == "t0:amazon_polarity:17"
    assert split_group("amazon_polarity_flattering_or_not-18", "amazon_polarity_flattering_or_not", "x") != a
    # NQ-open and hand-written rows: the prompt itself
    assert split_group("nq-4", "nq_open", "Answer in a few words: who?") == "Answer in a few words: who?"
    assert split_group("cap-fr", "capitals_facts", "Capital of France?") == "Capital of France?"


def test_label_tasks_are_told_from_nq_and_handwritten_families():
    assert is_label_task("glue_qqp_duplicate") and is_label_task("ag_news_classify_with_choices")
    assert not is_label_task("nq_open") and not is_label_task("sentiment") and not is_label_task("mmlu")


def test_tier_small_outcomes_read_graded_tier_small_rows_once(tmp_path):
    _write_jsonl(
        tmp_path / "a_4bit.jsonl",
        [
            _log_row("nq-1", "Answer in a few words: q1?", "nq_open", False),
            _log_row("nq-2", "Answer in a few words: q2?", "nq_open", True),
            _log_row("nq-1", "Answer in a few words: q1?", "nq_open", True, tier="tier_medium"),
        ],
    )
    # a later file grading the same prompt again (e.g. FP32) does not override the first outcome
    _write_jsonl(tmp_path / "b_fp32.jsonl", [_log_row("nq-1", "Answer in a few words: q1?", "nq_open", True)])
    # a row file (no tier, no correct) in the same folder is not an outcome
    _write_jsonl(tmp_path / "rows.jsonl", [{"id": "x", "prompt": "p", "answers": ["a"], "grader": "contains"}])
    outcomes = tier_small_outcomes(tmp_path)
    assert [(o.prompt, o.wrong, o.source) for o in outcomes] == [
        ("Answer in a few words: q1?", True, TIER_SMALL),
        ("Answer in a few words: q2?", False, TIER_SMALL),
    ]
    assert tier_small_outcomes(tmp_path / "missing") == []


def test_source_weights_give_tier_small_its_share():
    sources = [ROUTELLM] * 90 + [TIER_SMALL] * 10
    w = source_weights(sources, 0.5)
    assert w.mean() == pytest.approx(1.0)
    assert w[90:].sum() == pytest.approx(w[:90].sum())
    w = source_weights(sources, 0.25)
    assert w[90:].sum() / w.sum() == pytest.approx(0.25)
    np.testing.assert_array_equal(source_weights([ROUTELLM] * 5, 0.5), np.ones(5))
    with pytest.raises(ValueError, match="tier_small_share"):
        source_weights(sources, 1.0)


@pytest.fixture
def fake_outcomes(tmp_path, monkeypatch):
    """400 RouteLLM-like prompts and tier_small logs: 60 NQ questions and 3 templates x 40 rows of one dataset."""
    routellm = [
        GradedPrompt(f"mmlu question {i}", ROUTELLM, "mmlu", f"mmlu question {i}", i % 3 == 0) for i in range(400)
    ]
    monkeypatch.setattr(classifier_data, "routellm_graded", lambda data_dir: routellm)
    rows = [_log_row(f"nq-{i}", f"Answer in a few words: question {i}?", "nq_open", i % 4 == 0) for i in range(60)]
    for template in ("glue_qqp_duplicate", "glue_qqp_meaning", "glue_qqp_answer"):
        rows += [_log_row(f"{template}-{i}", f"{template}: pair {i}?", template, i % 2 == 0) for i in range(40)]
    _write_jsonl(tmp_path / "real.jsonl", rows)
    return tmp_path


def test_difficulty_data_splits_by_prompt_and_label_row(fake_outcomes):
    diff = difficulty_data(Path("unused"), test_fraction=0.3, outcome_dir=fake_outcomes)
    assert not set(diff.train_texts) & set(diff.test_texts)
    assert len(diff.train_texts) + len(diff.test_texts) == 400 + 60 + 120
    # every template of one QQP row is on the same side of the split
    held_rows = {t.split("pair ")[1] for t in diff.test_texts if "pair" in t}
    train_rows = {t.split("pair ")[1] for t in diff.train_texts if "pair" in t}
    assert held_rows and train_rows and not held_rows & train_rows
    assert all(is_held_out(f"t0:glue_qqp:{r.rstrip('?')}", 0.3) for r in held_rows)
    # y = 1 where tier_small was WRONG (correct false)
    i = diff.test_texts.index(next(t for t in diff.test_texts if t.startswith("Answer")))
    n = int(diff.test_texts[i].split("question ")[1].rstrip("?"))
    assert diff.test_y[i] == (n % 4 != 0)
    assert set(diff.test_source) == {ROUTELLM, TIER_SMALL}
    assert diff.test_mask(TIER_SMALL, "nq_open").sum() + diff.test_mask(TIER_SMALL, labels=True).sum() == sum(
        s == TIER_SMALL for s in diff.test_source
    )


def test_difficulty_data_weights_tier_small_rows(fake_outcomes):
    diff = difficulty_data(Path("unused"), tier_small_share=0.5, outcome_dir=fake_outcomes)
    small = np.array([s == TIER_SMALL for s in diff.train_source])
    assert diff.train_weights is not None and small.any()
    assert diff.train_weights[small].sum() == pytest.approx(diff.train_weights[~small].sum())
    # max_train caps RouteLLM rows only: every tier_small training row is kept
    capped = difficulty_data(Path("unused"), max_train=50, outcome_dir=fake_outcomes)
    assert sum(s == ROUTELLM for s in capped.train_source) == 50
    assert sum(s == TIER_SMALL for s in capped.train_source) == int(small.sum())


def test_fit_difficulty_head_uses_sample_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = x[:, 0] > 0
    # the second half says the opposite; with zero weight it must not count
    x2, y2 = np.vstack([x, x]), np.concatenate([y, ~y])
    weights = np.concatenate([np.ones(200), np.zeros(200)])
    w, b = fit_difficulty_head(x2, y2, weights)
    w_ref, b_ref = fit_difficulty_head(x, y)
    np.testing.assert_allclose(w, w_ref, atol=1e-3)
    np.testing.assert_allclose(b, b_ref, atol=1e-3)
    assert w.shape == (4, 1) and b.shape == (1,)
    assert w[0, 0] > 1.0  # hard (y = 1) goes with feature 0


def test_difficulty_report_has_tier_small_subsets_and_routellm(capsys):
    benchmarks = ["mmlu"] * 4 + ["nq_open"] * 4 + ["glue_qqp_duplicate"] * 4
    diff = DifficultyData(
        [], np.zeros(0), [f"p{i}" for i in range(12)],
        np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], dtype=bool),
        benchmarks,
        test_source=[ROUTELLM] * 4 + [TIER_SMALL] * 8,
    )  # fmt: skip
    p = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.6, 0.1, 0.5, 0.4, 0.3, 0.6, 0.2])
    report = difficulty_report(diff, p)
    assert report["n"] == 12
    assert report[ROUTELLM] == {
        "n": 4, "roc_auc": 1.0, "roc_auc_within_benchmark": 1.0, "base_rate_wrong": 0.5, "mix": {"mmlu": 4}
    }  # fmt: skip
    small = report[TIER_SMALL]
    assert small["n"] == 8 and small["mix"] == {"nq_open": 4, "glue_qqp_duplicate": 4}
    assert small["nq_open"]["n"] == 4 and small["nq_open"]["roc_auc"] == 1.0
    assert small["labels"]["n"] == 4 and small["labels"]["roc_auc"] == 0.0
    assert small["base_rate_wrong"] == pytest.approx(5 / 8)
    # pooled over the two tasks 9.5 of 15 (wrong, right) pairs are ordered; within them 1.0 (NQ) and 0.0 (labels)
    assert small["roc_auc"] == pytest.approx(9.5 / 15)
    assert small["roc_auc_within_benchmark"] == pytest.approx(0.5)
    print_difficulty({"difficulty": report})
    out = capsys.readouterr().out
    assert "tier_small held-out graded prompts: n=8" in out and "NQ-open only: n=4 AUROC=1.000" in out
    assert "RouteLLM held-out (Mixtral-8x7B, MMLU/GSM8K): n=4 AUROC=1.000" in out


def test_difficulty_report_one_class_subset_has_no_auroc():
    diff = DifficultyData(
        [], np.zeros(0), ["a", "b", "c"], np.array([1, 1, 0], dtype=bool), ["nq_open", "nq_open", "mmlu"],
        test_source=[TIER_SMALL, TIER_SMALL, ROUTELLM],
    )  # fmt: skip
    report = difficulty_report(diff, np.array([0.2, 0.3, 0.1]))
    assert report[TIER_SMALL]["roc_auc"] is None and report[TIER_SMALL]["labels"]["n"] == 0
    assert report["roc_auc"] == 1.0
