"""Intent dataset builder: real prompts from ../shared/data mapped to the 9 intents, split by source template.

Sources and how each maps to an intent (the tables below are the documentation):

- intent/t0_templates/<dataset>_<template>.jsonl (~170 prompts per file): by file name with `T0_RULES`, first
  match. Inverse templates (write a story/article/dialogue from a summary, generate a question, ...) map by what
  the prompt asks, not by the dataset's task; question-writing templates and bare-title prompts are left out.
- intent/arena_hard v2.0 (750): subcategory coding -> coding, math -> reasoning, creative_writing -> itself.
- intent/arena_hard v0.1 (500): only where clear from the prompt (`ARENA_V01_RULES`: code blocks and code requests
  -> coding, plans -> planning, proofs and math -> reasoning, stories/poems -> creative_writing); the rest left out.
- intent/self_instruct_user_oriented (252): `SELF_INSTRUCT_RULES` on the instruction, coding apps by app name;
  the rest left out.
- outcomes/routellm MMLU (57 subjects, 14,042): factual_qa; the subjects in `MMLU_REASONING_SUBJECTS` -> reasoning.
- outcomes/routellm GSM8K (1,319): reasoning.
- qa/nq_open (7,210 real Google search questions, CC BY-SA 3.0 data): factual_qa, as typed (short, lowercase).
- export/router_export/data/handwritten_*.jsonl: hand-written for this project (`source: handwritten`), every intent;
  `handwritten_train.jsonl` composes hand-written instructions with hand-written pasted texts, topics and subjects.

`llm_cascades_train.csv.gz` has no license and is not used.
Label conventions (docs/classifier.md): factual_qa = knowledge and explanation questions, advice, and greetings or
chit-chat (a cheap tier answers them); extraction = pull fields/entities/numbers/dates/counts out of given text;
classification = put given items into labels/categories/sentiment/scores; rewriting = edit, paraphrase, translate,
change tone or format of given text; creative_writing = stories, poems, posts, emails, marketing copy, role-play;
coding = code asked for or given; reasoning = math, logic puzzles, multi-step deduction; planning = plans,
schedules, itineraries, strategies.

The hand-labelled evaluation set `data/eval_real_prompts.jsonl` is never trained on: `build` drops every training
row that is identical or near-identical to an evaluation row (`near_duplicates`).

Split: every row has a `group` = its phrasing family (the T0 file, the MMLU subject, the hand-written group, a hash
bucket for one-off real prompts). Whole groups go to `test`, so held-out T0 templates and MMLU subjects are unseen.
Balance: at most `--per-group` rows per group and `--per-class` per intent in each split, spread round-robin over
sources and then over groups, so the ~50k templated T0 rows are one source among several, not the bulk.

Run: `python -m router_export.intent_data [--data-dir ../shared/data] [--out artifacts/classifier/intent_dataset.jsonl]`
(`--check-eval`: compare every source row, not only the chosen ones, with the evaluation set).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from llm_router.classifier import INTENTS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
DATA = Path(__file__).resolve().parent / "data"
HANDWRITTEN_PLANNING = DATA / "handwritten_planning.jsonl"
HANDWRITTEN_FILES = (HANDWRITTEN_PLANNING, DATA / "handwritten_train.jsonl")
EVAL_REAL_PROMPTS = DATA / "eval_real_prompts.jsonl"
T0_SHARE = 0.25  # templated T0 rows: at most this share of an intent's rows
NEAR_DUPLICATE_CHARS = 1000
NEAR_DUPLICATE_COSINE = 0.75  # TF-IDF (character 3-5 grams) cosine at or above which a row counts as a near-copy
DEFAULT_OUT = PROJECT_ROOT / "artifacts" / "classifier" / "intent_dataset.jsonl"

# T0/P3 templates, by file stem; first match wins. None = left out (no intent of the taxonomy fits).
T0_RULES: list[tuple[str, str | None]] = [
    # inverse templates: the prompt asks for something other than the dataset's task
    (r"_generate_question(_by_answer)?$", None),  # write a question about a passage
    (r"^cosmos_qa_context_answer_to_question$", None),
    (r"^social_i_qa_Generate_the_question_from_the_answer$", None),
    (r"^wiki_qa_Generate_Question_from_Topic$", None),
    (r"^wiki_qa_Jeopardy_style$", None),  # write a Jeopardy clue from an answer
    (r"^gigaword_reverse_writing$", None),  # a bare "Title: ..." line: the prompt asks for nothing
    (r"^cnn_dailymail_3_0_0_(generate_story|spice_up_story)$", "creative_writing"),
    (r"^samsum_Write_a_dialogue_that_match_this_summary$", "creative_writing"),
    (r"^multi_news_expand_reverse_task_$", "creative_writing"),
    (r"^gigaword_write_an_article$", "creative_writing"),
    (r"^app_reviews_generate_review$", "creative_writing"),
    (r"_build_story_around_qa$", "creative_writing"),
    (r"^dream_generate_(first|last)_utterance$", "creative_writing"),
    (r"^wiki_bio_who$", "creative_writing"),  # write a short biography from bullet facts
    (r"^common_gen_(sentence_to_concepts|topics_from_the_sentence)$", "extraction"),
    (r"^common_gen_", "creative_writing"),  # write a sentence using given concepts
    (r"^(glue_mrpc_generate_(paraphrase|sentence)|paws_labeled_final_paraphrase_task)$", "rewriting"),
    (r"^wiki_bio_guess_person$", "factual_qa"),  # who is described by these facts
    # the dataset's own task
    (r"_title_generation$|^quoref_Guess_Title_For_Context$", "summarization"),  # a title is a one-line summary
    (r"^(xsum|cnn_dailymail_3_0_0|samsum|multi_news|gigaword)_", "summarization"),
    (r"^(wiki_bio|wiki_hop_original|adversarial_qa|quoref|duorc_(SelfRC|ParaphraseRC))_", "extraction"),
    (r"^dream_", "extraction"),  # answer from a given dialogue
    (r"^sciq_(Direct_Question|Multiple_Choice|Multiple_Choice_Question_First)$", "extraction"),  # with a paragraph
    (r"^sciq_", "factual_qa"),  # closed book
    (r"^(kilt_tasks_hotpotqa|commonsense_qa)_", "factual_qa"),
    (r"^wiki_qa_Direct_Answer_to_Question$", "factual_qa"),
    (r"^(qasc_is_correct|social_i_qa_Check_if_a_random_answer_is_valid_or_not)", "classification"),
    (
        r"^(ag_news|amazon_polarity|app_reviews|dbpedia_14|imdb|rotten_tomatoes|yelp_review_full|trec)_",
        "classification",
    ),
    (r"^(glue_qqp|glue_mrpc|paws_labeled_final|wiki_qa)_", "classification"),  # same meaning? right answer?
    (r"^(quarel|quartz|ropes|wiqa|qasc|cosmos_qa|social_i_qa)_", "reasoning"),  # apply facts to a new situation
]

ARENA_V2_SUBCATEGORY = {"coding": "coding", "math": "reasoning", "creative_writing": "creative_writing"}

_CODE_WORDS = (
    r"python|javascript|typescript|java\b|c\+\+|c#|rust|golang|\bgo\b code|sql|regex|bash|powershell|php|kotlin|"
    r"swift|scheme|vba|matlab|html|css|react|django|flask|pandas|numpy|pytorch|tensorflow|docker|kubernetes|nginx|"
    r"\bapi\b|script|function|program|code|class|compile|bug|error"
)
ARENA_V01_RULES: list[tuple[str, str]] = [
    (r"```|#include|\bdef \w+\(|\bimport \w+|function\s*\w*\s*\(|\w+\(\)\s*\{", "coding"),
    (
        rf"\b(write|create|make|give me|show me|implement|code|fix|debug|rewrite|translate)\b"
        rf".{{0,60}}\b({_CODE_WORDS})",
        "coding",
    ),
    (
        r"\b(create|make|draft|design|develop|write|come up with|give me)\b.{0,40}\b(plan|roadmap|itinerary|schedule|"
        r"go[- ]to[- ]market strategy|series of workshops|step-by-step plan)\b",
        "planning",
    ),
    (r"\b(prove|proof|probability|integral|derivative|equation|solve for)\b|\$.+\$", "reasoning"),
    (r"\b(write|compose)\b.{0,40}\b(story|poem|song|lyrics|haiku|screenplay|script for a|dialog)", "creative_writing"),
]

SELF_INSTRUCT_CODING_APPS = {"Leetcode", "GeeksforGeeks", "w3schools", "Github", "StackOverflow"}
SELF_INSTRUCT_RULES: list[tuple[str, str]] = [
    (r"\b(code|function|program|script|sql|regex|python|javascript|latex|c\+\+|java)\b", "coding"),
    (r"\b(summari[sz]e|summary|tl;?dr|in a nutshell)\b", "summarization"),
    (r"^(extract|find all|list (all|the) .* (in|from|mentioned))|\bextract\b", "extraction"),
    (
        r"\b(classify|categori[sz]e|which category|decide whether|determine whether|is (this|it|the) .{0,40}(positive|"
        r"negative|spam|offensive)|identify the (tone|sentiment|genre))",
        "classification",
    ),
    (
        r"\b(rewrite|rephrase|paraphrase|proofread|correct (the )?(grammar|spelling)|fix (the )?grammar|"
        r"make (it|this|the .{0,20}) (more|less) |convert .{0,30} (formal|informal)|translate)\b",
        "rewriting",
    ),
    (r"\b(plan|itinerary|schedule|roadmap|agenda|step-by-step|steps to|workout)\b", "planning"),
    (r"^(convert the given|the tone of the)|\b(expand the given sentence|use appropriate emojis)", "rewriting"),
    (r"\b(solve|calculate|compute|how many|probability|prove|puzzle)\b", "reasoning"),
    (
        r"\b(write|compose|create|generate|come up with)\b.{0,40}\b(poem|story|tweet|post|caption|joke|song|lyrics|"
        r"slogan|letter|email|review|ad|advertisement|bio|description|name|title)s?\b",
        "creative_writing",
    ),
    # knowledge and explanation requests (the conventions' factual_qa)
    (
        r"^(explain|describe|what|why|how|who|give (some )?examples|give a brief description|provide a detailed "
        r"explanation|describe the responsibilities)\b",
        "factual_qa",
    ),
]

MMLU_REASONING_SUBJECTS = {
    "abstract_algebra",
    "college_mathematics",
    "elementary_mathematics",
    "high_school_mathematics",
    "high_school_statistics",
    "formal_logic",
}


@dataclass
class Row:
    """One labelled prompt."""

    prompt: str
    intent: str
    source: str  # t0 | arena_v2 | arena_v01 | self_instruct | mmlu | gsm8k | nq_open | handwritten
    group: str  # phrasing family; whole groups are held out
    split: str = ""


def first_match(rules: Iterable[tuple[str, str | None]], text: str, flags: int = 0) -> tuple[bool, str | None]:
    """(matched, intent) of the first rule whose pattern matches `text`."""
    for pattern, intent in rules:
        if re.search(pattern, text, flags):
            return True, intent
    return False, None


def t0_intent(stem: str) -> str | None:
    """The intent of a T0 template file (None = left out); raises for a file no rule covers."""
    matched, intent = first_match(T0_RULES, stem)
    if not matched:
        raise KeyError(f"no T0 rule for template {stem!r}: add one to T0_RULES")
    return intent


def hash_bucket(text: str, buckets: int) -> int:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:8], 16) % buckets


def read_jsonl(path: Path) -> Iterator[dict]:
    # split('\n'), not splitlines(): prompts contain U+2028
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            yield json.loads(line)


def t0_rows(data_dir: Path) -> Iterator[Row]:
    for path in sorted((data_dir / "intent" / "t0_templates").glob("*.jsonl")):
        intent = t0_intent(path.stem)
        if intent is None:
            continue
        for record in read_jsonl(path):
            yield Row(record["prompt"], intent, "t0", f"t0:{path.stem}")


def arena_rows(data_dir: Path) -> Iterator[Row]:
    base = data_dir / "intent" / "arena_hard" / "data"
    for record in read_jsonl(base / "arena-hard-v2.0" / "question.jsonl"):
        intent = ARENA_V2_SUBCATEGORY.get(record.get("subcategory", ""))
        if intent:
            yield Row(record["prompt"], intent, "arena_v2", f"arena_v2:{intent}:{hash_bucket(record['uid'], 8)}")
    for record in read_jsonl(base / "arena-hard-v0.1" / "question.jsonl"):
        _, intent = first_match(ARENA_V01_RULES, record["prompt"], re.IGNORECASE | re.DOTALL)
        if intent:
            yield Row(record["prompt"], intent, "arena_v01", f"arena_v01:{intent}:{hash_bucket(record['uid'], 8)}")


def self_instruct_intent(app: str, instruction: str) -> str | None:
    if app in SELF_INSTRUCT_CODING_APPS:
        return "coding"
    return first_match(SELF_INSTRUCT_RULES, instruction, re.IGNORECASE)[1]


def self_instruct_rows(data_dir: Path) -> Iterator[Row]:
    path = data_dir / "intent" / "self_instruct_user_oriented" / "human_eval" / "user_oriented_instructions.jsonl"
    for record in read_jsonl(path):
        intent = self_instruct_intent(record["motivation_app"], record["instruction"])
        if intent is None:
            continue
        instances = record.get("instances") or [{}]
        text = record["instruction"]
        if instances[0].get("input", "").strip():
            text += "\n\n" + instances[0]["input"]
        yield Row(text, intent, "self_instruct", f"self_instruct:{intent}:{hash_bucket(record['id'], 6)}")


def routellm_dir(data_dir: Path) -> Path:
    return data_dir / "outcomes" / "routellm" / "routellm" / "evals"


def read_csv(path: Path) -> Iterator[dict]:
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


WEAK_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"


@dataclass
class Outcome:
    """A benchmark prompt and whether the weak (small) model answered it correctly."""

    prompt: str
    benchmark: str  # mmlu | gsm8k
    subject: str
    weak_correct: bool


def routellm_outcomes(data_dir: Path) -> Iterator[Outcome]:
    """MMLU and GSM8K prompts of RouteLLM with the weak model's (Mixtral-8x7B) correctness."""
    base = routellm_dir(data_dir)
    for path in sorted((base / "mmlu" / "responses").glob("mmlu_*.csv")):
        subject = path.stem.removeprefix("mmlu_")
        for record in read_csv(path):
            yield Outcome(record["prompt"], "mmlu", subject, record[WEAK_MODEL] == "True")
    for record in read_csv(base / "gsm8k" / "gsm8k_responses.csv"):
        yield Outcome(record["prompt"], "gsm8k", "gsm8k", record[WEAK_MODEL] == "True")


