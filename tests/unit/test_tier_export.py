"""router-export-tier / router-build-tiny-tiers: errors, up-to-date stamps, INT8 and INT4 exports, GGUF sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from llm_router.tier.generation import Generator, SamplingParams
from router_export import gguf_source, tiers
from router_export.tiers import ExportError, ExportOptions, export_tier, tier_is_current
from router_export.tiny_tiers import TINY_TIERS, build_hf_model, build_tokenizer


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
    with pytest.raises(ExportError, match="--quantize int8 .* --dtype fp16"):
        ExportOptions(tier="tier_small", dtype="fp16", quantize="int8")
    with pytest.raises(ExportError, match="--quantize int4 .* --dtype fp16"):
        ExportOptions(tier="tier_small", dtype="fp16", quantize="int4")
    with pytest.raises(ExportError, match="--quantize must be one of none, int8, int4"):
        ExportOptions(tier="tier_small", quantize="int3")
    with pytest.raises(ExportError, match="Triton model name"):
        ExportOptions(tier="../x")


def test_export_writes_the_tier_and_skips_when_up_to_date(hf_small: Path, tmp_path: Path) -> None:
    options = ExportOptions(tier="tier_new", model_repository=tmp_path)
    assert not tier_is_current(hf_small, options)
    target = export_tier(hf_small, options)
    for name in ("model.onnx", "tokenizer.json", "config.json", "generation_config.json", "export.json"):
        assert (target / name).exists(), name
    assert tier_is_current(hf_small, options)
    for quantize in ("int8", "int4"):
        assert not tier_is_current(
            hf_small, ExportOptions(tier="tier_new", model_repository=tmp_path, quantize=quantize)
        )
    config = (tmp_path / "tier_new" / "config.pbtxt").read_text()
    assert 'name: "tier_new"' in config and "decoupled: true" in config
    assert (tmp_path / "tier_new" / "1" / "model.py").exists()


def test_int8_export_runs_and_stays_close_to_fp32(hf_small: Path, tmp_path: Path) -> None:
    fp32 = Generator(export_tier(hf_small, ExportOptions(tier="t32", model_repository=tmp_path)))
    int8_dir = export_tier(hf_small, ExportOptions(tier="t8", model_repository=tmp_path, quantize="int8"))
    int8 = Generator(int8_dir)
    assert (int8_dir / "model.onnx").stat().st_size < 0.6 * (tmp_path / "t32/1/model/model.onnx").stat().st_size
    a = fp32.generate("Hello world", SamplingParams(max_tokens=8))
    b = int8.generate("Hello world", SamplingParams(max_tokens=8))
    assert b.output_tokens == 8
    assert abs(np.mean(a.logprobs) - np.mean(b.logprobs)) < 1.0


def test_int4_export_uses_matmulnbits_and_stays_close_to_fp32(hf_small: Path, tmp_path: Path) -> None:
    fp32_dir = export_tier(hf_small, ExportOptions(tier="t32", model_repository=tmp_path))
    int4_dir = export_tier(hf_small, ExportOptions(tier="t4", model_repository=tmp_path, quantize="int4"))
    graph = onnx.load(str(int4_dir / "model.onnx"), load_external_data=False).graph
    nbits = [node for node in graph.node if node.op_type == "MatMulNBits"]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in nbits[0].attribute}
    # 2 layers x 7 projections + the LM head; the embedding Gather stays FP32
    assert len(nbits) == 2 * 7 + 1 and attributes["bits"] == 4 and attributes["block_size"] == 32
    assert len(nbits[0].input) == 3  # A, B, scales: symmetric, no zero points
    assert json.loads((int4_dir / "export.json").read_text())["quantize"] == "int4"
    assert (int4_dir / "model.onnx").stat().st_size < 0.7 * (fp32_dir / "model.onnx").stat().st_size
    a = Generator(fp32_dir).generate("Hello world", SamplingParams(max_tokens=8))
    b = Generator(int4_dir).generate("Hello world", SamplingParams(max_tokens=8))
    assert b.output_tokens == 8
    assert abs(np.mean(a.logprobs) - np.mean(b.logprobs)) < 1.0


def test_int8_flag_and_quantize_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        tiers.main([str(tmp_path), "--tier", "t", "--int8", "--quantize", "int4"])
    assert exit_info.value.code == 2
    assert "--int8 contradicts --quantize int4" in capsys.readouterr().err


# -- GGUF sources ------------------------------------------------------------------------------------------------
def write_tiny_gguf(path: Path, architecture: str = "llama") -> Path:
    """A 2-layer Llama GGUF file with random FP32 weights and the tiny tiers' BPE tokenizer (no BOS, EOS = 2)."""
    import gguf

    build_tokenizer(path.parent / "tokenizer")
    bpe = json.loads((path.parent / "tokenizer" / "tokenizer.json").read_text())["model"]
    tokens = [token for token, _ in sorted(bpe["vocab"].items(), key=lambda item: item[1])]
    hidden, heads, kv_heads, intermediate, layers = 64, 4, 2, 128, 2
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(intermediate)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * len(tokens))
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    rng = np.random.default_rng(0)
    kv = hidden // heads * kv_heads
    shapes = {"token_embd.weight": (len(tokens), hidden), "output.weight": (len(tokens), hidden)}
    for i in range(layers):
        shapes |= {
            f"blk.{i}.attn_q.weight": (hidden, hidden),
            f"blk.{i}.attn_k.weight": (kv, hidden),
            f"blk.{i}.attn_v.weight": (kv, hidden),
            f"blk.{i}.attn_output.weight": (hidden, hidden),
            f"blk.{i}.ffn_gate.weight": (intermediate, hidden),
            f"blk.{i}.ffn_up.weight": (intermediate, hidden),
            f"blk.{i}.ffn_down.weight": (hidden, intermediate),
        }
        for norm in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{i}.{norm}.weight", np.ones(hidden, np.float32))
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for name, shape in shapes.items():
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.2).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


