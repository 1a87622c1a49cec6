"""intent_tokenizer: prompt text -> token ids for the intent encoder (logic in llm_router.classifier)."""

from llm_router.classifier.triton_models import TokenizerModel as TritonPythonModel  # noqa: F401
