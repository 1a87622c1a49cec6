"""GGUF files as a tier source: dequantize one into a Hugging Face checkpoint directory that optimum can export.

transformers reads GGUF (with the `gguf` package) and dequantizes its weights to FP32, so `router-export-tier` exports
the model as it would a checkpoint; the quantization used for serving is chosen again at export (`--quantize`).
The checkpoint is cached under `artifacts/gguf_cache/<file stem>-<fingerprint>/` and reused while the file is unchanged.

Two tokenizer settings are taken from the GGUF metadata rather than from transformers' conversion, which (4.57) adds
a BOS post-processor whatever `tokenizer.ggml.add_bos_token` says and names the BOS token as the EOS token of the
tokenizer config: the tokenizer adds BOS only when the file says so, and its eos/pad tokens are those of the file's
token ids (SmolLM2: no BOS on plain text, `<|im_end|>` ends a turn).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

GGUF_MAGIC = b"GGUF"
CONVERTED_MARKER = "gguf_source.json"
CONVERTER_VERSION = 1


class GgufError(RuntimeError):
    """The GGUF file cannot be used; the message says why."""


def is_gguf(path: Path) -> bool:
    """True for a file that starts with the GGUF magic (whatever its name)."""
    path = Path(path)
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(4) == GGUF_MAGIC


def file_fingerprint(path: Path) -> str:
    """Cheap identity of a file (name, size, modification time); the weights are not read."""
    stat = Path(path).stat()
    return hashlib.sha256(f"{Path(path).name}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()


def check_gguf(path: Path) -> None:
    """Raise GgufError unless path is a readable GGUF file whose architecture transformers can load."""
    path = Path(path)
    if not path.exists():
        raise GgufError(f"{path} does not exist")
    if not path.is_file():
        raise GgufError(f"{path} is not a file")
    if not is_gguf(path):
        raise GgufError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    architecture = metadata(path).get("general.architecture")
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    supported = sorted(set(GGUF_CONFIG_MAPPING) - {"general", "tokenizer"})  # those two are not architectures
    if architecture not in supported:
        raise GgufError(
            f"{path}: GGUF architecture {architecture!r} is not supported by transformers' GGUF loader "
            f"(supported: {', '.join(supported)})"
        )


def metadata(path: Path) -> dict[str, object]:
    """The scalar and string key/values of a GGUF file's header (not the tensors, nor the token lists)."""
    try:
        from gguf import GGUFReader
    except ImportError as exc:  # the export extra installs it
        raise GgufError("reading GGUF files needs the `gguf` package: pip install -e '.[export]'") from exc
    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - the reader raises ValueError, struct.error, ... on damaged files
        raise GgufError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    values: dict[str, object] = {}
    for key, field in reader.fields.items():
        if len(field.data) != 1:  # arrays (token lists, merges) are not needed here
            continue
        part = field.parts[field.data[0]]
        if field.types and field.types[0].name == "STRING":
            values[key] = bytes(part).decode("utf-8", errors="replace")
        elif part.size == 1:
            values[key] = part.tolist()[0]
    return values


def cache_dir_for(path: Path, cache_root: Path) -> Path:
    return Path(cache_root) / f"{Path(path).stem}-{file_fingerprint(path)[:12]}"


def converted_is_current(path: Path, hf_dir: Path) -> bool:
    marker = hf_dir / CONVERTED_MARKER
    if not marker.exists() or not (hf_dir / "config.json").exists():
        return False
    try:
        return json.loads(marker.read_text()) == marker_for(path)
    except (OSError, ValueError):
        return False


def marker_for(path: Path) -> dict[str, object]:
    return {
        "converter_version": CONVERTER_VERSION,
        "gguf": str(Path(path).resolve()),
        "fingerprint": file_fingerprint(path),
    }


def fix_tokenizer(tokenizer, info: dict[str, object]) -> None:
    """Apply the GGUF file's BOS and EOS/pad settings to a transformers tokenizer converted from it."""
    add_bos = info.get("tokenizer.ggml.add_bos_token")
    if add_bos is not None and hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = bool(add_bos)  # LlamaTokenizerFast rebuilds its post-processor from this
    for key, attribute in (
        ("tokenizer.ggml.eos_token_id", "eos_token"),
        ("tokenizer.ggml.padding_token_id", "pad_token"),
    ):
        token_id = info.get(key)
        if isinstance(token_id, int) and 0 <= token_id < len(tokenizer):
            setattr(tokenizer, attribute, tokenizer.convert_ids_to_tokens(token_id))


def convert(path: Path, cache_root: Path, force: bool = False) -> Path:
    """The Hugging Face checkpoint directory of a GGUF file (converted once, then reused); raises GgufError."""
    path = Path(path)
    check_gguf(path)
    hf_dir = cache_dir_for(path, cache_root)
    if not force and converted_is_current(path, hf_dir):
        return hf_dir
    info = metadata(path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir.parent.mkdir(parents=True, exist_ok=True)
    print(f"[gguf] dequantizing {path} -> {hf_dir}", flush=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype="float32")
    except Exception as exc:  # noqa: BLE001 - transformers raises many types; the message is what matters
        raise GgufError(f"transformers could not load {path} ({type(exc).__name__}: {exc})") from exc
    fix_tokenizer(tokenizer, info)
    # Stage, then rename: an interrupted conversion never looks current.
    staged = Path(tempfile.mkdtemp(prefix=f".{hf_dir.name}-", dir=hf_dir.parent))
    try:
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        (staged / CONVERTED_MARKER).write_text(json.dumps(marker_for(path), indent=2) + "\n")
        if hf_dir.exists():
            shutil.rmtree(hf_dir)
        os.replace(staged, hf_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    for stale in hf_dir.parent.glob(f"{path.stem}-*"):  # older conversions of the same file name
        if stale != hf_dir and stale.is_dir() and not stale.name.startswith("."):
            shutil.rmtree(stale, ignore_errors=True)
    return hf_dir
