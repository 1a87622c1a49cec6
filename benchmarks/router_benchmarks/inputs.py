"""perf_analyzer input-data JSON files built from real prompts of mixed intents.

    python -m router_benchmarks.inputs --out-dir artifacts/bench/inputs             # from ../shared/data
    python -m router_benchmarks.inputs --data-dir /path/to/data --per-intent 20 --max-tokens 32

Prompts come from the Apache-2.0 intent data in `../shared/data/intent` (T0/P3 templates, Arena-Hard-Auto,
Self-Instruct user-oriented), a fixed number per intent, picked with a seed. Without that folder the committed
sample `data/bench_prompts.jsonl` (or, failing that, `data/demo_prompts.jsonl`) is used.

One file per request layout (`perf_analyzer --input-data FILE`):
- router: `router`, `router_stream`: `text_input` BYTES [1] + `max_tokens` INT32 [1]
- classifier: `intent_classifier`: `text` BYTES [1] (batched model; perf_analyzer adds the batch dimension)
- tier: `tier_*`: `text_input` BYTES [1] + `max_tokens` INT32 [1] (+ `stream` BOOL [1] true when streaming)
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import router_client

PACKAGE_DATA = Path(__file__).parent / "data"
BENCH_SAMPLE = PACKAGE_DATA / "bench_prompts.jsonl"
DEMO_SAMPLE = Path(router_client.__file__).parent / "data" / "demo_prompts.jsonl"  # the demo's prompts
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
MAX_PROMPT_CHARS = 2000  # long articles make CPU tiers slow and the committed sample large

# intent -> sources of real prompts of that intent (all Apache-2.0, see data/SOURCES.md):
#   t0:<template file>, arena:<v2.0 subcategory>, self_instruct:<motivation_app>
INTENT_SOURCES: dict[str, tuple[str, ...]] = {
    "summarization": (
        "t0:xsum_summarize_DOC",
        "t0:samsum_Summarize_this_dialogue_",
        "t0:gigaword_generate_summary_for_this",
        "t0:cnn_dailymail_3_0_0_tldr_summary",
    ),
    "extraction": (
        "t0:duorc_SelfRC_extract_answer",
        "t0:quoref_Read_And_Extract_",
        "t0:adversarial_qa_dbert_answer_the_following_q",
    ),
    "classification": (
        "t0:ag_news_classify",
        "t0:amazon_polarity_Is_this_review",
        "t0:trec_what_category_best_describe",
        "t0:imdb_Movie_Expressed_Sentiment",
    ),
    "factual_qa": (
        "t0:kilt_tasks_hotpotqa_straighforward_qa",
        "t0:sciq_Direct_Question_Closed_Book_",
        "t0:commonsense_qa_answer_given_question_without_options",
    ),
    "rewriting": (
        "t0:glue_mrpc_generate_paraphrase",
        "t0:paws_labeled_final_paraphrase_task",
        "self_instruct:Grammarly",
    ),
    "creative_writing": ("arena:creative_writing",),
    "coding": (
        "arena:coding",
        "self_instruct:Leetcode",
        "self_instruct:GeeksforGeeks",
        "self_instruct:w3schools",
    ),
    "reasoning": ("arena:math", "self_instruct:Wolfram alpha"),
    "planning": (
        "self_instruct:Notion",
        "self_instruct:National Geographic",
        "self_instruct:tripadvisor.com",
        "self_instruct:Workout",
        "self_instruct:Jira",
    ),
}


@dataclass(frozen=True)
class Prompt:
    """A real prompt, the intent its source implies and where it came from."""

    text: str
    intent: str
    source: str

    def to_json(self) -> dict[str, str]:
        return {"prompt": self.text, "source": self.source, "expected_intent": self.intent}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    # split on "\n" only: some prompts contain U+2028, which str.splitlines() would split on
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _self_instruct_prompt(row: dict[str, Any]) -> str:
    instance = (row.get("instances") or [{}])[0]
    extra = str(instance.get("input") or "").strip()
    return row["instruction"].strip() + (f"\n\n{extra}" if extra else "")


def candidates(data_dir: Path, source: str) -> list[tuple[str, str]]:
    """(prompt, source label) pairs of one source spec, e.g. 't0:ag_news_classify' or 'arena:coding'."""
    kind, _, name = source.partition(":")
    intent_dir = data_dir / "intent"
    if kind == "t0":
        path = intent_dir / "t0_templates" / f"{name}.jsonl"
        return [(row["prompt"], f"t0_templates/{path.name}") for row in _read_jsonl(path)]
    if kind == "arena":
        path = intent_dir / "arena_hard" / "data" / "arena-hard-v2.0" / "question.jsonl"
        rows = [r for r in _read_jsonl(path) if r.get("subcategory") == name]
        return [(r["prompt"], f"arena_hard v2.0 ({name})") for r in rows]
    if kind == "self_instruct":
        path = intent_dir / "self_instruct_user_oriented" / "human_eval" / "user_oriented_instructions.jsonl"
        rows = [r for r in _read_jsonl(path) if r.get("motivation_app") == name]
        return [(_self_instruct_prompt(r), f"self_instruct_user_oriented ({name})") for r in rows]
    raise ValueError(f"unknown prompt source kind {kind!r} in {source!r}")


PromptFilter = Callable[[str], bool]


def sample_from_data_dir(
    data_dir: Path,
    per_intent: int,
    *,
    seed: int = 0,
    max_chars: int = MAX_PROMPT_CHARS,
    accept: PromptFilter | None = None,
) -> list[Prompt]:
    """`per_intent` prompts of each intent, spread over that intent's sources, deterministic for a seed.

    `accept` (e.g. a token-length check) is applied lazily to the prompts drawn.
    """
    rng = random.Random(seed)
    chosen: list[Prompt] = []
    for intent, sources in INTENT_SOURCES.items():
        pools = []
        for source in sources:
            pool = [(t, s) for t, s in candidates(data_dir, source) if t.strip() and len(t) <= max_chars]
            rng.shuffle(pool)
            pools.append(pool)
        picked: list[Prompt] = []
        while len(picked) < per_intent and any(pools):
            for pool in pools:  # round-robin over the sources
                while pool and len(picked) < per_intent:
                    text, label = pool.pop()
                    if accept is None or accept(text):
                        picked.append(Prompt(text, intent, label))
                        break
        chosen += picked
    return interleave(chosen)


def interleave(prompts: Sequence[Prompt]) -> list[Prompt]:
    """Reorder so that consecutive prompts have different intents (a mixed stream, not blocks)."""
    by_intent: dict[str, list[Prompt]] = {}
    for prompt in prompts:
        by_intent.setdefault(prompt.intent, []).append(prompt)
    mixed: list[Prompt] = []
    while any(by_intent.values()):
        for queue in by_intent.values():
            if queue:
                mixed.append(queue.pop(0))
    return mixed


def read_sample(path: Path) -> list[Prompt]:
    """Prompts of a committed sample file (JSONL with prompt / expected_intent / source)."""
    return [
        Prompt(row["prompt"], row.get("expected_intent", "unknown"), row.get("source", path.name))
        for row in _read_jsonl(path)
    ]


def load_prompts(
    data_dir: Path | None = None,
    *,
    per_intent: int = 8,
    seed: int = 0,
    limit: int | None = None,
    accept: PromptFilter | None = None,
) -> tuple[list[Prompt], str]:
    """Real prompts of mixed intents and a note saying where they came from.

    `data_dir` (default ../shared/data) when it has the intent data, else the committed sample; `accept`
    drops prompts (e.g. longer than a tier's context).
    """
    data_dir = DEFAULT_DATA_DIR if data_dir is None else Path(data_dir)
    if (data_dir / "intent").is_dir():
        prompts = sample_from_data_dir(data_dir, per_intent, seed=seed, accept=accept)
        origin = f"{data_dir} ({per_intent} per intent, seed {seed})"
    else:
        sample = BENCH_SAMPLE if BENCH_SAMPLE.exists() else DEMO_SAMPLE
        prompts = interleave([p for p in read_sample(sample) if accept is None or accept(p.text)])
        origin = f"committed sample {sample.name} ({data_dir} has no intent/ folder)"
    if limit is not None:
        prompts = prompts[:limit]
    if not prompts:
        raise ValueError(f"no prompts found ({origin})")
    return prompts, origin


# -- perf_analyzer input-data JSON ----


def _bytes(value: str) -> dict[str, Any]:
    return {"content": [value], "shape": [1]}


def _int32(value: int) -> dict[str, Any]:
    return {"content": [int(value)], "shape": [1]}


def request_entry(layout: str, prompt: str, max_tokens: int, *, stream: bool = False) -> dict[str, Any]:
    """One request of perf_analyzer's input data for a model layout (router, classifier or tier)."""
    if layout == "router":
        return {"text_input": _bytes(prompt), "max_tokens": _int32(max_tokens)}
    if layout == "classifier":
        return {"text": _bytes(prompt)}
    if layout == "tier":
        entry = {"text_input": _bytes(prompt), "max_tokens": _int32(max_tokens)}
        if stream:
            entry["stream"] = {"content": [True], "shape": [1]}
        return entry
    raise ValueError(f"unknown input layout {layout!r} (router, classifier or tier)")


def input_data(layout: str, prompts: Iterable[str], max_tokens: int, *, stream: bool = False) -> dict[str, Any]:
    """perf_analyzer's `--input-data` JSON: one entry per prompt, used round-robin by perf_analyzer."""
    data = [request_entry(layout, p, max_tokens, stream=stream) for p in prompts]
    if not data:
        raise ValueError("no prompts for the input data")
    return {"data": data}


LAYOUTS = ("router", "classifier", "tier")


def write_input_files(
    out_dir: Path, prompts: Sequence[Prompt], max_tokens: int, *, tier_stream: bool = False
) -> dict[str, Path]:
    """Write `<layout>.json` for every layout (and prompts.jsonl, the prompts used); layout -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = [p.text for p in prompts]
    paths = {}
    for layout in LAYOUTS:
        path = out_dir / f"{layout}.json"
        data = input_data(layout, texts, max_tokens, stream=tier_stream and layout == "tier")
        path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        paths[layout] = path
    with open(out_dir / "prompts.jsonl", "w", encoding="utf-8") as handle:
        for prompt in prompts:
            handle.write(json.dumps(prompt.to_json(), ensure_ascii=False) + "\n")
    return paths


def write_sample(path: Path, prompts: Sequence[Prompt]) -> None:
    """Write a committed-sample JSONL file (prompt, source, expected_intent)."""
    with open(path, "w", encoding="utf-8") as handle:
        for prompt in prompts:
            handle.write(json.dumps(prompt.to_json(), ensure_ascii=False) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m router_benchmarks.inputs",
        description="Write perf_analyzer input-data JSON from real prompts.",
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default: ../shared/data")
    parser.add_argument("--out-dir", type=Path, default=Path("artifacts/bench/inputs"))
    parser.add_argument("--per-intent", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--tier-stream", action="store_true", help="set the tiers' `stream` input to true")
    parser.add_argument(
        "--write-sample",
        type=Path,
        help="instead: write a sample JSONL of prompts (for data/bench_prompts.jsonl)",
    )
    args = parser.parse_args(argv)
    prompts, origin = load_prompts(args.data_dir, per_intent=args.per_intent, seed=args.seed)
    if args.write_sample is not None:
        write_sample(args.write_sample, prompts)
        print(f"wrote {len(prompts)} prompts from {origin} to {args.write_sample}")
        return 0
    paths = write_input_files(args.out_dir, prompts, args.max_tokens, tier_stream=args.tier_stream)
    print(f"{len(prompts)} prompts from {origin}")
    for layout, path in paths.items():
        print(f"  {layout:<10} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
