"""Test-only streaming router (same code as `router_stream`) following router_verify's self-verifying policy."""

from llm_router.router.model import StreamingRouterModel as TritonPythonModel  # noqa: F401
