"""Test-only router (same code as `router`) with a policy that names remote tiers."""

from llm_router.router.model import UnaryRouterModel as TritonPythonModel  # noqa: F401
