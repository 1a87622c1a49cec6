"""What the intent classifier is trained and evaluated on: intent rows (from ../shared/data and the hand-written
files, via `intent_data`) and real outcomes for the difficulty head."""

from __future__ import annotations

from dataclasses import dataclass, field
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


# router-eval label rows are `<T0 template>-<row>`; every template of a T0 dataset holds the same examples, so the
# held-out split groups them by (dataset, row): one review must not be held out under one template and trained on
# under another
T0_DATASETS = (
    "ag_news", "amazon_polarity", "app_reviews", "glue_mrpc", "glue_qqp", "imdb", "paws_labeled_final", "qasc",
    "rotten_tomatoes", "social_i_qa", "yelp_review_full",
)  # fmt: skip
ROUTELLM = "routellm"
TIER_SMALL = "tier_small"


@dataclass
class DifficultyData:
    """Prompts with a real outcome; y = 1 where the small model answered WRONG (difficulty: 0 easy, 1 hard).

    `*_source`: routellm (Mixtral-8x7B on MMLU/GSM8K) or tier_small (the real tier_small, router-eval logs);
    `*_benchmark`: mmlu, gsm8k, nq_open, a T0 template, a hand-written family; `train_weights`: sample weights."""

    train_texts: list[str]
    train_y: np.ndarray
    test_texts: list[str]
    test_y: np.ndarray
    test_benchmark: list[str]
    train_weights: np.ndarray | None = None
    train_source: list[str] = field(default_factory=list)
    test_source: list[str] = field(default_factory=list)
    train_benchmark: list[str] = field(default_factory=list)
    train_group: list[str] = field(default_factory=list)  # the split unit (grouped cross-validation)

    def test_mask(self, source: str | None = None, benchmark: str | None = None, labels: bool = False) -> np.ndarray:
        """Held-out rows of `source`; of `benchmark`; `labels`: tier_small's label tasks (not NQ-open)."""
        mask = np.ones(len(self.test_texts), dtype=bool)
        if source is not None:
            mask &= np.array([s == source for s in self.test_source], dtype=bool)
        if benchmark is not None:
            mask &= np.array([b == benchmark for b in self.test_benchmark], dtype=bool)
        if labels:
            mask &= np.array([is_label_task(b) for b in self.test_benchmark], dtype=bool)
        return mask


@dataclass(frozen=True)
class GradedPrompt:
    """One prompt and whether the small model answered it wrong; `group` decides the held-out split."""

    prompt: str
    source: str  # routellm | tier_small
    benchmark: str
    group: str
    wrong: bool


def is_label_task(benchmark: str) -> bool:
    """A router-eval label task from T0 templates (sentiment, topic, yes/no, paraphrase, rating)."""
    return benchmark.startswith(T0_DATASETS)


def split_group(prompt_id: str, benchmark: str, prompt: str) -> str:
    """The held-out split's unit: (T0 dataset, row) for label tasks, the prompt otherwise."""
    stem, _, row = prompt_id.rpartition("-")
    for dataset in T0_DATASETS:
        if benchmark.startswith(dataset) and stem == benchmark and row.isdigit():
            return f"t0:{dataset}:{row}"
    return prompt


def tier_small_outcomes(outcome_dir: Path = TIER_SMALL_OUTCOMES) -> list[GradedPrompt]:
    """The real tier_small's graded answers from router-eval outcome logs (JSONL rows with prompt, tier, correct).

    Files are read in name order and a prompt graded twice keeps its first outcome (simple4bit.jsonl, the shipped
    4-bit tier, comes before simple_fp32.jsonl)."""
    outcomes = []
    seen: set[str] = set()
    for path in sorted(outcome_dir.glob("*.jsonl")) if outcome_dir.is_dir() else []:
        for record in intent_data.read_jsonl(path):
            prompt = record.get("prompt")
            if record.get("tier") != TIER_SMALL or not prompt or "correct" not in record or prompt in seen:
                continue
            seen.add(prompt)
            benchmark = str(record.get("benchmark") or record.get("source") or "router_eval")
            group = split_group(str(record.get("prompt_id", "")), benchmark, prompt)
            outcomes.append(GradedPrompt(prompt, TIER_SMALL, benchmark, group, not bool(record["correct"])))
    return outcomes


def routellm_graded(data_dir: Path) -> list[GradedPrompt]:
    """RouteLLM's MMLU and GSM8K prompts with Mixtral-8x7B's correctness (one row per prompt)."""
    return [
        GradedPrompt(o.prompt, ROUTELLM, o.benchmark, o.prompt, not o.weak_correct)
        for o in intent_data.routellm_outcomes(data_dir)
    ]


def is_held_out(group: str, test_fraction: float) -> bool:
    """The split by prompt (or label-task example): a hash, so it is the same for every run and every encoder."""
    return intent_data.hash_bucket("difficulty:" + group, 100) < test_fraction * 100


def source_weights(sources: list[str], tier_small_share: float) -> np.ndarray:
    """Sample weights giving tier_small rows `tier_small_share` of the total weight (mean weight 1), so a few hundred
    graded answers are not drowned by thousands of RouteLLM rows; rows of one source only: all 1."""
    is_small = np.array([s == TIER_SMALL for s in sources], dtype=bool)
    n_small, n = int(is_small.sum()), len(sources)
    if n_small in (0, n):
        return np.ones(n)
    if not 0 < tier_small_share < 1:
        raise ValueError(f"tier_small_share must be in (0, 1), got {tier_small_share}")
    return np.where(is_small, tier_small_share * n / n_small, (1 - tier_small_share) * n / (n - n_small))


def difficulty_data(
    data_dir: Path,
    test_fraction: float = 0.2,
    max_train: int = 3000,
    max_test: int = 1200,
    tier_small_share: float = 0.5,
    outcome_dir: Path = TIER_SMALL_OUTCOMES,
) -> DifficultyData:
    """RouteLLM MMLU + GSM8K (Mixtral-8x7B's correctness; `max_train` / `max_test` of them) and every graded answer
    of the real tier_small (router-eval logs under `outcome_dir`, when present), split by prompt (label tasks: by
    dataset row) into train and held-out; tier_small rows carry `tier_small_share` of the training weight."""
    train: list[GradedPrompt] = []
    test: list[GradedPrompt] = []
    small_train: list[GradedPrompt] = []
    small_test: list[GradedPrompt] = []
    seen: set[str] = set()
    for row in [*routellm_graded(data_dir), *tier_small_outcomes(outcome_dir)]:
        if row.prompt in seen:
            continue
        seen.add(row.prompt)
        held = is_held_out(row.group, test_fraction)
        if row.source == TIER_SMALL:
            (small_test if held else small_train).append(row)
        else:
            (test if held else train).append(row)
    train = [train[i] for i in sorted(np.random.default_rng(0).permutation(len(train))[:max_train])] + small_train
    test = [test[i] for i in sorted(np.random.default_rng(1).permutation(len(test))[:max_test])] + small_test
    sources = [r.source for r in train]
    return DifficultyData(
        [r.prompt for r in train],
        np.array([r.wrong for r in train], dtype=bool),
        [r.prompt for r in test],
        np.array([r.wrong for r in test], dtype=bool),
        [r.benchmark for r in test],
        train_weights=source_weights(sources, tier_small_share),
        train_source=sources,
        test_source=[r.source for r in test],
        train_benchmark=[r.benchmark for r in train],
        train_group=[r.group for r in train],
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
