"""The intent classifier's Python-backend model `intent_tokenizer` (the label lookup is in the ONNX graph).

It sees every request Triton's dynamic batcher hands them in one `execute` call and process them together;
a bad request gets its own INVALID_ARG response and does not fail the others.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from llm_router.classifier.tokenization import IntentTokenizer
from llm_router.triton_utils import (
    RequestError,
    decode_text,
    error_response,
    invalid_arg,
    model_parameter,
    shorten_gil_switch_interval,
)


def decode_texts(request: Any, name: str = "text") -> list[str]:
    """The UTF-8 strings of a BYTES input [batch, 1] (or [1]); raises RequestError for bad ones."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise RequestError(f"missing required input '{name}'")
    values = tensor.as_numpy().reshape(-1)
    if values.size == 0:
        raise RequestError(f"input '{name}' holds no string")
    texts = []
    for index, value in enumerate(values):
        value = decode_text(value, f"input '{name}'[{index}]")
        if not value.strip():
            raise RequestError(f"input '{name}'[{index}] is empty or whitespace; send a non-empty prompt")
        texts.append(value)
    return texts


class TokenizerModel:
    """Text -> input_ids/attention_mask INT64 [batch, bucket]; one tokenizer call for all requests."""

    def initialize(self, args: dict[str, Any]) -> None:
        shorten_gil_switch_interval()
        config = json.loads(args["model_config"])
        tokenizer_file = model_parameter(config, "tokenizer_file")
        self.tokenizer = IntentTokenizer(Path(tokenizer_file) if tokenizer_file else None)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        texts: list[str] = []
        owners: list[tuple[int, int]] = []  # (request index, number of texts)
        for i, request in enumerate(requests):
            try:
                request_texts = decode_texts(request)
            except Exception as exc:  # noqa: BLE001 - answer this request with an error, keep the others
                responses[i] = error_response(exc)
                continue
            owners.append((i, len(request_texts)))
            texts.extend(request_texts)
        if texts:
            try:
                ids = self.tokenizer.token_ids(texts)
            except Exception as exc:  # noqa: BLE001
                for i, _ in owners:
                    responses[i] = error_response(exc)
                return responses
            start = 0
            for i, count in owners:
                batch = self.tokenizer.pad(ids[start : start + count])
                start += count
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("input_ids", batch.input_ids),
                        pb_utils.Tensor("attention_mask", batch.attention_mask),
                    ]
                )
        return responses

    def finalize(self) -> None:
        self.tokenizer = None


__all__ = ["TokenizerModel", "decode_texts", "invalid_arg"]
