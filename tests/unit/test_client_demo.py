"""router-demo without a server: which tiers are real models and which are stand-ins (their export.json)."""

from __future__ import annotations

import json
from pathlib import Path

from router_client.demo import STAND_IN_MARKER, tier_origin


def _export(repository: Path, tier: str, source: Path, version: str = "1") -> None:
    stamp = repository / tier / version / "model" / "export.json"
    stamp.parent.mkdir(parents=True)
    stamp.write_text(json.dumps({"export_version": 1, "source": str(source)}))


def test_a_tiny_tier_is_a_stand_in_and_a_checkpoint_is_real(tmp_path: Path) -> None:
    tiny = tmp_path / "artifacts" / "tiny_tiers" / "tier_medium"
    tiny.mkdir(parents=True)
    (tiny / STAND_IN_MARKER).write_text("{}")
    checkpoint = tmp_path / "hf" / "SmolLM2-135M-Instruct"
    checkpoint.mkdir(parents=True)
    repository = tmp_path / "model_repository"
    _export(repository, "tier_medium", tiny)
    _export(repository, "tier_small", checkpoint)
    small, medium = tier_origin(repository, "tier_small"), tier_origin(repository, "tier_medium")
    assert small.real is True and small.describe() == "tier_small: real model, exported from SmolLM2-135M-Instruct"
    assert medium.real is False and "stand-in" in medium.describe()


def test_the_newest_version_counts_and_a_tier_without_export_is_unknown(tmp_path: Path) -> None:
    repository = tmp_path / "model_repository"
    _export(repository, "tier_large", tmp_path / "tiny_tiers" / "tier_large", version="2")
    _export(repository, "tier_large", tmp_path / "Qwen2.5-0.5B-Instruct", version="10")
    assert tier_origin(repository, "tier_large").real is True  # version 10, not 2
    remote = tier_origin(repository, "tier_remote")
    assert remote.real is None and "no local export" in remote.describe()
