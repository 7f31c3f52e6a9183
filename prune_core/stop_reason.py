"""Why ``compress_network`` stopped: the reference's stop reasons as a string enum.

Each member *is* its message (a ``str``), so ``info.stop_reason == "Maximum compression reached."``
holds and printing shows the message.

>>> StopReason.THRESHOLD == "Validation threshold crossed.", str(StopReason.GOAL)
(True, 'Learnables reduction goal reached.')
>>> StopReason.THRESHOLD.returns_previous, StopReason("Maximum compression reached.").returns_previous
(True, False)
"""

from __future__ import annotations

from enum import StrEnum


class StopReason(StrEnum):
    """A stop reason of ``compress_network`` (``PruningInfo.stop_reason``)."""

    GOAL = "Learnables reduction goal reached."
    MACS_GOAL = "MACs reduction goal reached."
    MAXIMUM = "Maximum compression reached."
    THRESHOLD = "Validation threshold crossed."
    DIVERGED = "Training loss is not finite."
    OUTPUT_FN = "Stopped by output function."
    INTERRUPTED = "Stopped manually."

    @property
    def returns_previous(self) -> bool:
        """Whether the network returned is the one before the last iteration (which was rejected)."""
        return self in (StopReason.THRESHOLD, StopReason.DIVERGED)
