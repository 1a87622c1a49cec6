"""The intent dataset builder: mapping table, deduplication, split by template, hand-written rows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from llm_router.classifier import INTENTS
from router_export import intent_data
from router_export.intent_data import Row

SHARED = intent_data.DEFAULT_DATA_DIR


@pytest.mark.parametrize(
    ("stem", "intent"),
    [
        ("xsum_summarize_DOC", "summarization"),
        ("samsum_Sum_up_the_following_dialogue", "summarization"),
        ("gigaword_write_its_sentence", "summarization"),
        ("adversarial_qa_dbert_answer_the_following_q", "extraction"),
        ("quoref_Find_Answer", "extraction"),
        ("common_gen_sentence_to_concepts", "extraction"),
        ("ag_news_classify", "classification"),
        ("glue_qqp_duplicate_or_not", "classification"),
        ("wiki_qa_Decide_good_answer", "classification"),
        ("kilt_tasks_hotpotqa_final_exam", "factual_qa"),
        ("sciq_Multiple_Choice_Closed_Book_", "factual_qa"),
        ("glue_mrpc_generate_paraphrase", "rewriting"),
        ("paws_labeled_final_paraphrase_task", "rewriting"),
        ("quarel_heres_a_story", "reasoning"),
        ("wiqa_what_is_the_missing_first_step", "reasoning"),
    ],
)
def test_t0_templates_map_by_file_name(stem: str, intent: str) -> None:
    assert intent_data.t0_intent(stem) == intent


@pytest.mark.parametrize(
    ("stem", "intent"),
    [
        # inverse templates: the prompt's task differs from the dataset's
        ("cnn_dailymail_3_0_0_generate_story", "creative_writing"),
        ("gigaword_write_an_article", "creative_writing"),
        ("gigaword_reverse_writing", None),  # "Title: ..." and nothing else: no intent to read
        ("samsum_Write_a_dialogue_that_match_this_summary", "creative_writing"),
        ("multi_news_expand_reverse_task_", "creative_writing"),
        ("duorc_SelfRC_build_story_around_qa", "creative_writing"),
        ("app_reviews_generate_review", "creative_writing"),
        ("adversarial_qa_dbidaf_generate_question", None),
        ("duorc_ParaphraseRC_generate_question_by_answer", None),
    ],
)
def test_inverse_templates_map_by_what_they_ask(stem: str, intent: str | None) -> None:
    assert intent_data.t0_intent(stem) == intent


def test_unknown_template_is_an_error_not_a_guess() -> None:
    with pytest.raises(KeyError):
        intent_data.t0_intent("some_new_dataset_template")


def test_every_rule_maps_to_a_known_intent() -> None:
    for _, intent in intent_data.T0_RULES:
        assert intent is None or intent in INTENTS
    for rules in (intent_data.ARENA_V01_RULES, intent_data.SELF_INSTRUCT_RULES):
        assert all(intent in INTENTS for _, intent in rules)
    assert set(intent_data.ARENA_V2_SUBCATEGORY.values()) <= set(INTENTS)


@pytest.mark.parametrize(
    ("app", "instruction", "intent"),
    [
        ("Leetcode", "Given an array of integers, return the indices of two numbers.", "coding"),
        ("Grammarly", "Rewrite the given text and correct grammar, spelling, and punctuation errors.", "rewriting"),
        ("Gmail", "Summarize this email thread in two sentences.", "summarization"),
        ("tripadvisor.com", "Plan a 3-day itinerary for a trip to Rome.", "planning"),
        ("Netflix", "Hello there", None),
        ("Reddit", "Explain the meaning of the given phrase in simple terms.", "factual_qa"),
    ],
)
def test_self_instruct_rules(app: str, instruction: str, intent: str | None) -> None:
    assert intent_data.self_instruct_intent(app, instruction) == intent


def test_deduplicate_ignores_case_and_whitespace() -> None:
    rows = [Row("Hello  World", "coding", "t0", "a"), Row("hello world", "coding", "t0", "b"), Row(" ", "x", "t0", "c")]
    assert [r.group for r in intent_data.deduplicate(rows)] == ["a"]


def test_split_keeps_groups_whole_and_holds_out_some_of_each_class() -> None:
    rows = [Row(f"p{i}-{g}", "coding" if g < 4 else "planning", "t0", f"g{g}") for g in range(8) for i in range(5)]
    assignment = intent_data.split_groups(rows, test_fraction=0.25, seed=1)
    assert set(assignment) == {f"g{g}" for g in range(8)}
    for intent in ("coding", "planning"):
        splits = [assignment[r.group] for r in rows if r.intent == intent]
        assert "test" in splits and "train" in splits


def test_handwritten_planning_prompts() -> None:
    rows = list(intent_data.handwritten_rows())
    assert 60 <= len(rows) <= 120
    assert {r.intent for r in rows} == {"planning"} and {r.source for r in rows} == {"handwritten"}
    assert len({r.group for r in rows}) >= 5
    assert len({r.prompt for r in rows}) == len(rows)


def test_handwritten_training_prompts_cover_every_intent() -> None:
    rows = list(intent_data.handwritten_rows(intent_data.HANDWRITTEN_FILES[1]))
    assert {r.source for r in rows} == {"handwritten"}
    counts = Counter(r.intent for r in rows)
    assert set(counts) == set(INTENTS) and min(counts.values()) >= 30, counts
    for intent in INTENTS:
        assert len({r.group for r in rows if r.intent == intent}) >= 3, intent


def test_real_prompt_evaluation_set() -> None:
    rows = intent_data.eval_rows()
    assert len(rows) >= 300 and len({r.group for r in rows}) == len(rows)  # group = the row's unique id
    counts = Counter(r.intent for r in rows)
    assert set(counts) == set(INTENTS) and min(counts.values()) >= 30, counts
    assert {r.source for r in rows} == {"handwritten_eval"}


def test_no_handwritten_training_row_copies_an_evaluation_row() -> None:
    train = [r for path in intent_data.HANDWRITTEN_FILES for r in intent_data.handwritten_rows(path)]
    sims = intent_data.near_duplicates(train, intent_data.eval_rows())
    assert max(sims) < intent_data.NEAR_DUPLICATE_COSINE


def test_near_duplicates_finds_light_edits() -> None:
    reference = [Row("Extract the dates: the launch is on May 3 and the retro on May 10.", "extraction", "e", "1")]
    rows = [
        Row("extract the dates: the launch is on May 3, and the retro on May 10", "extraction", "t0", "a"),
        Row("Write a haiku about autumn rain.", "creative_writing", "t0", "b"),
    ]
    sims = intent_data.near_duplicates(rows, reference)
    assert sims[0] >= intent_data.NEAR_DUPLICATE_COSINE > sims[1]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not available")
def test_every_t0_file_is_covered_and_built_dataset_is_split_by_group() -> None:
    for path in (SHARED / "intent" / "t0_templates").glob("*.jsonl"):
        intent_data.t0_intent(path.stem)  # raises for an unmapped template
    rows = intent_data.build(SHARED, per_class=300)
    train_groups = {r.group for r in rows if r.split == "train"}
    test_groups = {r.group for r in rows if r.split == "test"}
    assert not train_groups & test_groups
    counts = Counter((r.split, r.intent) for r in rows)
    for intent in INTENTS:
        assert counts[("train", intent)] > 0 and counts[("test", intent)] > 0, intent
        assert counts[("train", intent)] <= 300
        t0 = sum(r.source == "t0" for r in rows if r.split == "train" and r.intent == intent)
        assert t0 <= round(300 * intent_data.T0_SHARE), intent  # templates are one source among several
    assert {r.source for r in rows} >= {"t0", "nq_open", "arena_v2", "handwritten", "gsm8k", "mmlu"}
    assert max(intent_data.near_duplicates(rows, intent_data.eval_rows())) < intent_data.NEAR_DUPLICATE_COSINE


def test_default_data_dir_is_next_to_the_project() -> None:
    assert intent_data.DEFAULT_DATA_DIR == Path(__file__).resolve().parents[2].parent / "shared" / "data"
