"""Intent classifier: taxonomy, tokenization (shared by training and serving) and the Triton model logic.

`__init__` and `tokenization` are Triton-free (unit tests and the exporter import them);
`triton_models` runs inside Triton's Python backend.
"""

from __future__ import annotations

from pathlib import Path

from llm_router.core.policy import INTENTS  # the taxonomy, in the order of `intent_probs`  # noqa: F401


def read_labels(path: Path) -> list[str]:
    """A labels file: one label per line, in output order (blank lines ignored)."""
    labels = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not labels:
        raise ValueError(f"labels file {path} is empty")
    return labels
