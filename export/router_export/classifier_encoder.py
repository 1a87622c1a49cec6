"""The intent classifier's encoder in PyTorch: the package's all-MiniLM-L6-v2, cut to the layers the heads read,
with the committed LoRA adapter merged into its weights when there is one (classifier_lora), mean pooling and L2
normalisation; embeddings for training (cached under artifacts/) and the torch model that is exported to ONNX."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from llm_router.classifier.tokenization import HEAD_TOKENS, MAX_TOKENS, IntentTokenizer, encoder_dir

from router_export.classifier_heads import ADAPTER, ARTIFACTS, Heads

EMBED_DIM = 384  # one layer's pooled embedding
# The heads read the mean-pooled, L2-normalised outputs of encoder layers 3 and 2, concatenated; layers 4-6 are
# cut from the exported graph. Middle layers keep more of the instruction's wording ("summarize", "rewrite",
# "which category") than the similarity-tuned last layer. Measured on held-out templates (MLP head, mean of two
# seeds): last layer only 0.81 macro-F1, layers (6, 4, 2) 0.859, layers (3, 2) 0.861 - at half the encoder cost.
ENCODER_LAYERS = 3
FEATURE_LAYERS: tuple[int, ...] = (3, 2)
DIFFICULTY_LAYERS: tuple[int, ...] = FEATURE_LAYERS


def load_encoder(adapter: Path | None = ADAPTER):
    """The package's encoder (transformers AutoModel from the local folder; no hub access), cut to ENCODER_LAYERS,
    with the LoRA adapter file `adapter` merged into its weights when that file exists (None: frozen encoder)."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(encoder_dir()), local_files_only=True)
    if ENCODER_LAYERS < model.config.num_hidden_layers:  # only the layers the heads read are computed
        model.encoder.layer = model.encoder.layer[:ENCODER_LAYERS]
        model.config.num_hidden_layers = ENCODER_LAYERS
    if adapter is not None and adapter.exists():
        from router_export.classifier_lora import merge_adapter

        model = merge_adapter(model, adapter)
    model.eval()
    torch.set_grad_enabled(False)
    return model


def pool_features(hidden_states, attention_mask, layers: Sequence[int] = FEATURE_LAYERS):
    """Mean pooling over the unmasked tokens and L2 normalisation of hidden_states[layer] for each of `layers`,
    concatenated: the features the heads read (`hidden_states`: the encoder's per-layer outputs, 0 = embeddings)."""
    import torch
    from torch import nn

    mask = attention_mask.unsqueeze(-1).to(hidden_states[layers[0]].dtype)
    count = mask.sum(dim=1).clamp(min=1e-9)
    pooled = [
        nn.functional.normalize((hidden_states[layer] * mask).sum(dim=1) / count, p=2.0, dim=-1) for layer in layers
    ]
    return torch.cat(pooled, dim=-1)


def build_torch_model(
    heads: Heads | None, encoder=None, layers: Sequence[int] = FEATURE_LAYERS, adapter: Path | None = ADAPTER
):
    """encoder (default: `load_encoder(adapter)`) + mean pooling + L2 norm of `layers`, concatenated (+ heads) as one
    torch module.

    forward(input_ids, attention_mask) -> (intent_probs [B, 9], difficulty [B, 1]).
    """
    import torch
    from torch import nn

    class IntentModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder if encoder is not None else load_encoder(adapter)
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
            return pool_features(hidden_states, attention_mask, layers)

        def forward(self, input_ids, attention_mask):
            h = emb = self.embed(input_ids, attention_mask)
            for i, layer in enumerate(self.intent):
                h = layer(h)
                if i < len(self.intent) - 1:
                    h = torch.relu(h)
            return torch.softmax(h, dim=-1), torch.sigmoid(self.difficulty(emb[:, : self.difficulty.in_features]))

    return IntentModel().eval()


def embed_texts(
    texts: Sequence[str],
    layers: Sequence[int] = FEATURE_LAYERS,
    batch_size: int = 64,
    desc: str = "embedding",
    adapter: Path | None = ADAPTER,
) -> np.ndarray:
    """Features [N, 384 * len(layers)], longest-first batches of similar length, with progress."""
    import torch
    from tqdm import tqdm

    model = build_torch_model(None, layers=layers, adapter=adapter)
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


def _text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def cached_embeddings(
    texts: Sequence[str],
    name: str,
    layers: Sequence[int] = FEATURE_LAYERS,
    cache_dir: Path = ARTIFACTS / "embeddings",
    adapter: Path | None = ADAPTER,
) -> np.ndarray:
    """embed_texts, cached under artifacts/: per list (by a hash of the texts, layers, tokenization settings and
    encoder adapter) and per text in one store per setting, so a changed dataset embeds only its new texts."""
    from router_export.classifier_lora import adapter_digest

    setting = f"{MAX_TOKENS}:{HEAD_TOKENS}:{tuple(layers)}\n"
    if lora := adapter_digest(adapter):  # no adapter: the frozen encoder's cache keys stay as they were
        setting = f"{MAX_TOKENS}:{HEAD_TOKENS}:{tuple(layers)}:lora-{lora}\n"
    digest = hashlib.sha256(setting.encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    path = cache_dir / f"{name}-{digest.hexdigest()[:16]}.npy"
    store_path = cache_dir / f"store-{hashlib.sha256(setting.encode()).hexdigest()[:12]}.npz"
    store: dict[str, np.ndarray] = {}
    if store_path.exists():
        with np.load(store_path) as data:
            store = dict(zip(data["keys"].tolist(), data["values"], strict=True))
    keys = [_text_key(t) for t in texts]
    if path.exists():
        emb = np.load(path)
    else:
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in store))
        if missing:
            embedded = embed_texts(missing, layers, desc=f"embedding {name}", adapter=adapter)
            for text, row in zip(missing, embedded, strict=True):
                store[_text_key(text)] = row
        emb = np.stack([store[k] for k in keys]) if keys else np.zeros((0, EMBED_DIM * len(layers)), np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, emb)
    if any(k not in store for k in keys):
        store.update(zip(keys, emb, strict=True))
        np.savez(store_path, keys=np.array(list(store)), values=np.stack(list(store.values())))
    return emb
