"""`router-eval build-data`: a labelled set from ../shared/data (NQ-open questions and T0 label templates).

- NQ-open (``qa/nq_open/NQ-open.dev.jsonl``): real search questions with their accepted answers, grader
  ``contains`` (normalised containment of any accepted answer, NQ-open's usual grading). The question is asked
  as ``Answer in a few words: <question>?``.
- T0 templates (``intent/t0_templates/``): label templates whose ``completion`` is one label of a small set the
  prompt offers, grader ``choice``. ``basic`` (TEMPLATES): sentiment and news topic; ``wide`` (WIDE_TEMPLATES) adds
  yes/no product reviews, paraphrase and duplicate questions (MRPC, QQP, PAWS), answer checks (QASC, Social IQa)
  and 1-5 review ratings. Files whose sampled labels are all one class are not used.
- ``exclude``: ids already in other row files or outcome logs (``id`` or ``prompt_id``) are skipped, so a second
  set (another seed) holds only new prompts.

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
_YES_NO = ("Yes", "No")
# more kinds of label task (the labels each prompt names or asks for); letter-choice templates are left out: the
# SQuAD normalisation removes "a" as an article
WIDE_TEMPLATES: dict[str, tuple[str, ...]] = {
    **TEMPLATES,
    "ag_news_classify_with_choices_question_first.jsonl": (
        "World politics", "Sports", "Business", "Science and technology",
    ),
    "amazon_polarity_Is_this_product_review_positive.jsonl": _YES_NO,
    "amazon_polarity_User_recommend_this_product.jsonl": _YES_NO,
    "amazon_polarity_flattering_or_not.jsonl": ("flattering", "unflattering"),
    "glue_mrpc_equivalent.jsonl": ("equivalent", "not equivalent"),
    "glue_mrpc_same_thing.jsonl": _YES_NO,
    "glue_qqp_duplicate.jsonl": _YES_NO,
    "glue_qqp_meaning.jsonl": _YES_NO,
    "paws_labeled_final_PAWS_ANLI_GPT3.jsonl": ("True", "False"),
    "paws_labeled_final_Meaning.jsonl": _YES_NO,
    "qasc_is_correct_1.jsonl": _YES_NO,
    "social_i_qa_Check_if_a_random_answer_is_valid_or_not.jsonl": _YES_NO,
    "app_reviews_convert_to_rating.jsonl": ("1", "2", "3", "4", "5"),
}  # fmt: skip
TEMPLATE_SETS = {"basic": TEMPLATES, "wide": WIDE_TEMPLATES}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvalDataError(f"{path}: cannot read: {exc} (pass the data folder with --data-dir)") from None
    return [json.loads(line) for line in lines if line.strip()]


def excluded_ids(paths: list[Path]) -> set[str]:
    """The ids (``id`` or ``prompt_id``) in row files or outcome logs (JSONL)."""
    ids: set[str] = set()
    for path in paths:
        for rec in _read_jsonl(path):
            ids.update(str(rec[k]) for k in ("id", "prompt_id") if k in rec)
    return ids


def nq_rows(data_dir: Path, n: int, rng: random.Random, exclude: frozenset[str] = frozenset()) -> list[EvalRow]:
    """`n` random NQ-open dev questions (grader contains), none whose id is in `exclude`."""
    path = data_dir / NQ_FILE
    records = _read_jsonl(path)
    usable = [i for i in range(len(records)) if f"nq-{i}" not in exclude]
    picked = sorted(rng.sample(usable, min(n, len(usable))))
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


def label_rows(
    data_dir: Path,
    n: int,
    rng: random.Random,
    max_prompt_chars: int,
    templates: dict[str, tuple[str, ...]] = TEMPLATES,
    exclude: frozenset[str] = frozenset(),
) -> list[EvalRow]:
    """About `n` prompts spread evenly over `templates` (grader choice), prompts up to `max_prompt_chars`."""
    per_template = max(1, n // len(templates))
    rows: list[EvalRow] = []
    for name, choices in templates.items():
        stem = name.removesuffix(".jsonl")
        path = data_dir / T0_DIR / name
        records = _read_jsonl(path)
        known = {normalize(c) for c in choices}
        usable = []
        for i, rec in enumerate(records):
            label = str(rec["completion"]).replace(END_OF_TEXT, "").strip()
            prompt = str(rec["prompt"]).strip()
            if normalize(label) in known and len(prompt) <= max_prompt_chars and f"{stem}-{i}" not in exclude:
                usable.append((i, prompt, label))
        picked = sorted(rng.sample(usable, min(per_template, len(usable))))
        if len({label for _, _, label in picked}) < 2:
            continue  # one class only: a constant answer would score 100%
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
    data_dir: Path = DEFAULT_DATA_DIR,
    nq: int = 100,
    labels: int = 200,
    seed: int = 0,
    max_prompt_chars: int = 400,
    template_set: str = "basic",
    exclude: frozenset[str] = frozenset(),
) -> list[EvalRow]:
    """The labelled set: `nq` NQ-open questions and about `labels` label prompts, deterministic for `seed`."""
    if template_set not in TEMPLATE_SETS:
        raise EvalDataError(f"unknown template set {template_set!r} (sets: {', '.join(TEMPLATE_SETS)})")
    rng = random.Random(seed)
    rows = nq_rows(data_dir, nq, rng, exclude) if nq > 0 else []
    if labels > 0:
        rows += label_rows(data_dir, labels, rng, max_prompt_chars, TEMPLATE_SETS[template_set], exclude)
    if not rows:
        raise EvalDataError("no rows selected (check --nq / --labels)")
    return rows
