"""The intent encoder's LoRA adapter: saved and loaded as .npz, merged into the encoder's weights (same outputs as the
peft model), part of the build stamp, and the build without an adapter (frozen encoder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from llm_router.classifier import INTENTS
from llm_router.classifier.tokenization import IntentTokenizer
from router_export.classifier_encoder import ENCODER_LAYERS, FEATURE_LAYERS, build_torch_model, load_encoder
from router_export.classifier_heads import ADAPTER, WEIGHTS, Heads
from router_export.classifier_lora import (
    LoraSpec,
    adapter_digest,
    add_adapter,
    check_heads_fit,
    load_adapter,
    merge_adapter,
    read_adapter,
    save_adapter,
)
from router_export.classifier_onnx import (
    ENCODER_INT8_MODEL,
    ENCODER_MODEL,
    LABELS_FILE,
    build_for_repository,
    build_stamp,
    onnx_stamp,
)

REPO = Path(__file__).resolve().parents[2] / "model_repository"
PROMPTS = ["Summarize this: the council voted to expand the bus network.", "hi", "Plan a 3-day trip to Rome"]


def random_adapter(path: Path, seed: int = 0, spec: LoraSpec | None = None) -> LoraSpec:
    """An adapter with random lora_A and lora_B (a fresh one has lora_B = 0: an identity that tests nothing)."""
    import torch

    spec = spec or LoraSpec(r=4, alpha=8)
    model = add_adapter(load_encoder(adapter=None), spec)
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.05
    save_adapter(model, spec, path, ENCODER_LAYERS)
    return spec


def embed(encoder) -> np.ndarray:
    import torch

    batch = IntentTokenizer().encode(PROMPTS)
    model = build_torch_model(None, encoder=encoder)
    with torch.no_grad():
        return model.embed(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)).numpy()


def test_adapter_round_trip_keeps_settings_and_tensors(tmp_path) -> None:
    from peft import get_peft_model_state_dict

    path = tmp_path / "lora.npz"
    spec = random_adapter(path)
    read_spec, layers, tensors = read_adapter(path)
    assert read_spec == spec and layers == ENCODER_LAYERS
    assert len(tensors) == 2 * 6 * len(spec.layers)  # lora_A and lora_B of 6 linears per adapted layer
    loaded = get_peft_model_state_dict(load_adapter(load_encoder(adapter=None), path))
    assert set(loaded) == set(tensors)
    for name, value in tensors.items():
        np.testing.assert_array_equal(loaded[name].numpy(), value)
    save_adapter(load_adapter(load_encoder(adapter=None), path), spec, tmp_path / "again.npz", ENCODER_LAYERS)
    _, _, again = read_adapter(tmp_path / "again.npz")
    assert all(np.array_equal(again[k], v) for k, v in tensors.items())


def test_merged_encoder_computes_what_the_peft_model_computes(tmp_path) -> None:
    path = tmp_path / "lora.npz"
    random_adapter(path)
    peft_out = embed(load_adapter(load_encoder(adapter=None), path))
    merged = merge_adapter(load_encoder(adapter=None), path)
    assert not any("lora_" in name for name, _ in merged.named_parameters())  # plain BertModel: no extra ops
    np.testing.assert_allclose(embed(merged), peft_out, atol=1e-5)
    np.testing.assert_allclose(embed(load_encoder(adapter=path)), peft_out, atol=1e-5)
    assert np.abs(embed(load_encoder(adapter=None)) - peft_out).max() > 1e-3  # the adapter does change the features


def test_fine_tuning_features_from_cached_lower_layers_equal_the_full_encoders(tmp_path) -> None:
    import torch
    from router_export.classifier_lora import LayerCache

    path = tmp_path / "lora.npz"
    spec = random_adapter(path)
    model = load_adapter(load_encoder(adapter=None), path)
    cache = LayerCache(load_encoder(adapter=None), PROMPTS, min(spec.layers))  # frozen layers below the adapter
    with torch.no_grad():
        cached = cache.features(model.base_model.model, np.arange(len(PROMPTS)), FEATURE_LAYERS).numpy()
    np.testing.assert_allclose(cached, embed(model), atol=1e-5)


def test_adapter_for_another_layer_count_is_refused(tmp_path) -> None:
    from llm_router.classifier.tokenization import encoder_dir
    from transformers import AutoModel

    path = tmp_path / "lora.npz"
    random_adapter(path)

    full = AutoModel.from_pretrained(str(encoder_dir()), local_files_only=True)
    with pytest.raises(ValueError, match=f"adapts {ENCODER_LAYERS} encoder layers"):
        load_adapter(full, path)


def test_build_stamp_and_heads_check_follow_the_adapter(tmp_path) -> None:
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    random_adapter(first, seed=1)
    random_adapter(second, seed=2)
    stamps = {build_stamp(WEIGHTS, None), build_stamp(WEIGHTS, first), build_stamp(WEIGHTS, second)}
    assert len(stamps) == 3
    assert build_stamp(WEIGHTS, tmp_path / "missing.npz") == build_stamp(WEIGHTS, None)
    assert adapter_digest(None) == "" and adapter_digest(first) != adapter_digest(second)
    check_heads_fit(adapter_digest(first), first, WEIGHTS)
    with pytest.raises(ValueError, match="refit the heads"):
        check_heads_fit(adapter_digest(first), second, WEIGHTS)
    with pytest.raises(ValueError, match="missing"):
        check_heads_fit(adapter_digest(first), None, WEIGHTS)


def test_committed_heads_fit_the_committed_encoder() -> None:
    heads = Heads.load()
    assert heads.adapter == adapter_digest(ADAPTER)
    if ADAPTER.exists():
        assert ADAPTER.stat().st_size < 5 * 1024 * 1024
        _, layers, _ = read_adapter(ADAPTER)
        assert layers == ENCODER_LAYERS


def frozen_heads(path: Path, seed: int = 0) -> Heads:
    """Random heads for the frozen encoder (adapter digest "")."""
    rng = np.random.default_rng(seed)
    dim = 384 * len(FEATURE_LAYERS)
    heads = Heads(
        [(rng.normal(size=(dim, 9)).astype(np.float32), np.zeros(9, np.float32))],
        (rng.normal(size=(dim, 1)).astype(np.float32) * 0.1, np.zeros(1, np.float32)),
    )
    heads.save(path)
    return heads


def labelled_repo(root: Path) -> Path:
    for model in (ENCODER_MODEL, ENCODER_INT8_MODEL):
        (root / model / "1").mkdir(parents=True)
        shutil.copy(REPO / model / LABELS_FILE, root / model / LABELS_FILE)
    return root


def test_build_without_adapter_exports_the_frozen_encoder(tmp_path) -> None:
    import onnxruntime as ort
    import torch

    weights = tmp_path / "heads.npz"
    heads = frozen_heads(weights)
    repo = labelled_repo(tmp_path / "repo")
    adapter = tmp_path / "lora.npz"
    random_adapter(adapter)
    with pytest.raises(ValueError, match="refit the heads"):  # frozen-encoder heads on an adapted encoder
        build_for_repository(repo, weights=weights, adapter=adapter)
    build_for_repository(repo, weights=weights, adapter=None)
    fp32 = repo / ENCODER_MODEL / "1" / "model.onnx"
    assert onnx_stamp(fp32) == build_stamp(weights, None) == onnx_stamp(repo / ENCODER_INT8_MODEL / "1" / "model.onnx")
    batch = IntentTokenizer().encode(PROMPTS)
    session = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    p_onnx, _, intent = session.run(None, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
    with torch.no_grad():
        p_torch, _ = build_torch_model(heads, adapter=None)(
            torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)
        )
    np.testing.assert_allclose(p_onnx, p_torch.numpy(), atol=1e-4)
    assert [str(v) for v in intent.reshape(-1)] == [INTENTS[i] for i in p_onnx.argmax(axis=1)]


def test_train_command_takes_a_lora_mode() -> None:
    from router_export.classifier import build_parser

    parser = build_parser()
    assert parser.parse_args(["train"]).lora == "keep"  # refitting the heads never retrains the adapter unasked
    assert parser.parse_args(["train", "--lora", "train"]).lora == "train"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--lora", "sometimes"])
