"""Test-only tier whose answer and self-verification verdict are scripted by markers in the prompt.

An answer call (any prompt but a verification prompt) answers ANSWER_PIECES (each piece one token with its log-prob),
or nothing when the prompt holds "answer=blank". A verification prompt (it ends with VERIFY_SUFFIX, as
llm_router.core.self_verify.build_verification_prompt writes it) is answered by the marker its question holds:
"verify=yes" / "verify=no" (VERDICT_PIECES), "verify=error" (an error response), "verify=slow" (an answer only after
SLOW_SECONDS, past the deadline the test policy gives this tier). `input_tokens` is the number of whitespace-separated
words of the prompt, `output_tokens` the number of tokens answered. `stream` true sends one response per piece.
"""

import json
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
VERIFY_SUFFIX = "Is the proposed answer correct? Answer Yes or No."
ANSWER_PIECES = [("Paris", -0.1), (" is", -0.2), (" the", -0.3), (" capital", -0.4), (".", -0.5)]
VERDICT_PIECES = {
    "verify=yes": [(" ", -0.01), ("Yes", -0.05), (".", -0.7)],  # a blank first piece: the verdict is the second
    "verify=no": [("No", -0.2), (".", -0.3)],
}
SLOW_SECONDS = 4.0


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)[0]


def _prompt(request) -> str:
    messages = _input(request, "messages")
    if messages is not None:
        turns = json.loads(messages.decode("utf-8"))
        return next(t["content"] for t in reversed(turns) if t["role"] == "user")
    return _input(request, "text_input").decode("utf-8")


def _response(text: str, logprobs: list[float], input_tokens: int, output_tokens: int):
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("text_output", np.array([[text.encode("utf-8")]], dtype=np.object_)),
            pb_utils.Tensor("output_log_probs", np.array([logprobs], dtype=np.float32)),
            pb_utils.Tensor("input_tokens", np.array([[input_tokens]], dtype=np.int32)),
            pb_utils.Tensor("output_tokens", np.array([[output_tokens]], dtype=np.int32)),
        ]
    )


def _send(sender, pieces, input_tokens: int, stream: bool) -> None:
    if not pieces:
        sender.send(_response("", [], input_tokens, 0), flags=FINAL)
        return
    if not stream:
        text = "".join(t for t, _ in pieces)
        sender.send(_response(text, [lp for _, lp in pieces], input_tokens, len(pieces)), flags=FINAL)
        return
    for count, (text, logprob) in enumerate(pieces, start=1):
        sender.send(_response(text, [logprob], input_tokens, count), flags=FINAL if count == len(pieces) else 0)


def _slow(sender, pieces, input_tokens: int, stream: bool) -> None:
    time.sleep(SLOW_SECONDS)
    _send(sender, pieces, input_tokens, stream)


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            prompt = _prompt(request)
            stream = bool(_input(request, "stream"))
            max_tokens = int(_input(request, "max_tokens"))
            input_tokens = len(prompt.split())
            if prompt.rstrip().endswith(VERIFY_SUFFIX):
                if "verify=error" in prompt:
                    error = pb_utils.TritonError("injected fault: tier_scripted refuses to verify")
                    sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
                    continue
                if "verify=slow" in prompt:
                    pieces = VERDICT_PIECES["verify=yes"][:max_tokens]
                    threading.Thread(target=_slow, args=(sender, pieces, input_tokens, stream), daemon=True).start()
                    continue
                marker = "verify=yes" if "verify=yes" in prompt else "verify=no"
                _send(sender, VERDICT_PIECES[marker][:max_tokens], input_tokens, stream)
            else:
                pieces = [] if "answer=blank" in prompt else ANSWER_PIECES[:max_tokens]
                _send(sender, pieces, input_tokens, stream)
        return None
