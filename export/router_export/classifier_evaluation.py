"""Evaluating the intent classifier on the hand-labelled real-prompt set (data/eval_real_prompts.jsonl, never
trained on) and on held-out templates: accuracy, macro-F1, per-class F1, confusion matrices (PNG), accuracy by
source; difficulty AUROC (difficulty = P(the small model answers wrong)) on held-out real outcomes, for the heads in
numpy (`router-train-classifier evaluate`) and for the exported ONNX models (`evaluate-onnx`).
Reports go to artifacts/classifier/."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from llm_router.classifier import INTENTS
from llm_router.classifier.tokenization import IntentTokenizer

from router_export import intent_data
from router_export.classifier_data import (
    ROUTELLM,
    TIER_SMALL,
    DifficultyData,
    cascades_small_model_outcomes,
    difficulty_data,
    intent_labels,
    intent_rows,
)
from router_export.classifier_encoder import DIFFICULTY_LAYERS, cached_embeddings
from router_export.classifier_heads import ADAPTER, ARTIFACTS, WEIGHTS, Heads
from router_export.classifier_lora import check_heads_fit
from router_export.classifier_onnx import ENCODER_INT8_MODEL, ENCODER_MODEL


def intent_report(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """n, macro-F1 over the classes present, accuracy, per-class F1 and support."""
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


def _auroc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else None


def _within_benchmark_auroc(y: np.ndarray, p: np.ndarray, bench: np.ndarray) -> float | None:
    """AUROC within each benchmark (template, family) that has both outcomes, averaged weighted by rows: how well
    difficulty ranks prompts of one task, apart from telling hard tasks from easy ones."""
    aucs, weights = [], []
    for b in sorted(set(bench.tolist())):
        auc = _auroc(y[bench == b], p[bench == b])
        if auc is not None:
            aucs.append(auc)
            weights.append(int((bench == b).sum()))
    return float(np.average(aucs, weights=weights)) if aucs else None


def _difficulty_subset(diff: DifficultyData, p: np.ndarray, mask: np.ndarray) -> dict:
    """n, AUROC, share wrong, the within-benchmark AUROC and the benchmark mix of the held-out rows in `mask`."""
    y = diff.test_y[mask]
    bench = np.array(diff.test_benchmark)[mask]
    return {
        "n": int(mask.sum()),
        "roc_auc": _auroc(y, p[mask]),
        "roc_auc_within_benchmark": _within_benchmark_auroc(y, p[mask], bench),
        "base_rate_wrong": float(y.mean()) if len(y) else None,
        "mix": dict(Counter(bench.tolist()).most_common()),
    }


def difficulty_report(diff: DifficultyData, p: np.ndarray) -> dict:
    """AUROC of difficulty at telling wrong answers (y = 1) from right ones: overall, per benchmark, and per source
    (`tier_small`: the real tier_small's held-out graded prompts, also NQ-open only and label tasks only;
    `routellm`: Mixtral-8x7B on MMLU/GSM8K)."""
    bench = np.array(diff.test_benchmark)
    report: dict = {
        "n": int(len(p)),
        "roc_auc": _auroc(diff.test_y, p),
        **{
            f"roc_auc_{b}": _auroc(diff.test_y[bench == b], p[bench == b])
            for b in sorted(set(bench.tolist()))
            if len(set(diff.test_y[bench == b])) == 2
        },
        "base_rate_wrong": float(diff.test_y.mean()),
    }
    if diff.test_source:
        for source in (ROUTELLM, TIER_SMALL):
            if diff.test_mask(source).any():
                report[source] = _difficulty_subset(diff, p, diff.test_mask(source))
        if diff.test_mask(TIER_SMALL).any():
            small = report[TIER_SMALL]
            nq_open = _difficulty_subset(diff, p, diff.test_mask(TIER_SMALL, "nq_open"))
            small["nq_open"] = {k: v for k, v in nq_open.items() if k != "mix"}
            small["labels"] = _difficulty_subset(diff, p, diff.test_mask(TIER_SMALL, labels=True))
    return report


def print_difficulty(report: dict) -> None:
    """The difficulty figures: tier_small held-out (all, NQ-open, labels), RouteLLM held-out, llm_cascades llama1b."""

    def fmt(block: dict | None) -> str:
        if not block or not block.get("n"):
            return "n=0"
        auc = "n/a (one class)" if block.get("roc_auc") is None else f"{block['roc_auc']:.3f}"
        text = f"n={block['n']} AUROC={auc} wrong={block['base_rate_wrong']:.2f}"
        if block.get("roc_auc_within_benchmark") is not None:
            text += f" (within benchmark {block['roc_auc_within_benchmark']:.3f})"
        return text

    diff = report.get("difficulty", {})
    if TIER_SMALL in diff:
        small = diff[TIER_SMALL]
        print(f"difficulty, tier_small held-out graded prompts: {fmt(small)}")
        print(f"  NQ-open only: {fmt(small['nq_open'])}; label tasks only: {fmt(small['labels'])}")
        print(f"  mix: {json.dumps(small['mix'])}")
    if ROUTELLM in diff:
        print(f"difficulty, RouteLLM held-out (Mixtral-8x7B, MMLU/GSM8K): {fmt(diff[ROUTELLM])}")
    if "difficulty_llama1b_cascades" in report:
        print(f"difficulty, llm_cascades llama3.2-1b (measured only): {fmt(report['difficulty_llama1b_cascades'])}")


def real_prompt_report(probs: np.ndarray, out_dir: Path = ARTIFACTS, name: str = "real") -> dict:
    """Metrics on the hand-labelled real-prompt evaluation set (`probs` in its row order) + confusion PNG."""
    rows = intent_data.eval_rows()
    y = intent_labels(rows)
    plot_confusion(y, probs, out_dir / f"confusion_matrix_{name}.png", f"intent, {len(rows)} real prompts ({name})")
    report = intent_report(y, probs)
    report["errors"] = [
        {"id": r.group, "intent": r.intent, "predicted": INTENTS[int(k)], "prompt": r.prompt[:120]}
        for r, k in zip(rows, probs.argmax(axis=1), strict=True)
        if INTENTS[int(k)] != r.intent
    ]
    return report


def evaluate(
    rows: list[intent_data.Row],
    x: np.ndarray,
    heads: Heads,
    diff: DifficultyData | None,
    diff_x: np.ndarray | None,
    out_dir: Path = ARTIFACTS,
    eval_x: np.ndarray | None = None,
) -> dict:
    """Real-prompt set (`eval_x`) and held-out intent metrics, difficulty AUROC; writes report + PNGs."""
    y = intent_labels(rows)
    probs = heads.intent_probs(x)
    hand = np.array([r.source == "handwritten" for r in rows])
    t0 = np.array([r.source == "t0" for r in rows])
    report = {
        "intent_heldout": intent_report(y, probs),
        "intent_heldout_real": intent_report(y[~hand], probs[~hand]),
        "intent_heldout_t0": intent_report(y[t0], probs[t0]),  # held-out T0 templates only
    }
    if eval_x is not None:
        report["intent_real_prompts"] = real_prompt_report(heads.intent_probs(eval_x), out_dir)
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
        report["difficulty"] = difficulty_report(diff, heads.difficulty_prob(diff_x).reshape(-1))
    plot_confusion(y, probs, out_dir / "confusion_matrix.png", "intent, held-out templates")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def print_report(report: dict) -> None:
    if "intent_real_prompts" in report:
        real = report["intent_real_prompts"]
        print(f"REAL PROMPTS: n={real['n']} accuracy={real['accuracy']:.4f} macro-F1={real['macro_f1']:.4f}")
        print("  per class:", json.dumps(real["per_class_f1"]))
    main = report["intent_heldout"]
    print(f"held-out intent: n={main['n']} macro-F1={main['macro_f1']:.4f} accuracy={main['accuracy']:.4f}")
    real = report["intent_heldout_real"]
    print(f"held-out intent, real prompts only: n={real['n']} macro-F1={real['macro_f1']:.4f}")
    if "intent_heldout_t0" in report:
        t0 = report["intent_heldout_t0"]
        print(
            f"held-out intent, T0 templates only: n={t0['n']} macro-F1={t0['macro_f1']:.4f} "
            f"accuracy={t0['accuracy']:.4f}"
        )
    print(f"{'intent':<18}{'F1 all':>8}{'F1 real':>9}{'n':>6}")
    for name, f1 in main["per_class_f1"].items():
        print(f"{name:<18}{f1:>8.3f}{real['per_class_f1'].get(name, float('nan')):>9.3f}{main['support'][name]:>6}")
    print("planning:", json.dumps(report["planning"]))
    print("accuracy by source:", json.dumps(report["accuracy_by_source"]))
    print_difficulty(report)


def cascades_difficulty(data_dir: Path, heads: Heads, adapter: Path | None = ADAPTER) -> dict | None:
    """difficulty AUROC on llama3.2-1b's outcomes in llm_cascades_train.csv.gz (measured, never trained on)."""
    if not (data_dir / "outcomes" / "llm_cascades_train.csv.gz").exists():
        return None
    diff = cascades_small_model_outcomes(data_dir)
    x = cached_embeddings(diff.test_texts, "difficulty-cascades", DIFFICULTY_LAYERS, adapter=adapter)
    return difficulty_report(diff, heads.difficulty_prob(x).reshape(-1))


