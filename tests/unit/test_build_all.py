"""router-build-models' repository hygiene (the builds themselves are covered by the classifier and tier tests)."""

from __future__ import annotations

from pathlib import Path

from router_export.build_all import remove_stale_model_dirs


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
