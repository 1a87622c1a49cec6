"""The error of a failed tier call, Triton-free (raised by the local BLS calls and the remote calls alike)."""

from __future__ import annotations

from llm_router.protocol import TierAnswer


class TierCallError(RuntimeError):
    """A tier answered with an error, or could not be called; `reason` is short and goes into the trace.

    `rejected_input` is True when the tier refused the request itself (INVALID_ARG, e.g. a prompt above its context).
    `partial` is what the tier had produced when the call was abandoned (the streaming hold-back's early stop): its
    token counts and latency are paid for and go into the trace.
    """

    def __init__(
        self, reason: str, status: str = "error", rejected_input: bool = False, partial: TierAnswer | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.rejected_input = rejected_input
        self.partial = partial
