"""intent_postprocess: intent probabilities -> intent label (logic in llm_router.classifier)."""

from llm_router.classifier.triton_models import PostprocessModel as TritonPythonModel  # noqa: F401
