"""Intent classifier: taxonomy, tokenization (shared by training and serving) and the Triton model logic.

`__init__`, `tokenization` and `postprocess` are Triton-free (unit tests and the exporter import them);
`triton_models` runs inside Triton's Python backend.
"""

from __future__ import annotations

from pathlib import Path

# The taxonomy, in the order of the classifier's `intent_probs` output.
INTENTS: tuple[str, ...] = (
    "summarization",
    "extraction",
    "classification",
    "factual_qa",
    "rewriting",
    "creative_writing",
    "coding",
    "reasoning",
    "planning",
)


def read_labels(path: Path) -> list[str]:
    """A labels file: one label per line, in output order (blank lines ignored)."""
    labels = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not labels:
        raise ValueError(f"labels file {path} is empty")
    return labels
