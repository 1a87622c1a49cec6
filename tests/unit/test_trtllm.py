"""TensorRT-LLM tier tooling: engine build commands and the filled, validated Triton repository (no GPU needed)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from router_export import trtllm
from tritonclient.grpc import model_config_pb2 as mc

TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "trtllm_templates"


def _values(**extra: str) -> dict[str, str]:
    return trtllm.template_values(
        engine_dir="/trtllm/engine",
        tokenizer_dir="/trtllm/tokenizer",
        max_batch_size=32,
        kv_cache_free_gpu_mem_fraction=0.85,
        instances=2,
        extra=extra,
    )


def test_engine_commands(tmp_path):
    opts = trtllm.EngineOptions(hf_dir=Path("/hf/m"), out=tmp_path, examples_dir=Path("/ex"), tp_size=4, dtype="bf16")
    convert, build = trtllm.engine_commands(opts)
    assert convert[:2] == [sys.executable, "/ex/llama/convert_checkpoint.py"]
    assert convert[2:] == [
        "--model_dir", "/hf/m", "--output_dir", str(tmp_path / "checkpoint"),
        "--dtype", "bfloat16", "--tp_size", "4", "--pp_size", "1",
    ]  # fmt: skip
    args = dict(zip(build[1::2], build[2::2], strict=False))
    assert build[0] == "trtllm-build"
    assert args["--checkpoint_dir"] == str(tmp_path / "checkpoint") and args["--output_dir"] == str(tmp_path / "engine")
    assert args["--gemm_plugin"] == args["--gpt_attention_plugin"] == "bfloat16"
    assert args["--paged_kv_cache"] == "enable" and args["--workers"] == "4"
    assert int(args["--max_input_len"]) < int(args["--max_seq_len"])


@pytest.mark.parametrize(
    "kwargs", [{"dtype": "int3"}, {"tp_size": 0}, {"max_input_len": 8192, "max_seq_len": 8192}, {"max_batch_size": 0}]
)
def test_bad_engine_options(kwargs, tmp_path):
    with pytest.raises(trtllm.TrtllmError):
        trtllm.EngineOptions(hf_dir=tmp_path, out=tmp_path, examples_dir=tmp_path, **kwargs)


def test_build_engine_explains_a_missing_convert_script(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    opts = trtllm.EngineOptions(hf_dir=tmp_path / "hf", out=tmp_path / "out", examples_dir=tmp_path / "examples")
    with pytest.raises(trtllm.TrtllmError, match="convert_checkpoint.py not found"):
        trtllm.build_engine(opts)


def test_copy_tokenizer(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    with pytest.raises(trtllm.TrtllmError, match="no tokenizer"):
        trtllm.copy_tokenizer(hf, tmp_path / "out")
    (hf / "tokenizer.json").write_text("{}")
    (hf / "config.json").write_text("{}")
    target = trtllm.copy_tokenizer(hf, tmp_path / "out")
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "tokenizer.json"]


def test_repository_is_filled_and_valid(tmp_path):
    models = trtllm.write_repository(TEMPLATES, tmp_path / "repo", _values())
    assert models == list(trtllm.MODELS)
    configs = {}
    for model in models:
        config = mc.ModelConfig()
        text_format.Parse((tmp_path / "repo" / model / "config.pbtxt").read_text(), config)
        configs[model] = config
        assert (tmp_path / "repo" / model / "1").is_dir()
    llm = configs["tensorrt_llm"]
    assert llm.backend == "tensorrtllm" and llm.max_batch_size == 32 and llm.model_transaction_policy.decoupled
    assert llm.parameters["gpt_model_path"].string_value == "/trtllm/engine"
    assert llm.parameters["batching_strategy"].string_value == "inflight_fused_batching"
    # an optional parameter without a value stays a placeholder, which the backend ignores
    assert llm.parameters["max_tokens_in_paged_kv_cache"].string_value == "${max_tokens_in_paged_kv_cache}"
    assert configs["preprocessing"].parameters["tokenizer_dir"].string_value == "/trtllm/tokenizer"
    assert configs["tensorrt_llm_bls"].instance_group[0].count == 2
    ensemble_outputs = {t.name: t.data_type for t in configs["ensemble"].output}
    assert ensemble_outputs["generation_logits"] == mc.TYPE_FP32


def test_set_overrides_a_value(tmp_path):
    trtllm.write_repository(TEMPLATES, tmp_path / "repo", _values(max_tokens_in_paged_kv_cache="65536"))
    text = (tmp_path / "repo" / "tensorrt_llm" / "config.pbtxt").read_text()
    assert 'string_value: "65536"' in text


def test_placeholder_outside_a_parameter_is_an_error(tmp_path):
    values = _values()
    del values["logits_datatype"]
    with pytest.raises(trtllm.TrtllmError, match=r"ensemble/config.pbtxt: placeholders without.*logits_datatype"):
        trtllm.write_repository(TEMPLATES, tmp_path / "repo", values)
    assert not (tmp_path / "repo").exists()


def test_missing_router_interface_is_an_error(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    bls = templates / "tensorrt_llm_bls" / "config.pbtxt"
    bls.write_text(bls.read_text().replace('"output_log_probs"', '"log_probs"'))
    with pytest.raises(trtllm.TrtllmError, match="tensorrt_llm_bls lacks what the router calls: output output_log"):
        trtllm.write_repository(templates, tmp_path / "repo", _values())


def test_cli(tmp_path, capsys):
    assert trtllm.main(["repo", "--templates", str(TEMPLATES), "--out", str(tmp_path / "r"), "--set", "x=1"]) == 0
    assert trtllm.main(["repo", "--templates", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    assert "all_models/inflight_batcher_llm" in capsys.readouterr().err
    assert trtllm.main(["repo", "--templates", str(TEMPLATES), "--out", str(tmp_path / "r"), "--set", "novalue"]) == 2
    out = tmp_path / "e"
    code = trtllm.main(["engine", "--hf-dir", "/hf", "--out", str(out), "--examples-dir", "/ex", "--dry-run"])
    assert code == 0 and "trtllm-build --checkpoint_dir" in capsys.readouterr().out
