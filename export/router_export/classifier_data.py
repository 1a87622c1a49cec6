"""What the intent classifier is trained and evaluated on: intent rows (from ../shared/data and the hand-written
files, via `intent_data`) and real outcomes for the difficulty head."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from llm_router.classifier import INTENTS

from router_export import intent_data

TIER_SMALL_OUTCOMES = intent_data.PROJECT_ROOT / "artifacts" / "eval"  # router-eval outcome logs
PER_CLASS = 1000  # training rows per intent (held-out: a third of that)


def intent_rows(data_dir: Path) -> tuple[list[intent_data.Row], list[intent_data.Row]]:
    """The intent dataset's training and held-out rows."""
    rows = intent_data.build(data_dir, per_class=PER_CLASS)
    return [r for r in rows if r.split == "train"], [r for r in rows if r.split == "test"]


def intent_labels(rows: list[intent_data.Row]) -> np.ndarray:
    """Class indices (positions in INTENTS) of `rows`."""
    return np.array([INTENTS.index(r.intent) for r in rows])


@dataclass
class DifficultyData:
    """Prompts with a real outcome; y = 1 where the small model answered WRONG (difficulty: 0 easy, 1 hard)."""

    train_texts: list[str]
    train_y: np.ndarray
    test_texts: list[str]
    test_y: np.ndarray
    test_benchmark: list[str]


def tier_small_outcomes(outcome_dir: Path = TIER_SMALL_OUTCOMES) -> list[intent_data.Outcome]:
    """The real tier_small's graded answers from router-eval outcome logs (JSONL rows with prompt, tier, correct)."""
    outcomes = []
    for path in sorted(outcome_dir.glob("*.jsonl")) if outcome_dir.is_dir() else []:
        for record in intent_data.read_jsonl(path):
            if record.get("tier") == "tier_small" and record.get("prompt") and "correct" in record:
                source = str(record.get("benchmark") or record.get("source") or "router_eval")
                outcomes.append(intent_data.Outcome(record["prompt"], source, source, bool(record["correct"])))
    return outcomes


def difficulty_data(
    data_dir: Path, test_fraction: float = 0.2, max_train: int = 3000, max_test: int = 1200
) -> DifficultyData:
    """RouteLLM MMLU + GSM8K (Mixtral-8x7B's correctness) and the real tier_small's graded answers (router-eval logs,
    when present), split by prompt (hash) into train and held-out."""
    train, test = [], []
    seen = set()
    for outcome in [*intent_data.routellm_outcomes(data_dir), *tier_small_outcomes()]:
        if outcome.prompt in seen:
            continue
        seen.add(outcome.prompt)
        held = intent_data.hash_bucket("difficulty:" + outcome.prompt, 100) < test_fraction * 100
        (test if held else train).append(outcome)
    train = [train[i] for i in sorted(np.random.default_rng(0).permutation(len(train))[:max_train])]
    test = [test[i] for i in sorted(np.random.default_rng(1).permutation(len(test))[:max_test])]
    return DifficultyData(
        [o.prompt for o in train],
        np.array([not o.weak_correct for o in train]),
        [o.prompt for o in test],
        np.array([not o.weak_correct for o in test]),
        [o.benchmark for o in test],
    )


def cascades_small_model_outcomes(data_dir: Path, max_rows: int = 1500) -> DifficultyData:
    """MEASUREMENT ONLY (no license: never train on it): llama3.2-1b's correctness per prompt in
    llm_cascades_train.csv.gz, as held-out rows (y = 1 where it was wrong)."""
    import csv
    import gzip

    seen: dict[str, tuple[str, bool]] = {}
    csv.field_size_limit(1 << 30)
    with gzip.open(data_dir / "outcomes" / "llm_cascades_train.csv.gz", "rt", encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            if record["chain"] == "llama" and record["tier_pos"] == "0" and record["prompt"] not in seen:
                seen[record["prompt"]] = (record["benchmark"], record["correct"].strip().lower() == "true")
    prompts = sorted(seen)
    chosen = [prompts[i] for i in sorted(np.random.default_rng(2).permutation(len(prompts))[:max_rows])]
    return DifficultyData(
        [], np.zeros(0), chosen, np.array([not seen[p][1] for p in chosen]), [seen[p][0] for p in chosen]
    )
