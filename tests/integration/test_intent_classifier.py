"""intent_classifier through the real local Triton server over gRPC: real prompts, batching, bad input."""

from __future__ import annotations

import json
import queue
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from llm_router.classifier import INTENTS
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "export" / "router_export" / "data" / "eval_real_prompts.jsonl"  # hand-written, never trained on
MODELS = ("intent_classifier", "intent_classifier_fp32")


def sample_prompts(per_class: int = 2) -> list[dict]:
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line]
    chosen = []
    for intent in INTENTS:
        chosen += [r for r in rows if r["intent"] == intent][:per_class]
    return chosen


def text_input(values: list[bytes]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("text", [len(values), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=np.object_).reshape(-1, 1))
    return tensor


def outputs() -> list[grpcclient.InferRequestedOutput]:
    return [grpcclient.InferRequestedOutput(n) for n in ("intent", "intent_probs", "difficulty")]


def classify(client, texts: list[str], model: str = "intent_classifier"):
    result = client.infer(model, [text_input([t.encode("utf-8") for t in texts])], outputs=outputs())
    return (
        [v.decode() for v in result.as_numpy("intent").reshape(-1)],
        result.as_numpy("intent_probs"),
        result.as_numpy("difficulty"),
    )


def test_classifies_real_prompts_sent_at_once(grpc_client) -> None:
    """Many [1,1] requests in flight together (Triton batches them); the answers match their own prompts."""
    rows = sample_prompts()
    answers: queue.Queue = queue.Queue()
    for index, row in enumerate(rows):
        grpc_client.async_infer(
            "intent_classifier",
            [text_input([row["prompt"].encode("utf-8")])],
            callback=lambda result, error, index=index: answers.put((index, result, error)),
            outputs=outputs(),
        )
    results = {}
    for _ in rows:
        index, result, error = answers.get(timeout=60)
        assert error is None, error
        results[index] = result
    correct = 0
    for index, row in enumerate(rows):
        result = results[index]
        probs = result.as_numpy("intent_probs")
        intent = result.as_numpy("intent").reshape(-1)[0].decode()
        difficulty = result.as_numpy("difficulty")
        assert probs.shape == (1, 9) and difficulty.shape == (1, 1)
        assert abs(float(probs.sum()) - 1.0) < 1e-4 and 0.0 <= float(difficulty[0, 0]) <= 1.0
        assert intent == INTENTS[int(probs.argmax())]
        correct += intent == row["intent"]
    assert correct / len(rows) >= 0.7, f"{correct}/{len(rows)} real prompts classified as labelled"


@pytest.mark.parametrize(("model", "atol"), [("intent_classifier_fp32", 1e-3), ("intent_classifier", 0.1)])
def test_batched_request_matches_single_requests(grpc_client, model: str, atol: float) -> None:
    """One [n,1] request equals n single ones (FP32 closely; INT8's dynamic activation scales see the batch)."""
    texts = [r["prompt"] for r in sample_prompts(1)]
    intents, probs, difficulty = classify(grpc_client, texts, model)
    assert probs.shape == (len(texts), 9) and difficulty.shape == (len(texts), 1)
    for i, text in enumerate(texts[:4]):
        single_intent, single_probs, single_difficulty = classify(grpc_client, [text], model)
        np.testing.assert_allclose(single_probs[0], probs[i], atol=atol)
        np.testing.assert_allclose(single_difficulty[0], difficulty[i], atol=atol)
        if model.endswith("fp32"):
            assert single_intent[0] == intents[i]


def test_clear_prompts_get_the_obvious_intent(grpc_client) -> None:
    cases = {
        "Write a Python function that checks whether a string is a palindrome.": "coding",
        "Summarize the following article in one sentence: The city council voted on Tuesday to extend the tram "
        "line to the airport, a project expected to cost 400 million euros and to open in 2029.": "summarization",
        "Plan a five-day itinerary for a family trip to Barcelona, one museum a day and a beach afternoon.": "planning",
    }
    for model in MODELS:
        intents, _, _ = classify(grpc_client, list(cases), model)
        assert intents == list(cases.values()), model


def test_fp32_and_int8_agree(grpc_client) -> None:
    texts = [r["prompt"] for r in sample_prompts(2)]
    int8, p8, d8 = classify(grpc_client, texts, "intent_classifier")
    fp32, p32, d32 = classify(grpc_client, texts, "intent_classifier_fp32")
    assert sum(a == b for a, b in zip(int8, fp32, strict=True)) >= len(texts) - 2
    assert np.abs(d8 - d32).max() < 0.1


@pytest.mark.parametrize(
    ("value", "message"),
    [(b"", "empty"), (b"   \n\t ", "empty"), (b"\xff\xfe not utf-8", "UTF-8")],
)
def test_bad_text_is_invalid_arg(grpc_client, value: bytes, message: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        grpc_client.infer("intent_classifier", [text_input([value])], outputs=outputs())
    assert "INVALID_ARG" in str(info.value.status()) and message in info.value.message()


def test_bad_request_does_not_fail_its_neighbours(grpc_client) -> None:
    answers: queue.Queue = queue.Queue()
    values = [b"Translate 'good morning' into French.", b"", b"What is the boiling point of water at sea level?"]
    for index, value in enumerate(values):
        grpc_client.async_infer(
            "intent_classifier",
            [text_input([value])],
            callback=lambda result, error, index=index: answers.put((index, result, error)),
            outputs=outputs(),
        )
    got = dict((i, (r, e)) for i, r, e in (answers.get(timeout=60) for _ in values))
    assert got[0][1] is None and got[2][1] is None
    assert got[1][1] is not None and "INVALID_ARG" in str(got[1][1].status())


def test_very_long_text_is_truncated_and_classified(grpc_client) -> None:
    text = "Summarize the following report. " + ("The committee met again and discussed the budget. " * 2000)
    text = text[:100_000]
    assert len(text) == 100_000
    intents, probs, difficulty = classify(grpc_client, [text])
    assert intents[0] in INTENTS and probs.shape == (1, 9) and 0.0 <= float(difficulty[0, 0]) <= 1.0
