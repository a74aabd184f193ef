"""The rules: which image state may follow which, what a request ends as, how progress
is counted, what expired leases and cancels record, ids, keys and ETags."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import IllegalTransition, LeaseLost
from ..model import (
    Claim,
    DeliveryOutcome,
    DeliveryState,
    Failure,
    ImageState,
    Progress,
    RequestStatus,
)

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
UNFINISHED: frozenset[ImageState] = frozenset(ImageState) - FINAL_IMAGE_STATES

# Recorded when an image's lease expired (its worker died) after the last attempt.
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


# A cancel fails every image that may still fail.
CANCELLABLE: frozenset[ImageState] = sources(ImageState.FAILED)


def progress_of(counts: Mapping[ImageState, int]) -> Progress:
    """Return a request's progress from its image counts by state."""
    return Progress(
        total=sum(counts.values()),
        queued=counts.get(ImageState.QUEUED, 0),
        working=counts.get(ImageState.WORKING, 0),
        done=counts.get(ImageState.DONE, 0),
        failed=counts.get(ImageState.FAILED, 0),
    )


def final_status(progress: Progress) -> RequestStatus | None:
    """Return what a request ends as, or None while it still has unfinished images."""
    if progress.finished < progress.total:
        return None
    return RequestStatus.COMPLETED if progress.done > 0 else RequestStatus.FAILED


def delivery_id(request_id: str, round: int = 1) -> str:
    """Return the id of the webhook delivery a request's ``round`` ends with (the same on
    every attempt, so receivers can drop duplicates, and fixed, so a store creates it at
    most once; a retry of failed images is a new round with a new delivery)."""
    return f"{request_id}:final" if round == 1 else f"{request_id}:final-{round}"


def delivery_outcome(
    delivered: bool, error: str | None, retry_at: float | None, now: float
) -> DeliveryOutcome:
    """Return what an attempt leaves: delivered is final; a failure with no next attempt is
    given up (failed); any other failure stays pending until ``retry_at``."""
    if delivered:
        return DeliveryOutcome(DeliveryState.DELIVERED, None, now, now)
    if retry_at is None:
        return DeliveryOutcome(DeliveryState.FAILED, error, None, now)
    return DeliveryOutcome(DeliveryState.PENDING, error, None, retry_at)


def blob_key(data: bytes) -> str:
    """Return the content-addressed key of processed bytes (their SHA-256, hex)."""
    return hashlib.sha256(data).hexdigest()


def content_hash(data: bytes) -> str:
    """Return the hash a downloaded input is known by in the reuse cache (SHA-256, hex)."""
    return hashlib.sha256(data).hexdigest()


# Why an image was finished without new work (the status shows it as ``reused``).
REUSED_NOT_MODIFIED = "not-modified"  # a conditional download answered 304
REUSED_SAME_CONTENT = "same-content"  # the same bytes were compressed before


def output_recipe(
    policy: str, default_quality: int, jpeg_encoder: str, progressive: bool, accelerators: bool
) -> str:
    """Return the reuse cache's policy key: the request's policy (canonical JSON), the
    default quality that fills a policy without one, and the service's settings that change
    the bytes written (the JPEG encoder always, so that outputs stored before it was part
    of the key are not reused). Outputs are reused only for the same recipe."""
    recipe = f"{policy}|quality={default_quality}|jpeg_encoder={jpeg_encoder}"
    if progressive:
        recipe += "|jpeg_progressive"
    return recipe if accelerators else f"{recipe}|no_accelerators"


def etag(key: str) -> str:
    """Return the ETag an image is served with (a prefix of its blob key; no quotes)."""
    return key[:32]


def _check_finish(claim: Claim, target: ImageState, found: tuple[ImageState, str | None]) -> None:
    """Explain a finish that matched nothing: raise, or return for a harmless repeat."""
    state, token = found
    if token != claim.token:
        raise LeaseLost.image(claim.image_id)
    if target is ImageState.DONE and state is ImageState.DONE:
        return  # the same claim completing twice (a retry after a crash): already done
    check_transition(state, target)
    raise LeaseLost(f"image {claim.image_id} changed while it was being updated")


@dataclass(frozen=True, slots=True)
class Leasing:
    """How long leases last and how often an image may be tried."""

    lease_seconds: float = 120.0
    max_attempts: int = 3
