"""`router-export-tier`: export a Hugging Face causal-LM directory or a GGUF file as a tier of the model repository.

A GGUF file (e.g. a llama.cpp download) is first dequantized into a Hugging Face checkpoint under
`artifacts/gguf_cache/` (router_export.gguf_source), then exported like a checkpoint directory. Writes, with optimum's
`text-generation-with-past` task (one ONNX decoder that takes and returns the KV cache):

    model_repository/<tier>/1/model/model.onnx (+ model.onnx_data for large models)
    model_repository/<tier>/1/model/{config.json, generation_config.json, tokenizer.json, tokenizer_config.json, ...}
    model_repository/<tier>/1/model/export.json   (what was exported, with which options: the up-to-date stamp)

and `model_repository/<tier>/config.pbtxt` from the tier template when the tier has none yet. Options: `--dtype fp16`
for GPU hosts (CUDA provider); `--quantize` for CPU serving: `int8` is onnxruntime dynamic INT8 quantization (weights
and, at run time, activations of MatMul/Gather), `int4` weight-only 4-bit MatMulNBits (blocks of 32 along the input
dimension, symmetric, one FP32 scale per block; activations and the embedding stay FP32). Small models lose much more
to dynamic INT8 than to 4-bit weights (SmolLM2-135M: README "Tier models").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from llm_router.protocol import missing_tier_interface, read_model_config

from router_export.gguf_source import file_fingerprint

TASK = "text-generation-with-past"
MODEL_SUBDIR = "model"
STAMP = "export.json"
EXPORT_VERSION = 2
QUANTIZATIONS = ("none", "int8", "int4")
INT4_BLOCK_SIZE = 32
GGUF_CACHE = Path("artifacts") / "gguf_cache"
# Files copied next to the ONNX decoder (those that exist); the tier model reads tokenizer.json,
# config.json and generation_config.json.
SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
TIER_CONFIG_TEMPLATE = """\
# Tier "${tier}": a decoupled Python-backend LLM with TensorRT-LLM's tensorrt_llm_bls interface (see
# python_backend/llm_router/tier/model.py). Weights: ${tier}/1/model/ (router-export-tier / router-build-tiny-tiers).
# Call it with the gRPC streaming API (or perf_analyzer --streaming); each request carries one prompt, shape [1, 1].
name: "${tier}"
backend: "python"
max_batch_size: 8
model_transaction_policy { decoupled: true }
dynamic_batching { max_queue_delay_microseconds: 1000 }
input [
  { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "messages" data_type: TYPE_STRING dims: [ 1 ] optional: true },
  { name: "raw" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "temperature" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
  { name: "top_p" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
  { name: "top_k" data_type: TYPE_INT32 dims: [ 1 ] optional: true },
  { name: "random_seed" data_type: TYPE_UINT64 dims: [ 1 ] optional: true },
  { name: "stop_words" data_type: TYPE_STRING dims: [ -1 ] optional: true },
  { name: "end_id" data_type: TYPE_INT32 dims: [ 1 ] optional: true },
  { name: "return_log_probs" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true }
]
output [
  { name: "text_output" data_type: TYPE_STRING dims: [ -1 ] },
  { name: "output_log_probs" data_type: TYPE_FP32 dims: [ -1, -1 ] },
  { name: "cum_log_probs" data_type: TYPE_FP32 dims: [ -1 ] },
  { name: "input_tokens" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "output_tokens" data_type: TYPE_INT32 dims: [ 1 ] }
]
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "model_dir" value { string_value: "model" } }
parameters { key: "execution_provider" value { string_value: "CPUExecutionProvider" } }
parameters { key: "io_binding" value { string_value: "false" } }
parameters { key: "intra_op_thread_count" value { string_value: "1" } }
parameters { key: "generation_threads" value { string_value: "4" } }
parameters { key: "batching" value { string_value: "true" } }
"""


class ExportError(RuntimeError):
    """The export cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class ExportOptions:
    """Where the tier goes and how it is exported."""

    tier: str
    model_repository: Path = Path("model_repository")
    version: str = "1"
    dtype: str = "fp32"
    quantize: str = "none"
    opset: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in ("fp32", "fp16"):
            raise ExportError(f"--dtype must be fp32 or fp16, not {self.dtype!r}")
        if self.quantize not in QUANTIZATIONS:
            raise ExportError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, not {self.quantize!r}")
        if self.quantize != "none" and self.dtype != "fp32":
            raise ExportError(
                f"--quantize {self.quantize} quantizes an fp32 export for CPU; do not combine it with --dtype fp16"
            )
        if not self.tier or "/" in self.tier or self.tier.startswith("."):
            raise ExportError(f"--tier must be a Triton model name (e.g. tier_small), not {self.tier!r}")

    @property
    def target(self) -> Path:
        return Path(self.model_repository) / self.tier / self.version / MODEL_SUBDIR


def source_fingerprint(hf_dir: Path) -> str:
    """Hash of the source's file names, sizes and modification times (cheap; weights are not read)."""
    if Path(hf_dir).is_file():
        return file_fingerprint(hf_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(hf_dir).rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(hf_dir)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def stamp_for(hf_dir: Path, options: ExportOptions) -> dict:
    return {
        "export_version": EXPORT_VERSION,
        "task": TASK,
        "source": str(Path(hf_dir).resolve()),
        "source_fingerprint": source_fingerprint(hf_dir),
        "dtype": options.dtype,
        "quantize": options.quantize,
        **({"int4_block_size": INT4_BLOCK_SIZE} if options.quantize == "int4" else {}),
        "opset": options.opset,
    }


def tier_is_current(hf_dir: Path, options: ExportOptions) -> bool:
    """True when the tier was exported from this very source with these options."""
    stamp = options.target / STAMP
    if not stamp.exists() or not (options.target / "model.onnx").exists():
        return False
    try:
        return json.loads(stamp.read_text()) == stamp_for(hf_dir, options)
    except (OSError, ValueError):
        return False


def check_source(hf_dir: Path) -> str:
    """Validate the source directory; return its model_type. Raises ExportError with a clear message."""
    hf_dir = Path(hf_dir)
    if hf_dir.is_file():
        raise ExportError(
            f"{hf_dir} is a file but not a GGUF file; give a GGUF file or a local Hugging Face model directory"
        )
    if not hf_dir.is_dir():
        raise ExportError(
            f"model directory {hf_dir} does not exist (give a local Hugging Face model directory or a GGUF file)"
        )
    config_path = hf_dir / "config.json"
    if not config_path.exists():
        raise ExportError(f"{hf_dir} has no config.json; it is not a Hugging Face model directory")
    if not (hf_dir / "tokenizer.json").exists():
        raise ExportError(
            f"{hf_dir} has no tokenizer.json (a fast tokenizer); save one with "
            "AutoTokenizer.from_pretrained(...).save_pretrained(dir)"
        )
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:
        raise ExportError(f"{config_path} is not valid JSON: {exc}") from None
    model_type = config.get("model_type")
    if not model_type:
        raise ExportError(f"{config_path} has no model_type")
    import optimum.exporters.onnx.model_configs  # noqa: F401 - registers the ONNX configs with TasksManager
    from optimum.exporters.tasks import TasksManager

    try:
        tasks = TasksManager.get_supported_tasks_for_model_type(model_type, "onnx", library_name="transformers")
    except KeyError:
        tasks = {}
    if TASK not in tasks:
        raise ExportError(
            f"architecture {model_type!r} ({', '.join(config.get('architectures') or ['?'])}) is not supported "
            f"by optimum's ONNX exporter for {TASK}; supported decoder types include llama, mistral, qwen2, "
            "gemma, phi3, gpt2"
        )
    return model_type


def quantize_int8(model_path: Path, out_path: Path) -> None:
    """onnxruntime dynamic quantization: INT8 weights of MatMul/Gather, activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        model_path,
        out_path,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gather"],
        use_external_data_format=model_path.with_suffix(".onnx_data").exists(),
        extra_options={"MatMulConstBOnly": True},
    )


def quantize_int4(model_path: Path, out_path: Path) -> None:
    """onnxruntime weight-only 4-bit quantization of every MatMul with a constant weight into MatMulNBits.

    Symmetric (no zero points) blocks of INT4_BLOCK_SIZE along the input dimension, one FP32 scale per block; the
    activations stay FP32 and so does the embedding Gather (onnxruntime's default op_types_to_quantize is MatMul).
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # The quantizer logs every node it visits at INFO (thousands of lines).
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(model_path)),
        bits=4,
        block_size=INT4_BLOCK_SIZE,
        is_symmetric=True,
        op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    # The 4-bit model is about a third of the FP32 one; external data only when protobuf's 2 GB limit needs it.
    large = quantizer.model.model.ByteSize() > 1_800_000_000
    quantizer.model.save_model_to_file(str(out_path), use_external_data_format=large)


def tier_config_text(tier: str) -> str:
    """The config.pbtxt of a CPU tier (gpu_configs renders the GPU overlay from it)."""
    return TIER_CONFIG_TEMPLATE.replace("${tier}", tier)


def write_tier_config(options: ExportOptions) -> Path | None:
    """config.pbtxt for a new tier from the template (an existing one is left alone)."""
    config = Path(options.model_repository) / options.tier / "config.pbtxt"
    if config.exists():
        return None
    config.write_text(tier_config_text(options.tier))
    model_py = Path(options.model_repository) / options.tier / options.version / "model.py"
    if not model_py.exists():
        model_py.write_text(
            '"""Tier model: the shared tier implementation in llm_router.tier."""\n\n'
            "from llm_router.tier.model import TritonPythonModel  # noqa: F401\n"
        )
    return config


def default_gguf_cache(options: ExportOptions) -> Path:
    """Where GGUF sources are dequantized: artifacts/gguf_cache next to the model repository."""
    return Path(options.model_repository).resolve().parent / GGUF_CACHE


def export_tier(source: Path, options: ExportOptions, gguf_cache: Path | None = None) -> Path:
    """Export a checkpoint directory or GGUF file into the model repository as options.tier; returns the folder written.

    A GGUF source is dequantized into a checkpoint under gguf_cache (default: `default_gguf_cache`) first; the stamp
    names the GGUF file, so the tier stays current while the file is unchanged.
    """
    from tqdm import tqdm

    from router_export import gguf_source

    source = Path(source)
    repo = Path(options.model_repository)
    if not repo.is_dir():
        raise ExportError(f"model repository {repo} does not exist")
    if source.is_file() and gguf_source.is_gguf(source):
        try:
            hf_dir = gguf_source.convert(source, gguf_cache or default_gguf_cache(options))
        except gguf_source.GgufError as exc:
            raise ExportError(str(exc)) from None
    else:
        hf_dir = source
    check_source(hf_dir)
    quantize_step = {"int8": "quantize INT8", "int4": "quantize INT4"}.get(options.quantize)
    steps = ["export ONNX", *([quantize_step] if quantize_step else []), "install files"]
    progress = tqdm(total=len(steps), desc=f"export {options.tier}", unit="step", file=sys.stdout)
    target = options.target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{options.tier}-", dir=target.parent) as tmp:
        tmp_path = Path(tmp)
        onnx_dir = tmp_path / "onnx"
        progress.set_postfix_str(steps[0])
        from optimum.exporters.onnx import main_export

        # tracing and deprecation notes about transformers' and torch's own code: nothing the user can act on
        warnings.filterwarnings("ignore", module=r"(transformers|torch\.onnx)\.")
        logging.getLogger("transformers").setLevel(logging.ERROR)
        logging.getLogger("optimum").setLevel(logging.ERROR)  # e.g. its note on tied embedding weights
        try:
            main_export(
                str(hf_dir),
                output=onnx_dir,
                task=TASK,
                dtype=options.dtype,
                device="cuda" if options.dtype == "fp16" else "cpu",
                opset=options.opset,
                local_files_only=True,
                do_validation=False,
                library_name="transformers",
            )
        except Exception as exc:  # noqa: BLE001 - optimum raises many types; the message is what matters
            raise ExportError(f"optimum could not export {hf_dir} ({type(exc).__name__}: {exc})") from exc
        progress.update()
        if not (onnx_dir / "model.onnx").exists():
            raise ExportError(
                f"optimum wrote no model.onnx in {onnx_dir}: {sorted(p.name for p in onnx_dir.iterdir())}"
            )
        staged = tmp_path / MODEL_SUBDIR
        staged.mkdir()
        if quantize_step:
            progress.set_postfix_str(quantize_step)
            quantize = quantize_int8 if options.quantize == "int8" else quantize_int4
            quantize(onnx_dir / "model.onnx", staged / "model.onnx")
            progress.update()
        else:
            for name in ("model.onnx", "model.onnx_data"):
                if (onnx_dir / name).exists():
                    shutil.move(onnx_dir / name, staged / name)
        progress.set_postfix_str("install files")
        for name in SIDE_FILES:
            side_file = onnx_dir / name if (onnx_dir / name).exists() else hf_dir / name
            if side_file.exists():
                shutil.copy2(side_file, staged / name)
        (staged / STAMP).write_text(json.dumps(stamp_for(source, options), indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
        progress.update()
    progress.close()
    created = write_tier_config(options)
    if created is not None:
        print(f"wrote {created} from the tier template; review instance count and parameters", flush=True)
    print(f"{options.tier}: exported {source} -> {target}", flush=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="router-export-tier", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="local Hugging Face causal-LM directory, or a GGUF file")
    parser.add_argument(
        "--tier",
        "--model-name",
        dest="tier",
        required=True,
        help="Triton model name of the tier (tier_small, tier_medium, tier_large, ...)",
    )
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--version", default="1", help="model version folder (default 1)")
    parser.add_argument(
        "--dtype",
        choices=["fp32", "fp16"],
        default="fp32",
        help="fp16 exports on a CUDA device, for the CUDA provider on GPU hosts",
    )
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        default=None,
        help="CPU serving: int8 = onnxruntime dynamic INT8; int4 = weight-only 4-bit MatMulNBits, block "
        f"{INT4_BLOCK_SIZE}, symmetric (default none)",
    )
    parser.add_argument("--int8", action="store_true", help="the same as --quantize int8")
    parser.add_argument(
        "--gguf-cache",
        type=Path,
        default=None,
        help=f"where a GGUF source is dequantized (default: <model repository>/../{GGUF_CACHE})",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: optimum's choice)")
    parser.add_argument("--force", action="store_true", help="export even when the tier is up to date")
    args = parser.parse_args(argv)
    if args.int8 and args.quantize not in (None, "int8"):
        parser.error(f"--int8 contradicts --quantize {args.quantize}")
    try:
        options = ExportOptions(
            tier=args.tier,
            model_repository=args.model_repository,
            version=args.version,
            dtype=args.dtype,
            quantize="int8" if args.int8 else (args.quantize or "none"),
            opset=args.opset,
        )
        existing = Path(options.model_repository) / options.tier / "config.pbtxt"  # a tier name, not router's
        if existing.exists() and (lacks := missing_tier_interface(read_model_config(existing))):
            raise ExportError(
                f"{options.tier!r} in {options.model_repository} is not a tier (its config.pbtxt lacks "
                f"{', '.join(lacks)}); give a tier's name (e.g. tier_small) or a new one"
            )
        if not args.force and tier_is_current(args.model_dir, options):
            print(f"{options.tier} is up to date ({options.target}); --force to export again")
            return 0
        export_tier(args.model_dir, options, gguf_cache=args.gguf_cache)
    except ExportError as exc:
        print(f"router-export-tier: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
