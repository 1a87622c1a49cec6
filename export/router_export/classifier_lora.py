"""A LoRA adapter on the intent classifier's encoder (peft): fine-tuned jointly with an intent head, saved as a
small .npz (committed next to the heads) and merged into the encoder's weights at build time, so the exported graph
has the same ops and speed as the frozen encoder's.

The adapter file holds the peft state dict (lora_A / lora_B per target linear) and the settings it was trained with
(`r`, `alpha`, `target_modules`, the number of encoder layers kept).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# every linear of an adapted transformer layer: attention (query, key, value, output) and feed-forward (in, out)
LINEARS = r"(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
PREFIX = "lora/"  # npz keys of the adapter tensors: PREFIX + peft state-dict name


@dataclass
class LoraSpec:
    """LoRA settings (recorded in the adapter file)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # encoder layers (0-based) that get an adapter; fine-tuning computes what lies below the first one (embeddings,
    # frozen layers) once per prompt, not at every step. All 3 kept layers: held-out macro-F1 0.834 vs 0.829 for
    # layers (1, 2) at r=8 (docs/classifier.md)
    layers: tuple[int, ...] = (0, 1, 2)

    @property
    def target_modules(self) -> str:
        """peft matches a string as a regular expression over the full module name (the pooler stays out)."""
        return rf".*encoder\.layer\.({'|'.join(str(i) for i in self.layers)})\.{LINEARS}"

    def config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=self.target_modules
        )


@dataclass
class FineTuneSettings:
    """Joint training of the adapter and an intent head (class-weighted cross-entropy, AdamW, linear decay)."""

    epochs: float = 4.0
    batch_size: int = 32
    lr: float = 1e-3  # adapter
    head_lr: float = 5e-4  # the head starts from one fitted on the frozen encoder
    warm_start_epochs: int = 60  # that frozen-encoder MLP's epochs (the committed adapter's recipe)
    weight_decay: float = 1e-2
    label_smoothing: float = 0.05
    evals_per_epoch: int = 2  # held-out checks per epoch; the best check's weights are kept
    seed: int = 0
    history: list[dict] = field(default_factory=list)


def adapter_digest(path: Path | None) -> str:
    """Short hash of an adapter file ("" = no adapter: the frozen encoder)."""
    if path is None or not Path(path).exists():
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def check_heads_fit(heads_adapter: str, adapter: Path | None, weights: Path) -> None:
    """Raise unless heads (saved in `weights`, fitted on the encoder with adapter digest `heads_adapter`) were fitted
    on the encoder with the adapter file `adapter` (or both are without one): other features would be misread."""
    if heads_adapter != adapter_digest(adapter):
        raise ValueError(
            f"{weights} was fitted on the encoder with adapter {heads_adapter or '(none)'}, but the adapter {adapter} "
            f"is {adapter_digest(adapter) or '(missing)'}: refit the heads (router-train-classifier train --lora keep)"
        )


def add_adapter(encoder, spec: LoraSpec):
    """The encoder wrapped by peft with a fresh (identity: lora_B = 0) adapter; only the adapter is trainable."""
    from peft import get_peft_model

    return get_peft_model(encoder, spec.config())


def save_adapter(model, spec: LoraSpec, path: Path, encoder_layers: int) -> None:
    """The peft model's adapter tensors and settings as a compressed .npz."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model)
    arrays = {PREFIX + k: v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        r=np.array(spec.r),
        alpha=np.array(spec.alpha),
        dropout=np.array(spec.dropout),
        layers=np.array(spec.layers),
        target_modules=np.array(spec.target_modules),  # for the reader; `layers` rebuilds it
        encoder_layers=np.array(encoder_layers),
        **arrays,
    )


def read_adapter(path: Path) -> tuple[LoraSpec, int, dict[str, np.ndarray]]:
    """(settings, encoder layers, peft state dict as numpy) of an adapter file."""
    with np.load(path) as data:
        layers = tuple(int(i) for i in data["layers"])
        spec = LoraSpec(int(data["r"]), int(data["alpha"]), float(data["dropout"]), layers)
        tensors = {k[len(PREFIX) :]: data[k] for k in data.files if k.startswith(PREFIX)}
        return spec, int(data["encoder_layers"]), tensors


def load_adapter(encoder, path: Path):
    """The encoder with the adapter of `path` (a peft model, unmerged); the layer count must match."""
    import torch
    from peft import set_peft_model_state_dict

    spec, layers, tensors = read_adapter(path)
    if layers != encoder.config.num_hidden_layers:
        raise ValueError(f"{path} adapts {layers} encoder layers, the encoder has {encoder.config.num_hidden_layers}")
    model = add_adapter(encoder, spec)
    result = set_peft_model_state_dict(model, {k: torch.from_numpy(v) for k, v in tensors.items()})
    # every LoRA tensor of the model must come from the file (missing keys here are the frozen base weights)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        unexpected = result.unexpected_keys[:3]
        raise ValueError(f"{path} does not fit the encoder: missing {missing[:3]}, unexpected {unexpected}")
    return model.eval()  # peft adds its LoRA dropout modules in training mode


def merge_adapter(encoder, path: Path):
    """The encoder with the adapter's low-rank update added to its weights (peft merge_and_unload): no extra ops."""
    return load_adapter(encoder, path).merge_and_unload()


