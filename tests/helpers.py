"""Test helpers shared by the integration tests."""

from __future__ import annotations

from llm_router.smoke_model import (  # noqa: F401
    IN_FEATURES,
    OUT_FEATURES,
    SMOKE_MODEL,
    dense_onnx_model,
    write_smoke_repository,
)
