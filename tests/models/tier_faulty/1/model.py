"""Test-only tier that always fails.

By default it answers each request with an error response plus the FINAL flag (a tier that reports its failure).
A prompt starting with "raise:" makes execute() raise instead (a tier with a bug): Triton then answers every request
of that execute() call with an error itself.
"""

import triton_python_backend_utils as pb_utils

RAISE_PREFIX = b"raise:"


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0]
            if isinstance(text, bytes) and text.startswith(RAISE_PREFIX):
                raise RuntimeError("injected fault: tier_faulty raised in execute()")
        for request in requests:
            sender = request.get_response_sender()
            error = pb_utils.TritonError("injected fault: tier_faulty always fails")
            sender.send(pb_utils.InferenceResponse(error=error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
