"""TensorRT-LLM tiers: build an engine from a Hugging Face checkpoint and a Triton repository that serves it.

Runs inside ``nvcr.io/nvidia/tritonserver:24.10-trtllm-python-py3`` (it has ``tensorrt_llm`` and
``trtllm-build``), with a checkout of ``triton-inference-server/tensorrtllm_backend`` at the tag that matches the
image (its ``tensorrt_llm/examples/<family>/convert_checkpoint.py`` and ``all_models/inflight_batcher_llm``).
Standard library only at import time, so it also runs as a plain script there::

    python3 export/router_export/trtllm.py engine --hf-dir /hf/Llama-3.1-8B-Instruct \\
        --examples-dir tensorrtllm_backend/tensorrt_llm/examples --family llama --dtype fp16 --tp-size 1 \\
        --out /trtllm/tier_medium
    python3 export/router_export/trtllm.py repo --templates tensorrtllm_backend/all_models/inflight_batcher_llm \\
        --out /trtllm/tier_medium/repository

The repository is TensorRT-LLM's inflight-batcher model set (ensemble = preprocessing -> tensorrt_llm ->
postprocessing, and tensorrt_llm_bls), decoupled so it streams. Its ``ensemble`` takes ``text_input``,
``max_tokens``, ``return_log_probs``, ``stop_words``, ... (batch dimension first: shape [1, 1]) and returns
``text_output``, ``output_log_probs`` and ``cum_log_probs``: the interface the router's tiers already follow,
reached as a remote tier (a second Triton server, gRPC URL + model ``ensemble``).
"""

from __future__ import annotations

import argparse
import inspect
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, TypeVar

DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
MODELS = ("ensemble", "preprocessing", "postprocessing", "tensorrt_llm", "tensorrt_llm_bls")
# What the router needs from the served model (inputs it sends, outputs it reads).
REQUIRED_INPUTS = ("text_input", "max_tokens")
REQUIRED_OUTPUTS = ("text_output", "output_log_probs", "cum_log_probs")
SERVED_MODELS = ("ensemble", "tensorrt_llm_bls")
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
T = TypeVar("T")


class TrtllmError(ValueError):
    """A bad option, template or generated config; the message says what to fix."""


# -- engine ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineOptions:
    hf_dir: Path
    out: Path
    examples_dir: Path
    family: str = "llama"
    dtype: str = "fp16"
    tp_size: int = 1
    pp_size: int = 1
    max_batch_size: int = 64
    max_input_len: int = 4096
    max_seq_len: int = 8192
    max_num_tokens: int = 8192
    convert_args: tuple[str, ...] = field(default_factory=tuple)
    build_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise TrtllmError(f"--dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.tp_size < 1 or self.pp_size < 1:
            raise TrtllmError("--tp-size and --pp-size must be >= 1")
        if not 1 <= self.max_input_len < self.max_seq_len:
            raise TrtllmError(f"need 1 <= max_input_len ({self.max_input_len}) < max_seq_len ({self.max_seq_len})")
        if self.max_batch_size < 1 or self.max_num_tokens < 1:
            raise TrtllmError("--max-batch-size and --max-num-tokens must be >= 1")

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoint"

    @property
    def engine_dir(self) -> Path:
        return self.out / "engine"

    @property
    def convert_script(self) -> Path:
        return self.examples_dir / self.family / "convert_checkpoint.py"


def engine_commands(opts: EngineOptions) -> list[list[str]]:
    """The two commands: HF checkpoint -> TensorRT-LLM checkpoint -> engine (one per TP x PP rank)."""
    dtype = DTYPES[opts.dtype]
    convert = [
        sys.executable,
        str(opts.convert_script),
        "--model_dir", str(opts.hf_dir),
        "--output_dir", str(opts.checkpoint_dir),
        "--dtype", dtype,
        "--tp_size", str(opts.tp_size),
        "--pp_size", str(opts.pp_size),
        *opts.convert_args,
    ]  # fmt: skip
    plugin = dtype if dtype != "float32" else "auto"
    build = [
        "trtllm-build",
        "--checkpoint_dir", str(opts.checkpoint_dir),
        "--output_dir", str(opts.engine_dir),
        "--gemm_plugin", plugin,
        "--gpt_attention_plugin", plugin,
        "--remove_input_padding", "enable",
        "--context_fmha", "enable",
        "--paged_kv_cache", "enable",
        "--max_batch_size", str(opts.max_batch_size),
        "--max_input_len", str(opts.max_input_len),
        "--max_seq_len", str(opts.max_seq_len),
        "--max_num_tokens", str(opts.max_num_tokens),
        "--workers", str(opts.tp_size * opts.pp_size),
        *opts.build_args,
    ]  # fmt: skip
    return [convert, build]


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "generation_config.json",
    "config.json",
)


