"""The intent head's training helpers (pure numpy / small torch fits; no encoder, no ../shared)."""

from __future__ import annotations

import numpy as np
from llm_router.classifier import INTENTS
from router_export.classifier_heads import intent_logits
from router_export.classifier_training import class_weights, fit_mlp, fit_mlp_ensemble, merge_mlps


def random_mlp(rng: np.random.Generator, hidden: int) -> list:
    return [
        (rng.normal(size=(6, hidden)), rng.normal(size=hidden)),
        (rng.normal(size=(hidden, len(INTENTS))), rng.normal(size=len(INTENTS))),
    ]


def test_merged_mlp_logits_are_the_mean_of_its_members() -> None:
    rng = np.random.default_rng(0)
    members = [random_mlp(rng, hidden) for hidden in (4, 4, 7)]
    x = rng.normal(size=(10, 6))
    merged = merge_mlps(members)
    assert merged[0][0].shape == (6, 15) and merged[1][0].shape == (15, len(INTENTS))
    expected = np.mean([intent_logits(m, x) for m in members], axis=0)
    np.testing.assert_allclose(intent_logits(merged, x), expected, rtol=1e-4, atol=1e-4)


def test_class_weight_power_softens_inverse_frequency() -> None:
    y = np.array([0] * 80 + [1] * 20)
    full, root = class_weights(y, power=1.0), class_weights(y, power=0.5)
    assert full[1] / full[0] == np.float32(4.0)
    np.testing.assert_allclose(root[1] / root[0], 2.0, rtol=1e-5)
    assert full[2] == 0.0  # a class absent from training gets no weight


def test_ensemble_learns_a_separable_toy_task() -> None:
    rng = np.random.default_rng(1)
    centers = rng.normal(scale=3.0, size=(3, 6)).astype(np.float32)
    y = np.repeat(np.arange(3), 40)
    x = (centers[y] + rng.normal(size=(len(y), 6))).astype(np.float32)
    layers = fit_mlp_ensemble(x, y, seeds=range(2), epochs=300, hidden=8)
    assert layers[0][0].shape == (6, 16)
    assert (intent_logits(layers, x).argmax(1) == y).mean() > 0.95
    single = fit_mlp(x, y, epochs=300, hidden=8, seed=0)
    assert not np.allclose(single[0][0], layers[0][0][:, 8:])  # the members differ by seed


def test_select_head_cross_validates_on_training_rows_only(monkeypatch, tmp_path) -> None:
    import json

    from router_export import classifier_heads, classifier_training
    from router_export.intent_data import Row

    rng = np.random.default_rng(2)
    centers = rng.normal(scale=3.0, size=(3, 6)).astype(np.float32)
    train = [Row(f"p{i}", INTENTS[i % 3], "handwritten", f"g{i % 10}", "train") for i in range(90)]
    held_out = [Row("never read", INTENTS[0], "handwritten", "h", "test")]
    features = {r.prompt: centers[i % 3] + rng.normal(size=6).astype(np.float32) for i, r in enumerate(train)}

    def embeddings(texts, name, adapter=None):
        assert "never read" not in texts  # the held-out split plays no part in the choice
        return np.stack([features[t] for t in texts])

    monkeypatch.setattr(classifier_training, "intent_rows", lambda data_dir: (train, held_out))
    monkeypatch.setattr(classifier_training, "cached_embeddings", embeddings)
    monkeypatch.setattr(classifier_heads, "ARTIFACTS", tmp_path)
    report = classifier_training.select_head(tmp_path, epochs=(1, 100), powers=(0.5,), folds=3)
    assert [r["epochs"] for r in report["results"]] == [1, 100]
    assert report["best"]["epochs"] == 100 and report["best"]["macro_f1"] > 0.9
    assert json.loads((tmp_path / "head_selection.json").read_text())["best"] == report["best"]
