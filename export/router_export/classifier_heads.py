"""The intent classifier's trained heads (numpy), committed with the encoder's small LoRA adapter (classifier_lora).

`Heads` holds the intent head (a softmax layer, or an MLP with ReLU between layers) and the logistic difficulty head;
`intent_probs` / `difficulty_prob` compute what the exported ONNX graph computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from llm_router.classifier import INTENTS
from llm_router.classifier.tokenization import HEAD_TOKENS, MAX_TOKENS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = Path(__file__).resolve().parent / "weights" / "intent_heads.npz"
# the encoder's LoRA adapter (router_export.classifier_lora); without this file the encoder is used frozen
ADAPTER = Path(__file__).resolve().parent / "weights" / "intent_encoder_lora.npz"
ARTIFACTS = PROJECT_ROOT / "artifacts" / "classifier"


@dataclass
class Heads:
    """Head weights: intent layers (ReLU between, softmax at the end) and a logistic difficulty head."""

    intent_layers: list[tuple[np.ndarray, np.ndarray]]  # (W [in, out], b [out])
    difficulty: tuple[np.ndarray, np.ndarray]  # (W [384, 1], b [1])
    labels: tuple[str, ...] = INTENTS
    adapter: str = ""  # digest of the encoder adapter the heads were fitted on (classifier_lora); "" = frozen

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {"labels": np.array(self.labels)}
        for i, (w, b) in enumerate(self.intent_layers):
            arrays[f"intent_w{i}"], arrays[f"intent_b{i}"] = w.astype(np.float32), b.astype(np.float32)
        arrays["difficulty_w"], arrays["difficulty_b"] = (a.astype(np.float32) for a in self.difficulty)
        arrays["max_tokens"], arrays["head_tokens"] = np.array(MAX_TOKENS), np.array(HEAD_TOKENS)
        arrays["encoder_adapter"] = np.array(self.adapter)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: Path = WEIGHTS) -> Heads:
        with np.load(path) as data:
            layers = []
            while f"intent_w{len(layers)}" in data:
                i = len(layers)
                layers.append((data[f"intent_w{i}"], data[f"intent_b{i}"]))
            labels = tuple(str(x) for x in data["labels"])
            adapter = str(data["encoder_adapter"]) if "encoder_adapter" in data else ""
            return cls(layers, (data["difficulty_w"], data["difficulty_b"]), labels, adapter)

    def intent_probs(self, embeddings: np.ndarray) -> np.ndarray:
        """Softmax of the intent head in numpy (the same computation as the ONNX graph)."""
        h = intent_logits(self.intent_layers, embeddings)
        h = h - h.max(axis=1, keepdims=True)
        e = np.exp(h)
        return e / e.sum(axis=1, keepdims=True)

    def difficulty_prob(self, embeddings: np.ndarray) -> np.ndarray:
        """Sigmoid of the difficulty head (it reads the first `W.shape[0]` feature columns)."""
        w, b = self.difficulty
        return 1 / (1 + np.exp(-(embeddings[:, : w.shape[0]].astype(np.float32) @ w + b)))


def intent_logits(layers: list[tuple[np.ndarray, np.ndarray]], embeddings: np.ndarray) -> np.ndarray:
    """The intent layers' output before the softmax (ReLU between layers)."""
    h = embeddings.astype(np.float32)
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    return h