def copy_tokenizer(hf_dir: Path, out: Path) -> Path:
    """Copy the tokenizer files next to the engine (the pre/postprocessing models load them)."""
    target = out / "tokenizer"
    target.mkdir(parents=True, exist_ok=True)
    copied = [name for name in TOKENIZER_FILES if (hf_dir / name).is_file()]
    if "tokenizer.json" not in copied and "tokenizer.model" not in copied:
        raise TrtllmError(f"{hf_dir} has no tokenizer.json or tokenizer.model")
    for name in copied:
        shutil.copy2(hf_dir / name, target / name)
    return target


def build_engine(opts: EngineOptions, dry_run: bool = False) -> None:
    if not dry_run:
        if not (opts.hf_dir / "config.json").is_file():
            raise TrtllmError(f"{opts.hf_dir} is not a Hugging Face checkpoint (no config.json)")
        if not opts.convert_script.is_file():
            raise TrtllmError(
                f"{opts.convert_script} not found: --examples-dir must be TensorRT-LLM's examples/ at the version "
                "of the image (tensorrtllm_backend/tensorrt_llm/examples), and --family a folder in it"
            )
    for cmd in engine_commands(opts):
        print("+", shlex.join(cmd), flush=True)
        if not dry_run:
            subprocess.run(cmd, check=True)
    if not dry_run:
        copy_tokenizer(opts.hf_dir, opts.out)


