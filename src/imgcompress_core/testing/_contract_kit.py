"""Shared pieces of the storage contract suite: requests to store, results, claims."""

from __future__ import annotations

from ..model import (
    Claim,
    ImageResult,
    NewImage,
    NewProduct,
    NewRequest,
    new_id,
)
from ..workflow import Leasing, Workflow
from .fakes import FakeClock  # noqa: F401

__all__ = ["LEASE", "LEASING", "MAX_ATTEMPTS", "claim_all", "make_request", "result"]

LEASE = 60.0
MAX_ATTEMPTS = 3
LEASING = Leasing(LEASE, MAX_ATTEMPTS)


def make_request(
    images_per_row: tuple[int, ...] = (2, 1), *, webhook_url: str | None = None
) -> NewRequest:
    """Build a request with one product per entry and that many images in each."""
    products: list[NewProduct] = []
    images: list[NewImage] = []
    for index, count in enumerate(images_per_row):
        row = index + 2
        products.append(NewProduct(row, str(index + 1), f"SKU{index + 1}", (str(index + 1), "x")))
        images.extend(
            NewImage(
                new_id(), row, position, f"https://img.example/{row}/{position}.jpg", "img.example"
            )
            for position in range(count)
        )
    return NewRequest(
        request_id=new_id(),
        columns=("S. No.", "Product Name"),
        webhook_url=webhook_url,
        created_at=1_700_000_000.0,
        products=tuple(products),
        images=tuple(images),
    )


def result(data: bytes = b"\xff\xd8processed") -> ImageResult:
    """Build a processed-image result."""
    return ImageResult(data=data, content_type="image/jpeg", width=4, height=3, input_bytes=99)


async def claim_all(flow: Workflow, owner: str = "w1", limit: int = 100) -> list[Claim]:
    """Claim every claimable image."""
    return await flow.claim(owner, limit, LEASING)
