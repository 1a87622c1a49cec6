"""Training the intent classifier's heads on frozen encoder embeddings (`router-train-classifier train`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from llm_router.classifier import INTENTS

from router_export import intent_data
from router_export.classifier_data import difficulty_data, intent_labels, intent_rows
from router_export.classifier_encoder import DIFFICULTY_LAYERS, cached_embeddings
from router_export.classifier_evaluation import evaluate, finish_report
from router_export.classifier_heads import WEIGHTS, Heads

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


def fit_mlp(x: np.ndarray, y: np.ndarray, hidden: int = 256, epochs: int = 60, seed: int = 0) -> list:
    """One hidden layer, dropout, class-weighted cross-entropy, AdamW (small enough to train in seconds)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    counts = np.bincount(y, minlength=len(INTENTS)).astype(np.float32)
    # inverse-frequency class weights, square-rooted: full weights over-predict the thin classes (planning)
    balanced = counts.sum() / np.maximum(counts, 1) / len(INTENTS)
    weights = torch.tensor(np.where(counts > 0, balanced**CLASS_WEIGHT_POWER, 0.0))
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


def fit_difficulty_head(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=3000)
    clf.fit(x, y.astype(int))
    return clf.coef_.T.astype(np.float32), clf.intercept_.astype(np.float32)


def train(data_dir: Path, kind: str, out: Path = WEIGHTS) -> dict:
    """Dataset -> embeddings -> heads (saved to `out`) -> evaluation (real prompts, held-out; artifacts/)."""
    train_rows, test_rows = intent_rows(data_dir)
    x_train = cached_embeddings([r.prompt for r in train_rows], "intent-train")
    x_test = cached_embeddings([r.prompt for r in test_rows], "intent-test")
    diff = difficulty_data(data_dir)
    dx_train = cached_embeddings(diff.train_texts, "difficulty-train", DIFFICULTY_LAYERS)
    dx_test = cached_embeddings(diff.test_texts, "difficulty-test", DIFFICULTY_LAYERS)
    heads = Heads(
        fit_intent_head(x_train, intent_labels(train_rows), kind), fit_difficulty_head(dx_train, diff.train_y)
    )
    heads.save(out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB)")
    eval_x = cached_embeddings([r.prompt for r in intent_data.eval_rows()], "intent-eval-real")
    report = evaluate(test_rows, x_test, heads, diff, dx_test, eval_x=eval_x)
    report["head"] = kind
    return finish_report(report, data_dir, heads)
