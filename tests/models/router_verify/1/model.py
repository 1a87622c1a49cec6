"""Test-only router (same code as `router`) whose policy has self-verifying tiers (test_self_verify.py)."""

from llm_router.router.model import UnaryRouterModel as TritonPythonModel  # noqa: F401