def test_gguf_file_is_dequantized_exported_and_stamped(tiny_gguf: Path, tmp_path: Path) -> None:
    options = ExportOptions(tier="tier_gguf", model_repository=tmp_path / "repo")
    options.model_repository.mkdir()
    assert not tier_is_current(tiny_gguf, options)
    target = export_tier(tiny_gguf, options, gguf_cache=tmp_path / "cache")
    stamp = json.loads((target / "export.json").read_text())
    assert stamp["source"] == str(tiny_gguf.resolve()) and stamp["quantize"] == "none"
    assert tier_is_current(tiny_gguf, options)
    (checkpoint,) = (tmp_path / "cache").iterdir()
    assert (checkpoint / "model.safetensors").exists() and checkpoint.name.startswith("tiny-llama-")
    config = json.loads((target / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("llama", 2, 64)
    # the file's tokenizer settings, not transformers' defaults: no BOS on plain text, EOS = id 2
    tokenizer_config = json.loads((target / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "</s>"
    generator = Generator(target)
    assert generator.encode("def f")[0] != 1
    assert generator.info.eos_ids == frozenset([2])
    assert generator.generate("def f", SamplingParams(max_tokens=4), raw=True).input_tokens == len(
        generator.encode("def f")
    )
    # a second export reuses the dequantized checkpoint
    mtime = (checkpoint / "model.safetensors").stat().st_mtime_ns
    export_tier(tiny_gguf, ExportOptions(tier="tier_gguf4", model_repository=options.model_repository, quantize="int4"),
                gguf_cache=tmp_path / "cache")  # fmt: skip
    assert (checkpoint / "model.safetensors").stat().st_mtime_ns == mtime


def test_bad_gguf_files_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import gguf

    repo = tmp_path / "repo"
    repo.mkdir()
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_text("hello")
    assert tiers.main([str(not_gguf), "--tier", "t", "--model-repository", str(repo)]) == 2
    assert "is a file but not a GGUF file" in capsys.readouterr().err

    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(gguf_source.GgufError, match="not a readable GGUF file"):
        gguf_source.check_gguf(damaged)

    bert = tmp_path / "bert.gguf"
    writer = gguf.GGUFWriter(str(bert), "bert")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ExportError, match="GGUF architecture 'bert' is not supported .* llama"):
        export_tier(bert, ExportOptions(tier="t", model_repository=repo), gguf_cache=tmp_path / "cache")
