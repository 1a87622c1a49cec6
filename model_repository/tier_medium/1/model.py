"""Tier model: the shared implementation in llm_router.tier.model (decoupled, TensorRT-LLM-style interface)."""

from llm_router.tier.model import TritonPythonModel  # noqa: F401
