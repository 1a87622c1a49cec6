"""`router_stream`: the streaming cascade with hold-back (logic in llm_router.router.model)."""

from llm_router.router.model import StreamingRouterModel as TritonPythonModel  # noqa: F401
