"""The GPU repository is rendered from the CPU configs: overlay per model kind, no drift in anything else."""

from __future__ import annotations

from pathlib import Path

import pytest
from router_export import gpu_configs as gc
from tritonclient.grpc import model_config_pb2 as mc

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_REPO = ROOT / "tests" / "fixtures" / "cpu_model_repository"
PROJECT_CONFIGS = sorted((ROOT / "model_repository").glob("*/config.pbtxt"))


def _fixture(name: str) -> mc.ModelConfig:
    return gc.load_config(FIXTURE_REPO / name / "config.pbtxt")


def _trt_params(config: mc.ModelConfig) -> dict[str, str]:
    (acc,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt"
    return dict(acc.parameters)


# -- the deterministic fixture -------------------------------------------------------------------------------------
def test_kinds_of_fixture_models():
    assert gc.model_kind(_fixture("fixture_encoder")) == "onnx"
    assert gc.model_kind(_fixture("tier_fixture")) == "tier"
    assert gc.model_kind(_fixture("fixture_router")) == "unchanged"


def test_onnx_overlay_tensorrt_fp16_with_cache_profiles_and_warmup():
    gpu = gc.render_gpu_config(_fixture("fixture_encoder"), gc.GpuOptions(trt_cache_dir="/trt_cache/"))
    (group,) = gpu.instance_group
    assert group.kind == mc.ModelInstanceGroup.KIND_GPU and group.count == 1 and list(group.gpus) == []
    assert _trt_params(gpu) == {
        "precision_mode": "FP16",
        "max_workspace_size_bytes": str(2 << 30),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": "/trt_cache/fixture_encoder",
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": "/trt_cache/fixture_encoder",
        # all three numeric inputs (the optional one too: TensorRT needs a profile for every dynamic input)
        "trt_profile_min_shapes": "input_ids:1x1,attention_mask:1x1,token_type_ids:1x1",
        "trt_profile_opt_shapes": "input_ids:16x128,attention_mask:16x128,token_type_ids:16x128",
        "trt_profile_max_shapes": "input_ids:16x512,attention_mask:16x512,token_type_ids:16x512",
    }
    assert [(w.batch_size, sorted(w.inputs)) for w in gpu.model_warmup] == [
        (1, ["attention_mask", "input_ids"]),  # the optional input is left out of warm-up
        (16, ["attention_mask", "input_ids"]),
    ]
    for sample in gpu.model_warmup:
        for spec in sample.inputs.values():
            assert spec.zero_data and spec.data_type == mc.TYPE_INT64 and list(spec.dims) == [128]
    # the CPU thread setting and everything else stay
    assert gpu.parameters["intra_op_thread_count"].string_value == "2"
    assert gpu.dynamic_batching.max_queue_delay_microseconds == 2000


def test_onnx_overlay_cuda_and_fp32_and_gpu_list():
    cuda = gc.render_gpu_config(_fixture("fixture_encoder"), gc.GpuOptions(accelerator="cuda", gpus=(0, 1)))
    (acc,) = cuda.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "cuda" and dict(acc.parameters) == {}
    assert list(cuda.instance_group[0].gpus) == [0, 1]
    fp32 = gc.render_gpu_config(_fixture("fixture_encoder"), gc.GpuOptions(precision="FP32", onnx_instances=3))
    assert _trt_params(fp32)["precision_mode"] == "FP32"
    assert fp32.instance_group[0].count == 3


def test_static_shapes_get_no_profile():
    config = _fixture("fixture_encoder")
    config.max_batch_size = 0
    for tensor in config.input:
        tensor.dims[:] = [128]
    assert gc.trt_profile_shapes(config, gc.GpuOptions()) is None
    params = _trt_params(gc.render_gpu_config(config))
    assert not any(k.startswith("trt_profile") for k in params)
    warmup = gc.render_gpu_config(config).model_warmup
    assert [w.batch_size for w in warmup] == [1]


def test_tier_overlay_selects_cuda_provider_with_io_binding():
    gpu = gc.render_gpu_config(_fixture("tier_fixture"), gc.GpuOptions(tier_instances=2))
    assert gpu.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU and gpu.instance_group[0].count == 2
    assert gpu.parameters["execution_provider"].string_value == "CUDAExecutionProvider"
    assert gpu.parameters["io_binding"].string_value == "true"
    assert gpu.parameters["model_dir"].string_value == "model"
    assert gpu.model_transaction_policy.decoupled
    assert not gpu.HasField("optimization") and len(gpu.model_warmup) == 0


def test_other_python_models_are_unchanged():
    source = _fixture("fixture_router")
    assert gc.render_gpu_config(source) == source


@pytest.mark.parametrize("name", ["fixture_encoder", "tier_fixture", "fixture_router"])
def test_render_is_idempotent_and_text_round_trips(name):
    once = gc.render_gpu_config(_fixture(name))
    assert gc.render_gpu_config(once) == once
    assert gc.parse_config(gc.config_text(once)) == once


@pytest.mark.parametrize(
    "kwargs",
    [
        {"accelerator": "openvino"},
        {"precision": "INT4"},
        {"opt_seq_len": 1024},
        {"warmup_seq_len": 0},
        {"onnx_instances": 0},
        {"gpus": (-1,)},
    ],
)
def test_bad_options_are_refused(kwargs):
    with pytest.raises(gc.RenderError):
        gc.GpuOptions(**kwargs)


def _render_refused(tmp_path, folder, config, match):
    """Rendering a repository of one model, `folder` with `config` as its config.pbtxt, fails with `match`."""
    model = tmp_path / "repo" / folder
    model.mkdir(parents=True)
    (model / "config.pbtxt").write_text(config)
    with pytest.raises(gc.RenderError, match=match):
        gc.render_repository(tmp_path / "repo", tmp_path / "out")


def test_bad_source_config_names_the_file(tmp_path):
    _render_refused(tmp_path, "broken", 'name: "broken"\nmax_batch_size: "eight"\n', "broken/config.pbtxt")


def test_name_must_match_folder(tmp_path):
    _render_refused(tmp_path, "folder_name", 'name: "other_name"\nbackend: "python"\n', "differs from its folder")


# -- the repository render -------------------------------------------------------------------------------------------
def test_render_repository_copies_files_and_writes_gpu_configs(tmp_path):
    out = tmp_path / "gpu"
    rendered = gc.render_repository(FIXTURE_REPO, out)
    assert {(r.name, r.kind) for r in rendered} == {
        ("fixture_encoder", "onnx"),
        ("tier_fixture", "tier"),
        ("fixture_router", "unchanged"),
    }
    assert (out / gc.MARKER).is_file()
    assert (out / "tier_fixture" / "1" / "model.py").read_text() == (
        FIXTURE_REPO / "tier_fixture" / "1" / "model.py"
    ).read_text()
    text = (out / "fixture_encoder" / "config.pbtxt").read_text()
    assert text.startswith("# GENERATED by router_export.gpu_configs")
    assert gc.load_config(out / "fixture_encoder" / "config.pbtxt").instance_group[0].kind == (
        mc.ModelInstanceGroup.KIND_GPU
    )
    # the CPU source is untouched (the GPU config is never written through a hard link)
    assert gc.load_config(FIXTURE_REPO / "fixture_encoder" / "config.pbtxt") == _fixture("fixture_encoder")
    assert "KIND_CPU" in (FIXTURE_REPO / "fixture_encoder" / "config.pbtxt").read_text()


def test_rerender_syncs_and_drops_stale_models(tmp_path):
    source = tmp_path / "src"
    gc._sync_tree(FIXTURE_REPO, source)
    out = tmp_path / "gpu"
    gc.render_repository(source, out)
    (source / "tier_fixture" / "1" / "extra.txt").write_text("new file")
    import shutil

    shutil.rmtree(source / "fixture_router")
    (out / "tier_fixture" / "1" / "leftover.txt").write_text("stale")
    gc.render_repository(source, out)
    assert not (out / "fixture_router").exists()
    assert (out / "tier_fixture" / "1" / "extra.txt").read_text() == "new file"
    assert not (out / "tier_fixture" / "1" / "leftover.txt").exists()


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(gc.RenderError, match="refusing"):
        gc.render_repository(FIXTURE_REPO, out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_in_place_render(tmp_path):
    repo = tmp_path / "repo"
    gc._sync_tree(FIXTURE_REPO, repo)
    gc.render_repository(repo, None)
    gpu = gc.load_config(repo / "tier_fixture" / "config.pbtxt")
    assert gpu.parameters["execution_provider"].string_value == "CUDAExecutionProvider"
    # the fixture itself was not modified through a hard link
    assert "execution_provider" not in (FIXTURE_REPO / "tier_fixture" / "config.pbtxt").read_text()


def test_cli(tmp_path, capsys):
    out = tmp_path / "gpu"
    code = gc.main(["--model-repository", str(FIXTURE_REPO), "--out", str(out), "--accelerator", "cuda"])
    assert code == 0
    assert "fixture_encoder" in capsys.readouterr().out
    assert gc.main(["--model-repository", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


# -- whatever the project's repository holds right now ---------------------------------------------------------------
@pytest.mark.parametrize("path", PROJECT_CONFIGS, ids=[p.parent.name for p in PROJECT_CONFIGS])
def test_project_configs_render_without_drift(path):
    source = gc.load_config(path)
    gpu = gc.render_gpu_config(source)
    assert gc.strip_overlay(gpu) == gc.strip_overlay(source), "the overlay changed more than its own fields"
    kind = gc.model_kind(source)
    if kind == "unchanged":
        assert gpu == source
    else:
        assert [g.kind for g in gpu.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    if kind == "onnx":
        assert len(gpu.optimization.execution_accelerators.gpu_execution_accelerator) == 1
        assert gpu.model_warmup
    assert gc.parse_config(gc.config_text(gpu)) == gpu
