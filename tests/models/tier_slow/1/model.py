"""Test-only tier that answers only after SLOW_SECONDS, past any deadline the test policy gives it."""

import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

SLOW_SECONDS = 4.0


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self._answer_late, args=(request.get_response_sender(),), daemon=True).start()
        return None

    def _answer_late(self, sender):
        time.sleep(SLOW_SECONDS)
        outputs = [
            pb_utils.Tensor("text_output", np.array([[b"too late"]], dtype=np.object_)),
            pb_utils.Tensor("output_log_probs", np.array([[-0.1, -0.1]], dtype=np.float32)),
            pb_utils.Tensor("input_tokens", np.array([[3]], dtype=np.int32)),
            pb_utils.Tensor("output_tokens", np.array([[2]], dtype=np.int32)),
        ]
        sender.send(
            pb_utils.InferenceResponse(output_tensors=outputs), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        )