def routellm_rows(data_dir: Path) -> Iterator[Row]:
    for outcome in routellm_outcomes(data_dir):
        if outcome.benchmark == "gsm8k":
            yield Row(outcome.prompt, "reasoning", "gsm8k", f"gsm8k:{hash_bucket(outcome.prompt, 8)}")
        else:
            intent = "reasoning" if outcome.subject in MMLU_REASONING_SUBJECTS else "factual_qa"
            yield Row(outcome.prompt, intent, "mmlu", f"mmlu:{outcome.subject}")


NQ_OPEN_FILES = ("NQ-open.dev.jsonl", "NQ-open.efficientqa.dev.1.1.jsonl", "NQ-open.efficientqa.test.1.1.jsonl")


def nq_open_rows(data_dir: Path) -> Iterator[Row]:
    """NQ-open's real search questions: factual_qa, in 8 hash groups."""
    for name in NQ_OPEN_FILES:
        path = data_dir / "qa" / "nq_open" / name
        if path.exists():
            for record in read_jsonl(path):
                yield Row(record["question"], "factual_qa", "nq_open", f"nq_open:{hash_bucket(record['question'], 8)}")


def handwritten_rows(path: Path = HANDWRITTEN_PLANNING) -> Iterator[Row]:
    for record in read_jsonl(path):
        if record.get("source") != "handwritten" or record["intent"] not in INTENTS:
            raise ValueError(f"{path}: rows must be hand-written with a known intent: {record}")
        yield Row(record["prompt"], record["intent"], "handwritten", f"handwritten:{record['group']}")


