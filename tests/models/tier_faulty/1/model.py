"""Test-only tier that always fails (an error response plus the FINAL flag, as a broken tier would)."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            error = pb_utils.TritonError("injected fault: tier_faulty always fails")
            sender.send(pb_utils.InferenceResponse(error=error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
