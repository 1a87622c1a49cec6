"""`router-build-tiny-tiers`: three tiny random-weight Llama-style tiers, so dev and CI need no download.

Each tier is a Hugging Face causal-LM directory under `artifacts/tiny_tiers/<tier>/` (random weights, fixed seed, a
byte-level BPE tokenizer trained here on Python's own docstrings) exported with `router-export-tier` into
`model_repository/<tier>/1/model/`. Sizes differ clearly (2/4/8 layers, hidden 64/128/256). `router-build-models`
exports all three into `artifacts/stand_in/`, the stand-ins the tests serve (router_export.stand_in), and tier_medium /
tier_large into the repository unless a real model was exported there; this command alone builds all three in place.

Random weights give junk text. Two choices keep that junk useful for tests:
- the end token's output-embedding row is zeroed, so its logit is 0 while the best of the other 4k logits is clearly
  positive: greedy generation never ends early and always yields `max_tokens` tokens (real checkpoints stop at
  their EOS); the `end_id` input can still stop generation at any other token;
- a wider weight init (`initializer_range`) than the usual 0.02 gives peaked next-token distributions, so greedy
  picks are not near-ties that float rounding could flip between PyTorch and onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import pydoc
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from router_export.tiers import STAMP, ExportOptions, export_tier, tier_is_current

ARTIFACTS = Path("artifacts") / "tiny_tiers"
VOCAB_SIZE = 4096
CONTEXT_LENGTH = 2048
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
BUILDER_VERSION = "2-ctx2048"


@dataclass(frozen=True)
class TinySpec:
    """Shape of one tiny tier."""

    tier: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    seed: int
    initializer_range: float


TINY_TIERS: tuple[TinySpec, ...] = (
    TinySpec("tier_small", layers=2, hidden=64, heads=4, kv_heads=2, intermediate=176, seed=11, initializer_range=0.25),
    TinySpec(
        "tier_medium", layers=4, hidden=128, heads=4, kv_heads=2, intermediate=352, seed=22, initializer_range=0.18
    ),
    TinySpec(
        "tier_large", layers=8, hidden=256, heads=8, kv_heads=4, intermediate=688, seed=33, initializer_range=0.12
    ),
)


def training_text() -> list[str]:
    """Text to train the tokenizer on: the docstrings of Python's builtins and a few stdlib modules."""
    import collections
    import json as json_module
    import os
    import pathlib
    import re
    import string

    texts: list[str] = []
    for module in (__builtins__ if isinstance(__builtins__, dict) else vars(__builtins__)).values():
        doc = getattr(module, "__doc__", None)
        if isinstance(doc, str):
            texts.append(doc)
    for module in (collections, json_module, os, pathlib, re, string, argparse):
        texts.append(pydoc.render_doc(module, renderer=pydoc.plaintext))
    return texts


def build_tokenizer(out_dir: Path) -> None:
    """Train a byte-level BPE tokenizer (Llama-style `<s>` prefix) and save it as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_text(), trainer=trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=CONTEXT_LENGTH,
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.save_pretrained(out_dir)


def build_hf_model(spec: TinySpec, out_dir: Path) -> None:
    """Save a random-weight LlamaForCausalLM (fixed seed) plus tokenizer and generation config to out_dir."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    build_tokenizer(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=CONTEXT_LENGTH,
        initializer_range=spec.initializer_range,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id].zero_()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out_dir)
    (out_dir / "tiny_tier.json").write_text(json.dumps({**asdict(spec), "builder_version": BUILDER_VERSION}))


def hf_dir_is_current(spec: TinySpec, hf_dir: Path) -> bool:
    marker = hf_dir / "tiny_tier.json"
    if not marker.exists() or not (hf_dir / "model.safetensors").exists():
        return False
    return json.loads(marker.read_text()) == {**asdict(spec), "builder_version": BUILDER_VERSION}


def exported_from(repo: Path, tier: str) -> str | None:
    """The source named by a tier's export stamp, or None when the tier has no (readable) stamp."""
    stamp = ExportOptions(tier=tier, model_repository=repo).target / STAMP
    try:
        return json.loads(stamp.read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None


def build_for_repository(
    repo: Path,
    force: bool = False,
    artifacts: Path | None = None,
    int8: bool = False,
    tiers: tuple[str, ...] | None = None,
    keep_other_exports: bool = False,
) -> None:
    """Build the tiny tiers' HF dirs (under artifacts) and export them into `repo`; skip what is current.

    `tiers` limits the build to those names (default: all three); `keep_other_exports` leaves alone a tier that was
    exported from another source (a real model put there with router-export-tier)."""
    artifacts = Path(artifacts) if artifacts is not None else Path(repo).resolve().parent / ARTIFACTS
    unknown = set(tiers or ()) - {spec.tier for spec in TINY_TIERS}
    if unknown:
        raise ValueError(f"no tiny tier named {', '.join(sorted(unknown))}")
    for spec in TINY_TIERS:
        if tiers is not None and spec.tier not in tiers:
            continue
        hf_dir = artifacts / spec.tier
        other = exported_from(Path(repo), spec.tier)
        if keep_other_exports and not force and other is not None and other != str(hf_dir.resolve()):
            print(f"[tiny-tiers] {spec.tier} was exported from {other}: left as it is", flush=True)
            continue
        rebuilt = False
        if force or not hf_dir_is_current(spec, hf_dir):
            print(
                f"[tiny-tiers] building {spec.tier}: {spec.layers} layers, hidden {spec.hidden} -> {hf_dir}", flush=True
            )
            build_hf_model(spec, hf_dir)
            rebuilt = True
        options = ExportOptions(tier=spec.tier, model_repository=Path(repo), quantize="int8" if int8 else "none")
        if not rebuilt and not force and tier_is_current(hf_dir, options):
            print(f"[tiny-tiers] {spec.tier} is up to date", flush=True)
            continue
        export_tier(hf_dir, options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="router-build-tiny-tiers", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument(
        "--artifacts", type=Path, default=None, help=f"where the HF dirs go (default: <repo>/../{ARTIFACTS})"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--int8", action="store_true", help="INT8 dynamic weight quantization (CPU)")
    args = parser.parse_args(argv)
    if not args.model_repository.is_dir():
        print(f"router-build-tiny-tiers: {args.model_repository} is not a directory", file=sys.stderr)
        return 2
    build_for_repository(args.model_repository, force=args.force, artifacts=args.artifacts, int8=args.int8)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
