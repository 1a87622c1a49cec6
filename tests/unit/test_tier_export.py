"""router-export-tier / router-build-tiny-tiers: errors, up-to-date stamps, INT8 export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from llm_router.tier.generation import Generator, SamplingParams
from router_export import tiers
from router_export.tiers import ExportError, ExportOptions, export_tier, tier_is_current
from router_export.tiny_tiers import TINY_TIERS, build_hf_model


@pytest.fixture(scope="module")
def hf_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    hf_dir = tmp_path_factory.mktemp("hf") / "tier_small"
    build_hf_model(TINY_TIERS[0], hf_dir)
    return hf_dir


def test_missing_directory_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = tiers.main([str(tmp_path / "nope"), "--tier", "tier_x", "--model-repository", str(tmp_path)])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_unsupported_architecture_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "bert"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    (source / "tokenizer.json").write_text("{}")
    with pytest.raises(ExportError, match="'bert' .* is not supported .* text-generation-with-past"):
        tiers.check_source(source)


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ExportError, match="--int8"):
        ExportOptions(tier="tier_small", dtype="fp16", int8=True)
    with pytest.raises(ExportError, match="Triton model name"):
        ExportOptions(tier="../x")


def test_export_writes_the_tier_and_skips_when_up_to_date(hf_small: Path, tmp_path: Path) -> None:
    options = ExportOptions(tier="tier_new", model_repository=tmp_path)
    assert not tier_is_current(hf_small, options)
    target = export_tier(hf_small, options)
    for name in ("model.onnx", "tokenizer.json", "config.json", "generation_config.json", "export.json"):
        assert (target / name).exists(), name
    assert tier_is_current(hf_small, options)
    assert not tier_is_current(hf_small, ExportOptions(tier="tier_new", model_repository=tmp_path, int8=True))
    config = (tmp_path / "tier_new" / "config.pbtxt").read_text()
    assert 'name: "tier_new"' in config and "decoupled: true" in config
    assert (tmp_path / "tier_new" / "1" / "model.py").exists()


def test_int8_export_runs_and_stays_close_to_fp32(hf_small: Path, tmp_path: Path) -> None:
    fp32 = Generator(export_tier(hf_small, ExportOptions(tier="t32", model_repository=tmp_path)))
    int8_dir = export_tier(hf_small, ExportOptions(tier="t8", model_repository=tmp_path, int8=True))
    int8 = Generator(int8_dir)
    assert (int8_dir / "model.onnx").stat().st_size < 0.6 * (tmp_path / "t32/1/model/model.onnx").stat().st_size
    a = fp32.generate("Hello world", SamplingParams(max_tokens=8))
    b = int8.generate("Hello world", SamplingParams(max_tokens=8))
    assert b.output_tokens == 8
    assert abs(np.mean(a.logprobs) - np.mean(b.logprobs)) < 1.0
