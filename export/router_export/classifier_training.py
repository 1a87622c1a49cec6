"""Training the intent classifier (`router-train-classifier train`): optionally a LoRA adapter on the encoder
(classifier_lora, jointly with an intent head), then the heads on the (adapted) encoder's embeddings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from llm_router.classifier import INTENTS

from router_export import intent_data
from router_export.classifier_data import DifficultyData, difficulty_data, intent_labels, intent_rows
from router_export.classifier_encoder import DIFFICULTY_LAYERS, cached_embeddings
from router_export.classifier_evaluation import evaluate, finish_report
from router_export.classifier_heads import ADAPTER, WEIGHTS, Heads, intent_logits
from router_export.classifier_lora import adapter_digest

CLASS_WEIGHT_POWER = 0.5


# the MLP intent head's training, chosen by `router-train-classifier select-head` (grouped 5-fold cross-validation on
# the training rows only, never on the held-out split or the real-prompt set): docs/classifier.md
MLP_EPOCHS = 200
MLP_SEEDS = 3  # members trained from different seeds, logits averaged: less seed-to-seed spread


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
        return fit_mlp_ensemble(x, y, seeds=range(seed, seed + MLP_SEEDS))
    raise ValueError(f"unknown head kind {kind!r}")


def class_weights(y: np.ndarray, power: float = CLASS_WEIGHT_POWER) -> np.ndarray:
    """Inverse-frequency class weights to `power` (square root by default: full weights over-predict the thin
    classes, planning)."""
    counts = np.bincount(y, minlength=len(INTENTS)).astype(np.float32)
    balanced = counts.sum() / np.maximum(counts, 1) / len(INTENTS)
    return np.where(counts > 0, balanced**power, 0.0).astype(np.float32)


def fit_mlp(
    x: np.ndarray,
    y: np.ndarray,
    hidden: int = 256,
    epochs: int = MLP_EPOCHS,
    seed: int = 0,
    class_weight_power: float = CLASS_WEIGHT_POWER,
) -> list:
    """One hidden layer, dropout, class-weighted cross-entropy, AdamW (small enough to train in seconds)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    weights = torch.from_numpy(class_weights(y, class_weight_power))
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


def merge_mlps(members: list[list]) -> list:
    """One-hidden-layer MLPs -> one MLP whose logits are their mean: hidden layers side by side, output weights
    stacked and divided by the count (the same two-layer graph, only wider)."""
    n = len(members)
    w1 = np.concatenate([m[0][0] for m in members], axis=1)
    b1 = np.concatenate([m[0][1] for m in members])
    w2 = np.concatenate([m[1][0] for m in members], axis=0) / n
    b2 = np.mean([m[1][1] for m in members], axis=0)
    return [(w1.astype(np.float32), b1.astype(np.float32)), (w2.astype(np.float32), b2.astype(np.float32))]


def fit_mlp_ensemble(x: np.ndarray, y: np.ndarray, seeds: Iterable[int] = range(MLP_SEEDS), **settings) -> list:
    """`fit_mlp` once per seed, merged into one MLP (`merge_mlps`)."""
    return merge_mlps([fit_mlp(x, y, seed=seed, **settings) for seed in seeds])


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


SELECTION_EPOCHS = (60, 120, 200, 300)
SELECTION_POWERS = (0.5, 0.75)


def select_head(
    data_dir: Path,
    epochs: Sequence[int] = SELECTION_EPOCHS,
    powers: Sequence[float] = SELECTION_POWERS,
    folds: int = 5,
    adapter: Path = ADAPTER,
) -> dict:
    """Grouped k-fold cross-validation of the MLP intent head's settings (epochs x class-weight power) on the
    TRAINING rows only (whole phrasing groups per fold, as the held-out split): prints macro-F1 per setting, writes
    artifacts/classifier/head_selection.json and returns the best setting. The held-out split and the real-prompt
    set are not read, so their figures stay honest measurements of the chosen setting."""
    import json

    from sklearn.metrics import f1_score
    from sklearn.model_selection import GroupKFold

    from router_export.classifier_heads import ARTIFACTS

    train_rows, _ = intent_rows(data_dir)
    x = cached_embeddings([r.prompt for r in train_rows], "intent-train", adapter=adapter)
    y = intent_labels(train_rows)
    splits = list(GroupKFold(folds).split(x, y, [r.group for r in train_rows]))
    results = []
    for n_epochs in epochs:
        for power in powers:
            scores = []
            for fit_idx, check_idx in splits:
                layers = fit_mlp(x[fit_idx], y[fit_idx], epochs=n_epochs, class_weight_power=power)
                predicted = intent_logits(layers, x[check_idx]).argmax(1)
                scores.append(float(f1_score(y[check_idx], predicted, average="macro")))
            results.append(
                {"epochs": n_epochs, "class_weight_power": power, "macro_f1": float(np.mean(scores)), "folds": scores}
            )
            print(
                f"epochs {n_epochs:4d}  class-weight power {power:.2f}  macro-F1 {np.mean(scores):.4f}  "
                f"(folds {' '.join(f'{s:.3f}' for s in scores)})",
                flush=True,
            )
    best = max(results, key=lambda r: r["macro_f1"])
    report = {"folds": folds, "rows": len(train_rows), "results": results, "best": best}
    out = ARTIFACTS / "head_selection.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"best: {best['epochs']} epochs, class-weight power {best['class_weight_power']} (wrote {out})")
    return report
