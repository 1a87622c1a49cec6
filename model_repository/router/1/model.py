"""`router`: the unary cascade (logic in llm_router.router.model)."""

from llm_router.router.model import UnaryRouterModel as TritonPythonModel  # noqa: F401
