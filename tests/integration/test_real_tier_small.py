"""The real tier_small (SmolLM2-135M-Instruct, 4-bit weights, built by `router-build-models`) on a server of its own.

The shared test server serves a tiny stand-in for tier_small (tests/conftest.py); this module checks that the model
`make serve` / `make demo` serve answers questions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import server_options, stream, tensor, text_array
from router_export import real_tiers
from router_launcher.serve import LocalTritonServer
from tokenizers import Tokenizer

pytestmark = pytest.mark.integration

TIER = Path(__file__).resolve().parents[2] / "model_repository" / "tier_small"
QUESTION = "What is the capital of France?"


def tier_inputs(text: str, max_tokens: int, raw: bool | None = None) -> list:
    """A tier request of one prompt (shape [1, 1]: the tier batches)."""
    inputs = [
        tensor("text_input", text_array(text, (1, 1)), "BYTES"),
        tensor("max_tokens", np.array([[max_tokens]], dtype=np.int32), "INT32"),
    ]
    if raw is not None:
        inputs.append(tensor("raw", np.array([[raw]], dtype=np.bool_), "BOOL"))
    return inputs


def answer(url: str, text: str, max_tokens: int = 24, raw: bool | None = None) -> tuple[str, int, int]:
    """(text, input tokens, output tokens) of one greedy request."""
    events = stream(url, "tier_small", tier_inputs(text, max_tokens, raw), timeout_s=120)
    last = events[-1]
    return "".join(e.get("text_output", "") for e in events), last["input_tokens"], last["output_tokens"]


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTritonServer]:
    """A server whose repository is model_repository/tier_small alone (a symlink, as in the test overlay)."""
    stamp_path = TIER / "1" / "model" / "export.json"
    assert stamp_path.exists(), "tier_small is not built: run `make models` (router-build-models)"
    stamp = json.loads(stamp_path.read_text())
    assert Path(stamp["source"]).name == Path(real_tiers.GGUF_MEMBER).name, (
        f"model_repository/tier_small was exported from {stamp['source']}, not SmolLM2: run router-build-models"
    )
    assert stamp["quantize"] == real_tiers.QUANTIZE
    work = tmp_path_factory.mktemp("real_tier_small")
    repo = work / "models"
    repo.mkdir()
    (repo / "tier_small").symlink_to(TIER, target_is_directory=True)
    server = LocalTritonServer(server_options(repo, work, stop_grace_s=15))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_answers_a_question_with_its_chat_template(real_server: LocalTritonServer) -> None:
    text, input_tokens, output_tokens = answer(real_server.grpc_url, QUESTION)
    assert "Paris" in text, text
    assert 0 < output_tokens < 24  # SmolLM2 ends its turn with <|im_end|>
    # the template's system prompt and turn markers are counted
    assert input_tokens > len(Tokenizer.from_file(str(TIER / "1" / "model" / "tokenizer.json")).encode(QUESTION).ids)


def test_completes_raw_text(real_server: LocalTritonServer) -> None:
    """Without the template (raw) the model continues the text as it is: no BOS, no system prompt."""
    prompt = "The capital of France is"
    text, input_tokens, output_tokens = answer(real_server.grpc_url, prompt, max_tokens=8, raw=True)
    tokenizer = Tokenizer.from_file(str(TIER / "1" / "model" / "tokenizer.json"))
    assert input_tokens == len(tokenizer.encode(prompt).ids) == 5
    assert 0 < output_tokens <= 8 and text.strip(), text