def eval_rows(path: Path = EVAL_REAL_PROMPTS) -> list[Row]:
    """The hand-labelled real-prompt evaluation set (never trained on)."""
    rows = []
    for record in read_jsonl(path):
        if record["intent"] not in INTENTS:
            raise ValueError(f"{path}: unknown intent in {record}")
        rows.append(Row(record["prompt"], record["intent"], record["source"], record["id"], "eval"))
    return rows


def all_rows(data_dir: Path) -> list[Row]:
    rows: list[Row] = []
    for reader in (t0_rows, arena_rows, self_instruct_rows, routellm_rows, nq_open_rows):
        rows.extend(reader(data_dir))
    for path in HANDWRITTEN_FILES:
        rows.extend(handwritten_rows(path))
    return rows


def near_duplicates(rows: list[Row], reference: list[Row]) -> list[float]:
    """Per row, the highest TF-IDF (character 3-5 gram) cosine to any `reference` row; >= threshold = near-copy."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    # the evaluation prompts are short: comparing the first NEAR_DUPLICATE_CHARS of each row keeps this fast
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), lowercase=True, sublinear_tf=True)
    ref = vectorizer.fit_transform([r.prompt[:NEAR_DUPLICATE_CHARS] for r in reference])
    best: list[float] = []
    for start in range(0, len(rows), 4096):
        texts = [r.prompt[:NEAR_DUPLICATE_CHARS] for r in rows[start : start + 4096]]
        sims = vectorizer.transform(texts) @ ref.T
        best.extend(sims.max(axis=1).toarray().reshape(-1).tolist())
    return best


def deduplicate(rows: Iterable[Row]) -> list[Row]:
    """First occurrence of each whitespace/case-normalised prompt; empty prompts dropped."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        key = " ".join(row.prompt.lower().split())
        if key and key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def split_groups(rows: list[Row], test_fraction: float, seed: int) -> dict[str, str]:
    """group -> 'train'|'test': per (intent, source), about `test_fraction` of the groups (at least one of two)."""
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        groups[(row.intent, row.source)].add(row.group)
    assignment = {}
    for key in sorted(groups):
        names = sorted(groups[key])
        random.Random(f"{seed}:{key}").shuffle(names)
        n_test = round(len(names) * test_fraction)
        if len(names) >= 2:
            n_test = min(max(n_test, 1), len(names) - 1)
        for i, name in enumerate(names):
            assignment[name] = "test" if i < n_test else "train"
    return assignment


