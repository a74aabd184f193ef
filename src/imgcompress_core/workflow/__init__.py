"""The state machine and every storage rule, in one place.

Images::

    queued ──claim──▶ working ──complete──▶ done
       ▲                 │ ──fail──────▶ failed
       └────retry────────┘
    queued or working ──cancel──▶ failed (code ``cancelled``)
    failed (not cancelled) ──retry failed, on a final request only──▶ queued (a new round)
    (an expired lease lets another worker claim a working image again: working ─▶ working;
     after ``max_attempts`` expired leases the image fails instead: ``worker_lost``)

A request is ``Pending`` while any of its images is queued or working. When every image
is final it becomes ``Completed`` if at least one image is done, or ``Failed`` if none
is (nothing usable came out of it). A final request never changes status again.

The stores (:mod:`.ports`) only persist and make conditional updates; :class:`Workflow`
is their only caller and decides everything else: which states an update may start
from (:func:`sources`), what a request ends as (:func:`final_status`), how progress is
counted, what an expired lease or a cancel records, that completing twice with the same
claim is a no-op, which request a free worker serves next (:func:`fair_order`), the
webhook delivery's id, a blob's key and an image's ETag.
"""

from __future__ import annotations

from .rules import (
    CANCELLABLE,
    CANCELLED,
    FINAL_IMAGE_STATES,
    REUSED_NOT_MODIFIED,
    REUSED_SAME_CONTENT,
    TRANSITIONS,
    UNFINISHED,
    WORKER_LOST,
    Leasing,
    blob_key,
    check_transition,
    content_hash,
    delivery_id,
    delivery_outcome,
    etag,
    final_status,
    output_recipe,
    progress_of,
    sources,
)
from .scheduling import HostShares, fair_order, host_of
from .steps import Workflow

__all__ = [
    "CANCELLABLE",
    "CANCELLED",
    "FINAL_IMAGE_STATES",
    "REUSED_NOT_MODIFIED",
    "REUSED_SAME_CONTENT",
    "TRANSITIONS",
    "UNFINISHED",
    "WORKER_LOST",
    "HostShares",
    "Leasing",
    "Workflow",
    "blob_key",
    "check_transition",
    "content_hash",
    "delivery_id",
    "delivery_outcome",
    "etag",
    "fair_order",
    "final_status",
    "host_of",
    "output_recipe",
    "progress_of",
    "sources",
]