def evaluate_committed(data_dir: Path) -> dict:
    """The committed heads and adapter (PyTorch encoder embeddings): real prompts and held-out rows."""
    _, rows = intent_rows(data_dir)
    diff = difficulty_data(data_dir)
    heads = Heads.load()
    check_heads_fit(heads.adapter, ADAPTER, WEIGHTS)
    report = evaluate(
        rows,
        cached_embeddings([r.prompt for r in rows], "intent-test"),
        heads,
        diff,
        cached_embeddings(diff.test_texts, "difficulty-test", DIFFICULTY_LAYERS),
        eval_x=cached_embeddings([r.prompt for r in intent_data.eval_rows()], "intent-eval-real"),
    )
    return finish_report(report, data_dir, heads)


def finish_report(report: dict, data_dir: Path, heads: Heads, adapter: Path | None = ADAPTER) -> dict:
    """Add the (measure-only) llm_cascades difficulty figures, write artifacts/classifier/report.json, print it."""
    cascades = cascades_difficulty(data_dir, heads, adapter)
    if cascades is not None:
        report["difficulty_llama1b_cascades"] = cascades
    (ARTIFACTS / "report.json").write_text(json.dumps(report, indent=2))
    print_report(report)
    return report


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

    _, rows = intent_rows(data_dir)
    diff = difficulty_data(data_dir)
    y = intent_labels(rows)
    t0 = np.array([r.source == "t0" for r in rows])
    report = {}
    for name in (ENCODER_MODEL, ENCODER_INT8_MODEL):
        path = repo / name / "1" / "model.onnx"
        probs, _ = onnx_predict(path, [r.prompt for r in rows])
        _, difficulty = onnx_predict(path, diff.test_texts)
        real_probs, _ = onnx_predict(path, [r.prompt for r in intent_data.eval_rows()])
        report[name] = {
            "heldout_templates": intent_report(y, probs),
            "heldout_t0_templates": intent_report(y[t0], probs[t0]),
            "real_prompts": real_prompt_report(real_probs, name=name),
            "difficulty_roc_auc": float(roc_auc_score(diff.test_y, difficulty.reshape(-1))),
            "difficulty": difficulty_report(diff, difficulty.reshape(-1)),
        }
        real = report[name]["real_prompts"]
        print(
            f"{name}: real prompts accuracy {real['accuracy']:.4f} macro-F1 {real['macro_f1']:.4f}; held-out "
            f"templates macro-F1 {report[name]['heldout_templates']['macro_f1']:.4f} "
            f"(T0 only {report[name]['heldout_t0_templates']['macro_f1']:.4f}); "
            f"difficulty AUROC {report[name]['difficulty_roc_auc']:.4f}"
        )
        print_difficulty({"difficulty": report[name]["difficulty"]})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "report_onnx.json").write_text(json.dumps(report, indent=2))
    return report