def round_robin(queues: list[list[Row]], limit: int) -> list[Row]:
    """Up to `limit` rows taken one at a time from the end of each queue in turn (the queues are consumed)."""
    chosen: list[Row] = []
    while len(chosen) < limit and any(queues):
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop())
    return chosen


def spread_sample(rows: list[Row], limit: int, key: str, seed: int) -> list[Row]:
    """At most `limit` rows, taken round-robin over the values of `key` so no group dominates."""
    by_key: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_key[getattr(row, key)].append(row)
    rng = random.Random(seed)
    queues = []
    for name in sorted(by_key):
        items = by_key[name][:]
        rng.shuffle(items)
        queues.append(items)
    return round_robin(queues, limit)


def spread_over_sources(rows: list[Row], limit: int, seed: int, t0_cap: int | None = None) -> list[Row]:
    """At most `limit` rows (T0 at most `t0_cap`), round-robin over sources, each source spread over its groups."""
    by_source: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_source[row.source].append(row)
    queues = []
    for name in sorted(by_source):
        n = len(by_source[name]) if name != "t0" or t0_cap is None else min(t0_cap, len(by_source[name]))
        queues.append(spread_sample(by_source[name], n, "group", seed)[::-1])
    return round_robin(queues, limit)


def build(
    data_dir: Path, per_group: int = 40, per_class: int = 1500, test_fraction: float = 0.25, seed: int = 13
) -> list[Row]:
    """Read, deduplicate, drop near-copies of the evaluation set, split by group and balance; rows carry their split."""
    rows = deduplicate(all_rows(data_dir))
    assignment = split_groups(rows, test_fraction, seed)
    out: list[Row] = []
    for split in ("train", "test"):
        cap = per_class if split == "train" else max(per_class // 3, 1)
        for intent in INTENTS:
            members = [r for r in rows if r.intent == intent and assignment[r.group] == split]
            capped: list[Row] = []
            by_group: dict[str, list[Row]] = defaultdict(list)
            for row in members:
                by_group[row.group].append(row)
            # thin classes (few groups) may take more rows from each group
            group_cap = max(per_group, -(-cap // max(len(by_group), 1)))
            for name in sorted(by_group):
                capped.extend(spread_sample(by_group[name], group_cap, "source", seed))
            # hand-written rows first (up to the cap), the real ones fill the rest
            hand = spread_sample([r for r in capped if r.source == "handwritten"], cap, "group", seed)
            real = spread_over_sources(
                [r for r in capped if r.source != "handwritten"], cap - len(hand), seed, round(cap * T0_SHARE)
            )
            for row in real + hand:
                row.split = split
                out.append(row)
    # checked on the chosen rows only (a pass over all ~77k rows takes minutes); the full check: `--check-eval`
    return [r for r, sim in zip(out, near_duplicates(out, eval_rows()), strict=True) if sim < NEAR_DUPLICATE_COSINE]


def summary(rows: list[Row]) -> str:
    counts = Counter((r.split, r.intent) for r in rows)
    groups = Counter()
    for split, intent, _group in {(r.split, r.intent, r.group) for r in rows}:
        groups[(split, intent)] += 1
    lines = [f"{'intent':<18}{'train':>7}{'groups':>8}{'test':>7}{'groups':>8}"]
    for intent in INTENTS:
        lines.append(
            f"{intent:<18}{counts[('train', intent)]:>7}{groups[('train', intent)]:>8}"
            f"{counts[('test', intent)]:>7}{groups[('test', intent)]:>8}"
        )
    return "\n".join(lines)


def write_jsonl(rows: Iterable[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")


def load_jsonl(path: Path) -> list[Row]:
    return [Row(**record) for record in read_jsonl(path)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="router-intent-data", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the shared data folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--per-group", type=int, default=40)
    parser.add_argument("--per-class", type=int, default=1500)
    parser.add_argument(
        "--check-eval", action="store_true", help="compare EVERY source row with the evaluation set (minutes)"
    )
    args = parser.parse_args(argv)
    if args.check_eval:
        every = deduplicate(all_rows(args.data_dir))
        sims = near_duplicates(every, eval_rows())
        close = sorted(zip(sims, (r.source for r in every), (r.prompt for r in every), strict=True), reverse=True)
        print(f"{len(every)} source rows; highest cosine to an evaluation row {close[0][0]:.3f}; ")
        print(f">= {NEAR_DUPLICATE_COSINE} (dropped by build): {sum(s >= NEAR_DUPLICATE_COSINE for s in sims)}")
        for sim, source, prompt in close[:5]:
            print(f"  {sim:.3f} {source}: {prompt[:100]!r}")
        return 0
    rows = build(args.data_dir, per_group=args.per_group, per_class=args.per_class)
    write_jsonl(rows, args.out)
    print(summary(rows))
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
