"""Tiny stand-ins for real tiers, and the overlay repository the tests serve.

`model_repository/tier_small` holds a real model (SmolLM2-135M, router_export.real_tiers), and tier_medium /
tier_large may too (router-export-tier). The test suite keeps serving the tiny random-weight tiers instead, so its
several hundred tests stay fast and their expectations (context length, exact tokens) stay those of the tiny tiers:
`router-build-models` exports the three tiny tiers into `artifacts/stand_in/`, and `overlay_repository` builds
`artifacts/test_model_repository/`, a folder of symlinks to every model folder of the repository except those with a
stand-in, which point at the stand-in instead.

The stand-in folder serves the repository's own config.pbtxt and model.py (copied in by `overlay_repository`), so
tests exercise the committed configuration; only the weights differ. Without a stand-in (models not built yet) the
overlay links the repository's own folder.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import uuid
from pathlib import Path

STAND_IN_TIERS = ("tier_small", "tier_medium", "tier_large")
STAND_IN_ROOT = Path("artifacts") / "stand_in"
OVERLAY = Path("artifacts") / "test_model_repository"
# Files of a model folder copied from the repository into its stand-in (the weights under 1/model/ are the stand-in's).
COPIED = ("config.pbtxt", "1/model.py")


def stand_in_root(repo: Path) -> Path:
    """artifacts/stand_in next to the model repository."""
    return Path(repo).resolve().parent / STAND_IN_ROOT


def stand_in_ready(folder: Path) -> bool:
    return (folder / "1" / "model" / "model.onnx").exists()


def _replace_file(source: Path, target: Path) -> None:
    """Copy source over target atomically (concurrent test sessions may refresh the same overlay)."""
    if target.exists() and filecmp.cmp(source, target, shallow=False):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    shutil.copy2(source, staged)
    os.replace(staged, target)


def _link(link: Path, target: Path) -> None:
    """Point link at target, replacing an older link atomically."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    staged = link.with_name(f".{link.name}.{uuid.uuid4().hex}")
    staged.symlink_to(target, target_is_directory=True)
    os.replace(staged, link)


def overlay_repository(repo: Path, overlay: Path | None = None) -> Path:
    """Create or refresh the overlay of `repo` with its stand-ins (default `artifacts/test_model_repository`)."""
    repo = Path(repo).resolve()
    overlay = Path(overlay) if overlay is not None else repo.parent / OVERLAY
    overlay.mkdir(parents=True, exist_ok=True)
    stand_ins = stand_in_root(repo)
    wanted: dict[str, Path] = {}
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        stand_in = stand_ins / model_dir.name
        if model_dir.name in STAND_IN_TIERS and stand_in_ready(stand_in):
            for name in COPIED:
                if (model_dir / name).exists():
                    _replace_file(model_dir / name, stand_in / name)
            wanted[model_dir.name] = stand_in
        else:
            wanted[model_dir.name] = model_dir
    for name, target in wanted.items():
        _link(overlay / name, target)
    for entry in overlay.iterdir():  # models removed from the repository
        if entry.name not in wanted and not entry.name.startswith(".") and entry.is_symlink():
            entry.unlink(missing_ok=True)
    return overlay


def build_stand_ins(repo: Path, force: bool = False) -> Path:
    """Export the tiny stand-ins (router_export.tiny_tiers) into artifacts/stand_in; returns that folder."""
    from router_export import tiny_tiers

    root = stand_in_root(repo)
    root.mkdir(parents=True, exist_ok=True)
    for tier in STAND_IN_TIERS:  # the repository's config and model.py (else the export writes the template's)
        for name in COPIED:
            if (Path(repo) / tier / name).exists():
                _replace_file(Path(repo) / tier / name, root / tier / name)
    tiny_tiers.build_for_repository(
        root, force=force, artifacts=Path(repo).resolve().parent / tiny_tiers.ARTIFACTS, tiers=STAND_IN_TIERS
    )
    return root