def length_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of rows of similar length (less padding), in shuffled order."""
    order = rng.permutation(len(lengths))
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort([lengths[i] for i in part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


class LayerCache:
    """Per prompt, the output of the encoder layers below the first adapted one (frozen, so computed once), and the
    forward pass from there on through the adapted layers: fine-tuning then costs the adapted layers only."""

    def __init__(self, encoder, texts: Sequence[str], first: int, batch_size: int = 64) -> None:
        import torch
        from llm_router.classifier.tokenization import IntentTokenizer

        self.first = first
        tokenizer = IntentTokenizer()
        ids = tokenizer.token_ids(list(texts))
        self.hidden: list = [None] * len(ids)
        order = np.argsort([-len(x) for x in ids], kind="stable")
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = tokenizer.pad([ids[i] for i in rows])
                h = encoder(
                    input_ids=torch.from_numpy(batch.input_ids),
                    attention_mask=torch.from_numpy(batch.attention_mask),
                    token_type_ids=torch.zeros(batch.input_ids.shape, dtype=torch.long),
                    output_hidden_states=True,
                ).hidden_states[first]
                for j, row in enumerate(rows):
                    self.hidden[row] = h[j, : len(ids[row])].clone()
        self.lengths = [len(x) for x in ids]

    def features(self, encoder, rows: Sequence[int], layers: Sequence[int]):
        """Features of `rows` (pool_features of `layers`), running the encoder's layers from `first` on."""
        import torch

        from router_export.classifier_encoder import pool_features

        length = max(self.lengths[i] for i in rows)
        h = torch.zeros((len(rows), length, self.hidden[rows[0]].shape[-1]))
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for j, row in enumerate(rows):
            h[j, : self.lengths[row]] = self.hidden[row]
            mask[j, : self.lengths[row]] = 1
        extended = encoder.get_extended_attention_mask(mask, mask.shape)
        hidden_states = {self.first: h}
        for index in range(self.first, len(encoder.encoder.layer)):
            h = encoder.encoder.layer[index](h, attention_mask=extended)[0]
            hidden_states[index + 1] = h
        return pool_features(hidden_states, mask, layers)


