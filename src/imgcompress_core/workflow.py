"""The state machine: which image state changes are legal, and when a request is final.

Images::

    queued ──claim──▶ working ──complete──▶ done
       ▲                 │ ──fail──────▶ failed
       └────retry────────┘
    queued or working ──cancel──▶ failed (code ``cancelled``)
    (an expired lease lets another worker claim a working image again: working ─▶ working)

A request is ``Pending`` while any of its images is queued or working. When every image
is final it becomes ``Completed`` if at least one image is done, or ``Failed`` if none
is (nothing usable came out of it). A final request never changes status again.

Stores do not decide any of this themselves: they ask :func:`sources` which states a
conditional update may start from and :func:`final_status` what a request ends as.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import IllegalTransition
from .model import DeliveryState, Failure, ImageState, Progress, RequestStatus

__all__ = [
    "CANCELLED",
    "FINAL_IMAGE_STATES",
    "TRANSITIONS",
    "WORKER_LOST",
    "check_transition",
    "delivery_outcome",
    "final_status",
    "sources",
]

TRANSITIONS: Mapping[ImageState, frozenset[ImageState]] = {
    ImageState.QUEUED: frozenset({ImageState.WORKING, ImageState.FAILED}),
    ImageState.WORKING: frozenset(
        {ImageState.WORKING, ImageState.DONE, ImageState.FAILED, ImageState.QUEUED}
    ),
    ImageState.DONE: frozenset(),
    ImageState.FAILED: frozenset(),
}

FINAL_IMAGE_STATES: frozenset[ImageState] = frozenset(
    state for state, targets in TRANSITIONS.items() if not targets
)


# Recorded by a store when an image's lease expired (its worker died) after the last attempt.
WORKER_LOST = Failure(
    "worker_lost",
    "processing this image stopped its worker every time it was tried (max_attempts reached)",
)


# Recorded for every unfinished image of a request that was cancelled.
CANCELLED = Failure("cancelled", "the request was cancelled before this image was processed")


def check_transition(current: ImageState, target: ImageState) -> None:
    """Raise IllegalTransition unless an image may go from ``current`` to ``target``."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"an image cannot go from {current} to {target}")


def sources(target: ImageState) -> frozenset[ImageState]:
    """Return the states from which an image may move to ``target``."""
    return frozenset(state for state, targets in TRANSITIONS.items() if target in targets)


def final_status(progress: Progress) -> RequestStatus | None:
    """Return what a request ends as, or None while it still has unfinished images."""
    if progress.finished < progress.total:
        return None
    return RequestStatus.COMPLETED if progress.done > 0 else RequestStatus.FAILED


def delivery_outcome(
    delivered: bool, next_attempt_at: float | None, now: float
) -> tuple[DeliveryState, float | None]:
    """Return a delivery's state after an attempt, and when it was delivered (if it was).

    Delivered is final; a failure with no next attempt is given up (failed); any other
    failure stays pending until ``next_attempt_at``.
    """
    if delivered:
        return DeliveryState.DELIVERED, now
    if next_attempt_at is None:
        return DeliveryState.FAILED, None
    return DeliveryState.PENDING, None
