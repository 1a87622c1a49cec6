"""The exported intent classifier: committed heads, ONNX vs PyTorch, INT8 vs FP32 on the real-prompt set.

The ONNX models are rebuilt from the package's encoder and the committed heads (no ../shared needed); the build
is skipped when model_repository already holds up-to-date models.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from llm_router.classifier import INTENTS, read_labels
from llm_router.classifier.tokenization import IntentTokenizer
from llm_router.core.policy import load_policy
from router_export import intent_data
from router_export.classifier_encoder import DIFFICULTY_LAYERS, EMBED_DIM, FEATURE_LAYERS, build_torch_model
from router_export.classifier_heads import WEIGHTS, Heads
from router_export.classifier_onnx import ENCODER_INT8_MODEL, ENCODER_MODEL, LABELS_FILE, build_for_repository
from router_export.intent_data import EVAL_REAL_PROMPTS

REPO = Path(__file__).resolve().parents[2] / "model_repository"
SHIPPED_POLICY = REPO / "router" / "1" / "policy.yaml"
PROMPTS = [
    "Summarize the following article in two sentences: The city council voted on Tuesday to expand the bus network.",
    "Write a Python function that returns the n-th Fibonacci number.",
    "Plan a three-day trip to Rome with a museum each morning.",
    "What is the capital of Australia?",
]


def read_sample() -> list[dict]:
    """The hand-written, hand-labelled real-prompt evaluation set (committed; never trained on)."""
    return [json.loads(line) for line in EVAL_REAL_PROMPTS.read_text(encoding="utf-8").splitlines() if line]


def test_committed_heads_are_small_and_match_the_taxonomy() -> None:
    assert WEIGHTS.stat().st_size < 3 * 1024 * 1024  # three averaged MLPs (768-768-9) and the difficulty head
    heads = Heads.load()
    assert heads.labels == INTENTS
    assert heads.intent_layers[0][0].shape[0] == EMBED_DIM * len(FEATURE_LAYERS)
    assert heads.intent_layers[-1][0].shape[1] == len(INTENTS)
    assert heads.difficulty[0].shape == (EMBED_DIM * len(DIFFICULTY_LAYERS), 1)


@pytest.fixture(scope="module")
def sessions():
    import onnxruntime as ort

    build_for_repository(REPO)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return {
        name: ort.InferenceSession(str(REPO / name / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"])
        for name in (ENCODER_MODEL, ENCODER_INT8_MODEL)
    }


def run(session, texts: list[str], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    tokenizer = IntentTokenizer()
    probs, difficulty = [], []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer.encode(texts[start : start + batch_size])
        p, d = session.run(
            ["intent_probs", "difficulty"], {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        )
        probs.append(p)
        difficulty.append(d)
    return np.concatenate(probs), np.concatenate(difficulty)


def test_onnx_graph_has_dynamic_batch_and_sequence_axes(sessions) -> None:
    session = sessions[ENCODER_MODEL]
    inputs = {i.name: i for i in session.get_inputs()}
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert all(
        i.type == "tensor(int64)" and isinstance(i.shape[0], str) and isinstance(i.shape[1], str)
        for i in inputs.values()
    )
    assert [o.name for o in session.get_outputs()] == ["intent_probs", "difficulty", "intent"]
    tokenizer = IntentTokenizer()
    for texts, length in ((PROMPTS[3:], 16), (PROMPTS * 3, 128)):
        batch = tokenizer.pad(tokenizer.token_ids(texts), length)
        p, d = session.run(
            ["intent_probs", "difficulty"], {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        )
        assert p.shape == (len(texts), 9) and d.shape == (len(texts), 1)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_onnx_matches_pytorch(sessions) -> None:
    import torch

    model = build_torch_model(Heads.load())
    batch = IntentTokenizer().encode(PROMPTS)
    with torch.no_grad():
        p_torch, d_torch = model(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask))
    p_onnx, d_onnx, _ = sessions[ENCODER_MODEL].run(
        None, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    )
    np.testing.assert_allclose(p_onnx, p_torch.numpy(), atol=1e-4)
    np.testing.assert_allclose(d_onnx, d_torch.numpy(), atol=1e-4)


def test_int8_loses_at_most_one_point_of_macro_f1(sessions) -> None:
    from sklearn.metrics import f1_score

    rows = read_sample()
    texts = [r["prompt"] for r in rows]
    y = np.array([INTENTS.index(r["intent"]) for r in rows])
    p32, d32 = run(sessions[ENCODER_MODEL], texts)
    p8, d8 = run(sessions[ENCODER_INT8_MODEL], texts)
    f1_32 = f1_score(y, p32.argmax(1), average="macro")
    f1_8 = f1_score(y, p8.argmax(1), average="macro")
    print(f"real-prompt set: FP32 macro-F1 {f1_32:.4f}, INT8 macro-F1 {f1_8:.4f}")
    assert f1_32 >= 0.8  # the bar on real prompts; the full evaluation is router-train-classifier
    assert f1_8 >= f1_32 - 0.01
    assert np.mean(p8.argmax(1) == y) >= 0.85  # the served (INT8) model's accuracy bar on real prompts
    # difficulty: INT8 noise is small on average, and the shipped policy's difficulty rule decides the same way
    error = np.abs(d8 - d32).reshape(-1)
    print(
        f"difficulty |INT8 - FP32|: mean {error.mean():.4f}, p99 {np.quantile(error, 0.99):.4f}, max {error.max():.4f}"
    )
    assert error.mean() < 0.03 and np.quantile(error, 0.99) < 0.1
    above = load_policy(SHIPPED_POLICY).difficulty_rule.above
    assert np.mean((d8 > above) == (d32 > above)) >= 0.97  # prompts within INT8 noise of the threshold may cross


@pytest.mark.skipif(not intent_data.DEFAULT_DATA_DIR.is_dir(), reason="../shared/data is not available")
def test_held_out_templates_bar(sessions) -> None:
    """Held-out split of the intent dataset (whole templates and phrasing groups never trained on): macro-F1 >= 0.85,
    the issue's bar, and INT8 within one point of it (dynamic quantisation moves a few borderline prompts, by batch
    composition). The dataset is rebuilt from ../shared/data, so this runs where that folder exists."""
    from router_export.classifier_data import intent_labels, intent_rows
    from sklearn.metrics import f1_score

    _, held_out = intent_rows(intent_data.DEFAULT_DATA_DIR)
    texts, y = [r.prompt for r in held_out], intent_labels(held_out)
    f1_32 = f1_score(y, run(sessions[ENCODER_MODEL], texts)[0].argmax(1), average="macro")
    f1_8 = f1_score(y, run(sessions[ENCODER_INT8_MODEL], texts)[0].argmax(1), average="macro")
    print(f"held-out split: n={len(held_out)} FP32 macro-F1 {f1_32:.4f}, INT8 macro-F1 {f1_8:.4f}")
    assert f1_32 >= 0.85
    assert f1_8 >= f1_32 - 0.01


def test_build_is_skipped_when_up_to_date(sessions, capsys) -> None:
    build_for_repository(REPO)
    assert "up to date" in capsys.readouterr().out


@pytest.mark.parametrize("model", [ENCODER_MODEL, ENCODER_INT8_MODEL])
def test_intent_output_is_the_label_of_the_most_probable_intent(sessions, model: str) -> None:
    labels = tuple(read_labels(REPO / model / LABELS_FILE))
    assert labels == INTENTS
    texts = [r["prompt"] for r in read_sample()[:64]]
    batch = IntentTokenizer().encode(texts)
    probs, intent = sessions[model].run(
        ["intent_probs", "intent"], {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    )
    assert intent.shape == (len(texts), 1)
    assert [str(v) for v in intent.reshape(-1)] == [labels[i] for i in probs.argmax(axis=1)]
    assert len(set(intent.reshape(-1))) > 3  # several different labels, not one constant


def test_build_refuses_a_labels_file_that_disagrees_with_the_heads(tmp_path) -> None:
    for model in (ENCODER_MODEL, ENCODER_INT8_MODEL):
        (tmp_path / model / "1").mkdir(parents=True)
        (tmp_path / model / LABELS_FILE).write_text("\n".join(reversed(INTENTS)) + "\n")
    with pytest.raises(ValueError, match="labels.txt lists"):
        build_for_repository(tmp_path)


def test_cli_keeps_the_build_entry_point_and_names_a_missing_data_folder(tmp_path, capsys) -> None:
    from router_export import classifier

    assert classifier.build_for_repository is build_for_repository  # router-build-models calls it there
    with pytest.raises(SystemExit) as exited:
        classifier.main(["evaluate-onnx", "--data-dir", str(tmp_path / "none")])
    assert exited.value.code == 2 and f"data folder {tmp_path / 'none'} not found" in capsys.readouterr().err
