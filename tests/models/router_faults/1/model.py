"""Test-only router (same code as `router`) with a policy that chains broken tiers."""

from llm_router.router.model import UnaryRouterModel as TritonPythonModel  # noqa: F401