def fine_tune(
    train_texts: Sequence[str],
    train_y: np.ndarray,
    test_texts: Sequence[str],
    test_y: np.ndarray,
    class_weights: np.ndarray,
    head_init: list[tuple[np.ndarray, np.ndarray]],
    spec: LoraSpec | None = None,
    settings: FineTuneSettings | None = None,
):
    """Train a LoRA adapter and the intent MLP (warm-started from `head_init`, [768, h] + [h, 9]) jointly; the weights
    of the held-out check with the best macro-F1 are kept. Returns the peft model (unmerged) and that check's head."""
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from sklearn.metrics import f1_score
    from torch import nn
    from transformers import get_linear_schedule_with_warmup

    from router_export.classifier_encoder import FEATURE_LAYERS, load_encoder

    spec = spec or LoraSpec()
    settings = settings or FineTuneSettings()
    first = min(spec.layers)
    if min(FEATURE_LAYERS) < first:
        raise ValueError(f"features read layer {min(FEATURE_LAYERS)}, below the first adapted layer {first}")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    encoder = load_encoder(adapter=None)
    started = time.monotonic()
    train_cache, test_cache = LayerCache(encoder, train_texts, first), LayerCache(encoder, test_texts, first)
    print(f"cached encoder layers below {first}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    peft_model = add_adapter(encoder, spec)
    base = peft_model.base_model.model  # the BertModel, its adapted linears wrapped by peft
    (w1, b1), (w2, b2) = head_init
    head = nn.Sequential(nn.Dropout(0.1), nn.Linear(*w1.shape), nn.ReLU(), nn.Dropout(0.2), nn.Linear(*w2.shape))
    for layer, (w, b) in ((head[1], (w1, b1)), (head[4], (w2, b2))):
        layer.weight.data = torch.from_numpy(np.ascontiguousarray(w.T)).float()
        layer.bias.data = torch.from_numpy(b).float()
    yt = torch.from_numpy(np.asarray(train_y, dtype=np.int64))
    loss_fn = nn.CrossEntropyLoss(
        weight=torch.from_numpy(class_weights).float(), label_smoothing=settings.label_smoothing
    )
    adapter_params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": adapter_params, "lr": settings.lr},
            {"params": list(head.parameters()), "lr": settings.head_lr},
        ],
        weight_decay=settings.weight_decay,
    )
    per_epoch = -(-len(train_texts) // settings.batch_size)
    total = max(1, round(settings.epochs * per_epoch))
    schedule = get_linear_schedule_with_warmup(opt, num_warmup_steps=total // 20, num_training_steps=total)
    check_every = max(1, per_epoch // settings.evals_per_epoch)

    def held_out_f1() -> float:
        peft_model.eval()
        head.eval()
        order = np.argsort([-n for n in test_cache.lengths], kind="stable")
        pred = np.zeros(len(order), dtype=np.int64)
        with torch.no_grad():
            for start in range(0, len(order), 64):
                rows = order[start : start + 64]
                pred[rows] = head(test_cache.features(base, rows, FEATURE_LAYERS)).argmax(dim=1).numpy()
        return float(f1_score(test_y, pred, average="macro"))

    best = (held_out_f1(), 0, None, head_init)
    settings.history.append({"step": 0, "heldout_macro_f1": best[0]})
    print(
        f"LoRA fine-tuning: {total} steps of {settings.batch_size}; held-out macro-F1 at start {best[0]:.4f}",
        file=sys.stderr,
    )
    step, started = 0, time.monotonic()
    with torch.enable_grad():
        while step < total:
            for rows in length_batches(train_cache.lengths, settings.batch_size, rng):
                peft_model.train()
                head.train()
                loss = loss_fn(head(train_cache.features(base, rows, FEATURE_LAYERS)), yt[torch.from_numpy(rows)])
                opt.zero_grad()
                loss.backward()
                opt.step()
                schedule.step()
                step += 1
                if step % check_every == 0 or step == total:
                    f1 = held_out_f1()
                    settings.history.append(
                        {"step": step, "loss": loss.item(), "heldout_macro_f1": f1, "s": time.monotonic() - started}
                    )
                    print(
                        f"  step {step}/{total} loss {loss.item():.3f} held-out macro-F1 {f1:.4f} "
                        f"({time.monotonic() - started:.0f} s)",
                        file=sys.stderr,
                    )
                    if f1 > best[0]:
                        state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}
                        best = (f1, step, state, head_layers(head))
                if step >= total:
                    break
    if best[2] is not None:
        set_peft_model_state_dict(peft_model, best[2])
    print(f"kept the adapter of step {best[1]} (held-out macro-F1 {best[0]:.4f})", file=sys.stderr)
    peft_model.eval()
    return peft_model, best[3]


def head_layers(head) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W [in, out], b) of the Linear layers of a torch head, as `Heads.intent_layers` holds them."""
    from torch import nn

    return [
        (m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in head if isinstance(m, nn.Linear)
    ]


def fine_tune_adapter(
    train_rows: list,
    test_rows: list,
    out: Path,
    spec: LoraSpec | None = None,
    settings: FineTuneSettings | None = None,
) -> Path:
    """A new LoRA adapter for the encoder, trained jointly with an intent MLP (warm-started on the frozen encoder's
    embeddings) on the training rows (`intent_data.Row`), the best of its held-out checks kept; saved to `out`."""
    from router_export.classifier_data import intent_labels
    from router_export.classifier_encoder import ENCODER_LAYERS, cached_embeddings
    from router_export.classifier_training import class_weights, fit_mlp

    spec = spec or LoraSpec()
    settings = settings or FineTuneSettings()
    y_train, y_test = intent_labels(train_rows), intent_labels(test_rows)
    frozen = cached_embeddings([r.prompt for r in train_rows], "intent-train", adapter=None)
    started = time.monotonic()
    model, _ = fine_tune(
        [r.prompt for r in train_rows],
        y_train,
        [r.prompt for r in test_rows],
        y_test,
        class_weights(y_train),
        fit_mlp(frozen, y_train, epochs=settings.warm_start_epochs),
        spec,
        settings,
    )
    save_adapter(model, spec, out, ENCODER_LAYERS)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB) after {time.monotonic() - started:.0f} s of fine-tuning")
    return out
