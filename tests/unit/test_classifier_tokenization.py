"""Tokenization shared by training and the Triton tokenizer model; the labels file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from llm_router.classifier import INTENTS, read_labels
from llm_router.classifier.tokenization import MAX_TOKENS, IntentTokenizer, bucket_length, clip_chars, head_tail

REPO = Path(__file__).resolve().parents[2] / "model_repository"


def test_bucket_length() -> None:
    assert [bucket_length(n) for n in (1, 16, 17, 33, 64, 65, 500)] == [16, 16, 24, 40, 64, 64, 64]


def test_head_tail_keeps_both_ends() -> None:
    assert head_tail(list(range(5)), 10, 3) == [0, 1, 2, 3, 4]
    assert head_tail(list(range(20)), 6, 2) == [0, 1, 16, 17, 18, 19]


def test_clip_chars() -> None:
    assert clip_chars("abc", 10) == "abc"
    assert clip_chars("a" * 30 + "b" * 30, 10) == "a" * 10 + " " + "b" * 10


@pytest.fixture(scope="module")
def tokenizer() -> IntentTokenizer:
    return IntentTokenizer()


def test_encode_pads_to_one_bucket(tokenizer: IntentTokenizer) -> None:
    batch = tokenizer.encode(["Summarize this.", "Write a short poem about the sea."])
    assert batch.input_ids.dtype == np.int64 and batch.input_ids.shape == batch.attention_mask.shape
    assert batch.input_ids.shape == (2, 16)
    assert batch.input_ids[0, 0] == tokenizer.cls_id
    assert batch.attention_mask[0].sum() < batch.attention_mask[1].sum()


def test_long_text_is_truncated_keeping_the_instruction_at_the_end(tokenizer: IntentTokenizer) -> None:
    text = "word " * 100_000 + "How would you rephrase that in a few words?"
    ids = tokenizer.token_ids([text])[0]
    assert len(ids) == MAX_TOKENS and ids[-1] == tokenizer.sep_id
    assert tokenizer.tokenizer.decode(ids[-12:-1]).endswith("rephrase that in a few words?")


@pytest.mark.parametrize("model", ["intent_encoder", "intent_encoder_int8"])
def test_labels_file_lists_the_taxonomy_in_order(model: str) -> None:
    assert tuple(read_labels(REPO / model / "labels.txt")) == INTENTS
