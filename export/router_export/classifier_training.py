"""Training the intent classifier (`router-train-classifier train`): optionally a LoRA adapter on the encoder
(classifier_lora, jointly with an intent head), then the heads on the (adapted) encoder's embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from llm_router.classifier import INTENTS

from router_export import intent_data
from router_export.classifier_data import DifficultyData, difficulty_data, intent_labels, intent_rows
from router_export.classifier_encoder import DIFFICULTY_LAYERS, cached_embeddings
from router_export.classifier_evaluation import evaluate, finish_report
from router_export.classifier_heads import ADAPTER, WEIGHTS, Heads
from router_export.classifier_lora import adapter_digest

CLASS_WEIGHT_POWER = 0.5


def fit_intent_head(x: np.ndarray, y: np.ndarray, kind: str = "logreg", seed: int = 0) -> list:
    """Intent layers from training embeddings; class-balanced."""
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=20.0, max_iter=3000, class_weight="balanced")
        clf.fit(x, y)
        w = np.zeros((x.shape[1], len(INTENTS)), dtype=np.float32)
        b = np.full(len(INTENTS), -1e4, dtype=np.float32)  # classes absent from training never win
        w[:, clf.classes_] = clf.coef_.T
        b[clf.classes_] = clf.intercept_
        return [(w, b)]
    if kind == "mlp":
        return fit_mlp(x, y, seed=seed)
    raise ValueError(f"unknown head kind {kind!r}")


def class_weights(y: np.ndarray) -> np.ndarray:
    """Inverse-frequency class weights, square-rooted: full weights over-predict the thin classes (planning)."""
    counts = np.bincount(y, minlength=len(INTENTS)).astype(np.float32)
    balanced = counts.sum() / np.maximum(counts, 1) / len(INTENTS)
    return np.where(counts > 0, balanced**CLASS_WEIGHT_POWER, 0.0).astype(np.float32)


def fit_mlp(x: np.ndarray, y: np.ndarray, hidden: int = 256, epochs: int = 60, seed: int = 0) -> list:
    """One hidden layer, dropout, class-weighted cross-entropy, AdamW (small enough to train in seconds)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    weights = torch.from_numpy(class_weights(y))
    net = nn.Sequential(
        nn.Dropout(0.1), nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, len(INTENTS))
    )
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    loss_fn = nn.CrossEntropyLoss(weight=weights.float(), label_smoothing=0.05)
    with torch.enable_grad():
        for _ in range(epochs):
            net.train()
            for idx in torch.randperm(len(xt)).split(128):
                opt.zero_grad()
                loss_fn(net(xt[idx]), yt[idx]).backward()
                opt.step()
    net.eval()
    l1, l2 = net[1], net[4]
    return [
        (l1.weight.detach().numpy().T.copy(), l1.bias.detach().numpy().copy()),
        (l2.weight.detach().numpy().T.copy(), l2.bias.detach().numpy().copy()),
    ]


DIFFICULTY_C = 3.0  # inverse L2 strength of the difficulty head (grouped 5-fold CV on the training rows: 0.3-3)


def fit_difficulty_head(
    x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None, c: float = DIFFICULTY_C
) -> tuple[np.ndarray, np.ndarray]:
    """Logistic difficulty head (W [D, 1], b [1]); y = 1 where the small model was wrong; `sample_weight`: per-row
    weights (difficulty_data's source weights)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=3000)
    clf.fit(x, y.astype(int), sample_weight=sample_weight)
    return clf.coef_.T.astype(np.float32), clf.intercept_.astype(np.float32)


def difficulty_features(data_dir: Path, adapter: Path = ADAPTER) -> tuple[DifficultyData, np.ndarray, np.ndarray]:
    """The difficulty outcomes and their train / held-out embeddings on the encoder with `adapter`."""
    diff = difficulty_data(data_dir)
    dx_train = cached_embeddings(diff.train_texts, "difficulty-train", DIFFICULTY_LAYERS, adapter=adapter)
    dx_test = cached_embeddings(diff.test_texts, "difficulty-test", DIFFICULTY_LAYERS, adapter=adapter)
    return diff, dx_train, dx_test


def train_difficulty(data_dir: Path, heads_path: Path = WEIGHTS, out: Path | None = None) -> dict:
    """Refit only the difficulty head on the current encoder features (the committed adapter, if any), keep the
    intent head of `heads_path`, write the heads to `out` (default: artifacts/classifier/intent_heads_difficulty.npz,
    never the committed weights unless asked) and print the difficulty figures."""
    from router_export.classifier_evaluation import cascades_difficulty, difficulty_report, print_difficulty
    from router_export.classifier_heads import ARTIFACTS

    diff, dx_train, dx_test = difficulty_features(data_dir)
    heads = Heads.load(heads_path)
    heads.difficulty = fit_difficulty_head(dx_train, diff.train_y, diff.train_weights)
    out = out or ARTIFACTS / "intent_heads_difficulty.npz"
    heads.save(out)
    report = {"difficulty": difficulty_report(diff, heads.difficulty_prob(dx_test).reshape(-1))}
    cascades = cascades_difficulty(data_dir, heads)
    if cascades is not None:
        report["difficulty_llama1b_cascades"] = cascades
    print(f"wrote {out}")
    print_difficulty(report)
    return report


def train(data_dir: Path, kind: str, out: Path = WEIGHTS, lora: str = "keep", adapter: Path = ADAPTER) -> dict:
    """Dataset -> [LoRA adapter] -> embeddings -> heads (saved to `out`) -> evaluation (real prompts, held-out).

    lora: "train" fine-tunes a new adapter (saved to `adapter`), "keep" fits the heads on the encoder with the
    existing adapter (frozen encoder when there is none), "none" removes the adapter and uses the frozen encoder.
    """
    train_rows, test_rows = intent_rows(data_dir)
    if lora == "train":
        from router_export.classifier_lora import fine_tune_adapter

        fine_tune_adapter(train_rows, test_rows, adapter)
    elif lora == "none" and adapter.exists():
        adapter.unlink()  # the heads below fit the frozen encoder; a stale adapter would not match them
        print(f"removed {adapter}: the frozen encoder is used")
    elif lora not in ("keep", "none"):
        raise ValueError(f"unknown lora mode {lora!r}")
    x_train = cached_embeddings([r.prompt for r in train_rows], "intent-train", adapter=adapter)
    x_test = cached_embeddings([r.prompt for r in test_rows], "intent-test", adapter=adapter)
    diff, dx_train, dx_test = difficulty_features(data_dir, adapter)
    heads = Heads(
        fit_intent_head(x_train, intent_labels(train_rows), kind),
        fit_difficulty_head(dx_train, diff.train_y, diff.train_weights),
        adapter=adapter_digest(adapter),
    )
    heads.save(out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB)")
    eval_x = cached_embeddings([r.prompt for r in intent_data.eval_rows()], "intent-eval-real", adapter=adapter)
    report = evaluate(test_rows, x_test, heads, diff, dx_test, eval_x=eval_x)
    report["head"] = kind
    report["encoder_adapter"] = heads.adapter or None
    return finish_report(report, data_dir, heads, adapter)
