"""`router-eval build-data`: a labelled set from ../shared/data (NQ-open questions and T0 label templates).

- NQ-open (``qa/nq_open/NQ-open.dev.jsonl``): real search questions with their accepted answers, grader
  ``contains`` (normalised containment of any accepted answer, NQ-open's usual grading). The question is asked
  as ``Answer in a few words: <question>?``.
- T0 templates (``intent/t0_templates/``): sentiment and news-topic classification templates whose
  ``completion`` is one label of a small set named in the prompt, grader ``choice``. The label sets are the ones
  each template's prompt offers (TEMPLATES below); files whose sampled labels are all one class are not used.

Nothing from ../shared/data may be committed: write the output under artifacts/ (ignored by git).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from router_eval.data import EvalDataError, EvalRow, normalize, parse_row

DEFAULT_DATA_DIR = Path("../shared/data")
NQ_FILE = Path("qa/nq_open/NQ-open.dev.jsonl")
T0_DIR = Path("intent/t0_templates")
END_OF_TEXT = "<|endoftext|>"

# template file -> the labels its prompt offers (the completion is one of them)
TEMPLATES: dict[str, tuple[str, ...]] = {
    "amazon_polarity_Is_this_review.jsonl": ("Positive", "Negative"),
    "amazon_polarity_negative_or_positive_tone.jsonl": ("Positive", "Negative"),
    "ag_news_classify_with_choices.jsonl": ("World politics", "Sports", "Business", "Science and technology"),
    "ag_news_which_section_choices.jsonl": ("World News", "Sports", "Business", "Science and Technology"),
}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvalDataError(f"{path}: cannot read: {exc} (pass the data folder with --data-dir)") from None
    return [json.loads(line) for line in lines if line.strip()]


def nq_rows(data_dir: Path, n: int, rng: random.Random) -> list[EvalRow]:
    """`n` random NQ-open dev questions (grader contains)."""
    path = data_dir / NQ_FILE
    records = _read_jsonl(path)
    picked = sorted(rng.sample(range(len(records)), min(n, len(records))))
    rows = []
    for i in picked:
        rec = records[i]
        question = str(rec["question"]).strip().rstrip("?")
        raw = {
            "id": f"nq-{i}",
            "prompt": f"Answer in a few words: {question}?",
            "answers": [str(a) for a in rec["answer"] if str(a).strip()],
            "grader": "contains",
            "source": "nq_open",
        }
        rows.append(parse_row(raw, f"{path}:{i + 1}"))
    return rows


def label_rows(data_dir: Path, n: int, rng: random.Random, max_prompt_chars: int) -> list[EvalRow]:
    """About `n` prompts spread evenly over TEMPLATES (grader choice), prompts up to `max_prompt_chars`."""
    per_template = max(1, n // len(TEMPLATES))
    rows: list[EvalRow] = []
    for name, choices in TEMPLATES.items():
        path = data_dir / T0_DIR / name
        records = _read_jsonl(path)
        known = {normalize(c) for c in choices}
        usable = []
        for i, rec in enumerate(records):
            label = str(rec["completion"]).replace(END_OF_TEXT, "").strip()
            prompt = str(rec["prompt"]).strip()
            if normalize(label) in known and len(prompt) <= max_prompt_chars:
                usable.append((i, prompt, label))
        picked = sorted(rng.sample(usable, min(per_template, len(usable))))
        if len({label for _, _, label in picked}) < 2:
            continue  # one class only: a constant answer would score 100%
        stem = name.removesuffix(".jsonl")
        for i, prompt, label in picked:
            raw = {
                "id": f"{stem}-{i}",
                "prompt": prompt,
                "answers": [label],
                "grader": "choice",
                "choices": list(choices),
                "source": stem,
            }
            rows.append(parse_row(raw, f"{path}:{i + 1}"))
    return rows


def build_dataset(
    data_dir: Path = DEFAULT_DATA_DIR, nq: int = 100, labels: int = 200, seed: int = 0, max_prompt_chars: int = 400
) -> list[EvalRow]:
    """The labelled set: `nq` NQ-open questions and about `labels` label prompts, deterministic for `seed`."""
    rng = random.Random(seed)
    rows = nq_rows(data_dir, nq, rng) if nq > 0 else []
    if labels > 0:
        rows += label_rows(data_dir, labels, rng, max_prompt_chars)
    if not rows:
        raise EvalDataError("no rows selected (check --nq / --labels)")
    return rows
