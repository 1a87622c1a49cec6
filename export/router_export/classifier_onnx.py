"""Exporting the intent classifier to ONNX for Triton: encoder (with the committed LoRA adapter merged into its
weights) + pooling + heads in one graph (FP32), its dynamic INT8 quantisation, and the in-graph label lookup;
`build_for_repository` writes both models (without ../shared) and skips the work when their build stamp is current."""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

from llm_router.classifier import INTENTS, read_labels
from llm_router.classifier.tokenization import HEAD_TOKENS, MAX_TOKENS, IntentTokenizer, encoder_dir

from router_export.classifier_encoder import build_torch_model
from router_export.classifier_heads import ADAPTER, WEIGHTS, Heads
from router_export.classifier_lora import adapter_digest, check_heads_fit

ENCODER_MODEL = "intent_encoder"
ENCODER_INT8_MODEL = "intent_encoder_int8"
LABELS_FILE = "labels.txt"  # in each encoder model's folder; one label per line, in intent_probs order
OPSET = 17
BUILD_VERSION = "5"  # bump when the graph changes so `build` re-exports


def build_stamp(weights: Path = WEIGHTS, adapter: Path | None = ADAPTER) -> str:
    """Hash of what the ONNX models are built from: heads, encoder adapter (if any), encoder weights, build version."""
    digest = hashlib.sha256(BUILD_VERSION.encode())
    digest.update(weights.read_bytes())
    digest.update(f"adapter:{adapter_digest(adapter)}".encode())
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


def export_onnx(path: Path, heads: Heads, adapter: Path | None = ADAPTER) -> None:
    """encoder (adapter merged) + pooling + heads in one graph; int64 inputs with dynamic batch and sequence axes."""
    import torch

    model = build_torch_model(heads, adapter=adapter)
    batch = IntentTokenizer().encode(["export example one", "a second, somewhat longer example prompt"])
    path.parent.mkdir(parents=True, exist_ok=True)
    # tracing notes about transformers' own code: nothing the user can act on
    warnings.filterwarnings("ignore", module=r"(transformers|torch\.onnx)\.")
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


def head_nodes(path: Path) -> list[str]:
    """Names of the heads' linear nodes (`/intent.N/Gemm`, `/difficulty/Gemm` in the torch export)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    names = [n.name for n in model.graph.node if n.name.startswith(("/intent", "/difficulty"))]
    return names + [f"{name}_MatMul" for name in names]  # the quantiser splits each Gemm into MatMul + Add first


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic INT8 quantisation (weights int8, activations quantised at run time) with onnxruntime.

    The heads stay FP32: they are a few hundred kFLOPs next to the encoder's, and the difficulty head's large weights
    amplify the per-tensor activation quantisation error (max |INT8 - FP32| on the real-prompt set 0.10 -> see
    docs/classifier.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" advice targets CNNs, not this encoder
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=head_nodes(source),
        )
    finally:
        root.setLevel(level)


def build_for_repository(
    repo: Path, force: bool = False, weights: Path = WEIGHTS, adapter: Path | None = ADAPTER
) -> None:
    """Write <repo>/intent_encoder/1/model.onnx (FP32) and <repo>/intent_encoder_int8/1/model.onnx (INT8).

    Built from the package's encoder, the committed LoRA adapter merged into it (when the file exists; else the
    frozen encoder) and the committed heads (no ../shared); the `intent` output's labels come from each model's
    labels file (checked against the heads' taxonomy). Skipped when both files carry the current stamp.
    """
    repo = Path(repo)
    fp32 = repo / ENCODER_MODEL / "1" / "model.onnx"
    int8 = repo / ENCODER_INT8_MODEL / "1" / "model.onnx"
    stamp = build_stamp(weights, adapter)
    if not force and onnx_stamp(fp32) == stamp and onnx_stamp(int8) == stamp:
        print(f"intent encoder models are up to date ({stamp})")
        return
    heads = Heads.load(weights)
    if heads.labels != INTENTS:
        raise ValueError(f"{weights} was trained for labels {heads.labels}, expected {INTENTS}")
    check_heads_fit(heads.adapter, adapter, weights)
    labels = {}
    for path in (fp32, int8):
        labels_file = path.parent.parent / LABELS_FILE
        labels[path] = tuple(read_labels(labels_file))
        if labels[path] != heads.labels:
            raise ValueError(f"{labels_file} lists {labels[path]}, the heads were trained for {heads.labels}")
    tmp = fp32.with_suffix(".tmp.onnx")
    tmp8 = int8.with_suffix(".tmp.onnx")
    export_onnx(tmp, heads, adapter)
    quantize_int8(tmp, tmp8)
    for built, target in ((tmp, fp32), (tmp8, int8)):
        finish_graph(built, stamp, labels[target])
        built.replace(target)
    print(f"wrote {fp32} and {int8} ({stamp})")