# -- Triton repository -------------------------------------------------------------------------------------------
def template_values(
    *,
    engine_dir: str,
    tokenizer_dir: str,
    max_batch_size: int,
    kv_cache_free_gpu_mem_fraction: float,
    instances: int,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Values for the inflight_batcher_llm templates: decoupled (streaming), log-probs ready, no beam search."""
    if not 0 < kv_cache_free_gpu_mem_fraction <= 1:
        raise TrtllmError("--kv-cache-free-gpu-mem-fraction must be in (0, 1]")
    values = {
        "triton_backend": "tensorrtllm",
        "triton_max_batch_size": str(max_batch_size),
        "decoupled_mode": "True",
        "max_beam_width": "1",
        "engine_dir": engine_dir,
        "tokenizer_dir": tokenizer_dir,
        "kv_cache_free_gpu_mem_fraction": str(kv_cache_free_gpu_mem_fraction),
        "exclude_input_in_output": "True",
        "enable_kv_cache_reuse": "False",
        "batching_strategy": "inflight_fused_batching",
        "max_queue_delay_microseconds": "0",
        "preprocessing_instance_count": str(instances),
        "postprocessing_instance_count": str(instances),
        "bls_instance_count": str(instances),
        "accumulate_tokens": "False",
        "tensorrt_llm_model_name": "tensorrt_llm",
        "logits_datatype": "TYPE_FP32",
        "encoder_input_features_data_type": "TYPE_FP16",
        "prompt_embedding_table_data_type": "TYPE_FP16",
    }
    values.update(extra or {})
    return values


def fill_template(text: str, values: dict[str, str], source: str) -> str:
    """Substitute ${key} placeholders; any left outside a string_value (an optional backend parameter) is an error."""
    filled = Template(text).safe_substitute(values)
    bad = []
    for number, line in enumerate(filled.splitlines(), 1):
        if "string_value" in line:
            continue  # unset optional parameter: the TensorRT-LLM backend ignores "${...}" values
        bad += [f"line {number}: ${{{name}}}" for name in PLACEHOLDER.findall(line)]
    if bad:
        raise TrtllmError(f"{source}: placeholders without a value ({', '.join(bad)}); pass them with --set KEY=VALUE")
    return filled


def check_interface(configs: dict[str, str]) -> None:
    """Parse each filled config into Triton's ModelConfig and check what the router calls is served."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2 as mc
    except ImportError:
        print("trtllm: tritonclient not installed here; skipped the ModelConfig check", file=sys.stderr)
        return
    parsed = {}
    for name, text in configs.items():
        config = mc.ModelConfig()
        try:
            text_format.Parse(text, config)
        except text_format.ParseError as exc:
            raise TrtllmError(f"{name}/config.pbtxt is not a valid ModelConfig: {exc}") from None
        if config.name != name:
            raise TrtllmError(f"{name}/config.pbtxt names the model {config.name!r}")
        parsed[name] = config
    for name in SERVED_MODELS:
        if name not in parsed:
            continue
        inputs = {t.name for t in parsed[name].input}
        outputs = {t.name for t in parsed[name].output}
        missing = [f"input {n}" for n in REQUIRED_INPUTS if n not in inputs]
        missing += [f"output {n}" for n in REQUIRED_OUTPUTS if n not in outputs]
        if missing:
            raise TrtllmError(f"{name} lacks what the router calls: {', '.join(missing)}")


def write_repository(templates: Path, out: Path, values: dict[str, str]) -> list[str]:
    """Copy the template models into `out`, fill their configs and validate them; returns the model names."""
    missing = [m for m in MODELS if not (templates / m / "config.pbtxt").is_file()]
    if missing:
        raise TrtllmError(f"{templates} lacks {missing}: pass tensorrtllm_backend's all_models/inflight_batcher_llm")
    filled = {
        m: fill_template((templates / m / "config.pbtxt").read_text(encoding="utf-8"), values, f"{m}/config.pbtxt")
        for m in MODELS
    }
    check_interface(filled)
    out.mkdir(parents=True, exist_ok=True)
    for model in MODELS:
        target = out / model
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(templates / model, target, ignore=shutil.ignore_patterns("__pycache__"))
        (target / "config.pbtxt").write_text(filled[model], encoding="utf-8")
        (target / "1").mkdir(exist_ok=True)  # tensorrt_llm's version folder is empty in the templates
    return list(MODELS)


def _parse_set(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TrtllmError(f"--set expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _from_flags(target: Callable[..., T], args: argparse.Namespace, **given: Any) -> T:
    """`target(...)` with each parameter from the parsed flag whose dest is its name; `given` sets the others."""
    names = [name for name in inspect.signature(target).parameters if name not in given]
    return target(**{name: getattr(args, name) for name in names}, **given)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trtllm", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    eng = sub.add_parser("engine", help="HF checkpoint -> TensorRT-LLM engine (+ tokenizer files) under --out")
    eng.add_argument("--hf-dir", type=Path, required=True)
    eng.add_argument("--out", type=Path, required=True, help="writes checkpoint/, engine/ and tokenizer/ here")
    eng.add_argument("--examples-dir", type=Path, required=True, help="TensorRT-LLM's examples/ directory")
    eng.add_argument("--family", default="llama", help="examples/<family>/convert_checkpoint.py (llama, qwen, ...)")
    eng.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    eng.add_argument("--tp-size", type=int, default=1)
    eng.add_argument("--pp-size", type=int, default=1)
    eng.add_argument("--max-batch-size", type=int, default=64)
    eng.add_argument("--max-input-len", type=int, default=4096)
    eng.add_argument("--max-seq-len", type=int, default=8192)
    eng.add_argument("--max-num-tokens", type=int, default=8192)
    eng.add_argument("--convert-arg", action="append", default=[], help="extra convert_checkpoint.py argument")
    eng.add_argument("--build-arg", action="append", default=[], help="extra trtllm-build argument")
    eng.add_argument("--dry-run", action="store_true", help="print the commands only")
    rep = sub.add_parser("repo", help="fill TensorRT-LLM's inflight_batcher_llm templates for one tier")
    rep.add_argument(
        "--templates", type=Path, required=True, help="tensorrtllm_backend/all_models/inflight_batcher_llm"
    )
    rep.add_argument("--out", type=Path, required=True)
    rep.add_argument("--engine-dir", default="/trtllm/engine", help="engine path as the server sees it")
    rep.add_argument("--tokenizer-dir", default="/trtllm/tokenizer", help="tokenizer path as the server sees it")
    rep.add_argument("--max-batch-size", type=int, default=64)
    rep.add_argument("--kv-cache-free-gpu-mem-fraction", type=float, default=0.85)
    rep.add_argument("--instances", type=int, default=1, help="pre/postprocessing and BLS instances")
    rep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other template value")
    args = parser.parse_args(argv)
    try:
        if args.command == "engine":
            extra_args = {"convert_args": tuple(args.convert_arg), "build_args": tuple(args.build_arg)}
            build_engine(_from_flags(EngineOptions, args, **extra_args), dry_run=args.dry_run)
        else:
            values = _from_flags(template_values, args, extra=_parse_set(args.set))
            models = write_repository(args.templates, args.out, values)
            print(f"wrote {', '.join(models)} to {args.out}")
    except TrtllmError as exc:
        print(f"trtllm: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"trtllm: command failed with exit code {exc.returncode}: {shlex.join(exc.cmd)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
