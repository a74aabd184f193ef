"""The use cases: accept a CSV, report status, build the output CSV, serve an image.

Entry points (the web adapter, the CLI, your own app) call these and nothing lower;
they never touch storage rules themselves.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from collections.abc import AsyncIterator, Callable

import anyio.to_thread

from ._score import available as scorer_available
from .compress import extension_for
from .documents import ImageLink, StatusReport, Urls, iso_time, output_url, webhook_payload
from .errors import (
    FetchError,
    InvalidPolicy,
    InvalidWebhookUrl,
    RequestNotFinished,
    RequestNotFound,
)
from .fetch import Resolver, check_url, system_resolver, vet_destination
from .manifest import ManifestLimits, iter_output_csv, parse_manifest, spreadsheet_safe
from .model import (
    ImageRecord,
    ImageState,
    NewImage,
    NewProduct,
    NewRequest,
    ProductRecord,
    Progress,
    RequestRecord,
    RequestStatus,
    StoredImage,
    new_id,
)
from .policy import OutputPolicy
from .ports import BlobStore, DeliveryQueue, RequestStore, Storage
from .workflow import Workflow, host_of
from .zipstream import ZipStream, archive_name

__all__ = [
    "ImageLink",
    "Service",
    "StatusReport",
    "Urls",
    "iso_time",
    "webhook_payload",
]

_CSV_PAGE = 500  # products read per step of a streamed output CSV or zip
WARNINGS_COLUMN = "Warnings"  # added to the output CSV when the request used a preset


def _row_warnings(products: list[ProductRecord], images: list[ImageRecord]) -> list[str]:
    """Each product's image warnings, as one cell: ``2: ...; ...`` per image (by position)."""
    by_row: dict[int, list[str]] = {}
    for image in images:
        if image.warnings:
            text = "; ".join(image.warnings)
            by_row.setdefault(image.row, []).append(f"{image.position + 1}: {text}")
    return [" | ".join(by_row.get(product.row, [])) for product in products]


def _add_cell(line: str, cell: str) -> str:
    """Append one (spreadsheet-safe) cell to a CSV line written by ``iter_output_csv``."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow([spreadsheet_safe(cell)])
    return line.removesuffix("\r\n") + "," + buffer.getvalue()


def _body_hash(csv: bytes, webhook_url: str | None, policy: str = "") -> str:
    digest = hashlib.sha256(csv)
    digest.update(b"\0" + (webhook_url or "").encode())
    if policy:
        digest.update(b"\0" + policy.encode())
    return digest.hexdigest()


class Service:
    """The use cases of imgcompress over one Storage."""

    def __init__(
        self,
        storage: Storage,
        *,
        blobs: BlobStore | None = None,
        limits: ManifestLimits = ManifestLimits(),
        allow_private_networks: bool = False,
        webhook_hosts: frozenset[str] = frozenset(),
        resolver: Resolver = system_resolver,
        clock: Callable[[], float] = time.time,
        on_submit: Callable[[], None] | None = None,
        image_link: ImageLink | None = None,
        default_policy: OutputPolicy | None = None,
    ) -> None:
        """``image_link`` gives done images a direct address (a CDN or public bucket in
        front of the blob store) in status documents and output CSVs; ``default_policy``
        fills the output policy fields a request leaves unset."""
        self.workflow = Workflow.over(storage, blobs=blobs, clock=clock)
        self.requests: RequestStore = storage
        self.deliveries: DeliveryQueue = storage
        self.limits = limits
        self._allow_private = allow_private_networks
        self._webhook_hosts = webhook_hosts
        self._resolver = resolver
        self._clock = clock
        self._on_submit = on_submit
        self.image_link = image_link
        self.default_policy = default_policy or OutputPolicy()

    async def submit(
        self,
        csv: bytes,
        webhook_url: str | None = None,
        *,
        base_url: str = "",
        idempotency_key: str | None = None,
        owner: str = "",
        policy: OutputPolicy | None = None,
    ) -> str:
        """Validate a CSV (and webhook URL), store the request, and return its id.

        ``base_url`` is the public address of the service, kept with the request for the
        links its webhook carries (a worker elsewhere cannot know it). The same
        ``idempotency_key`` with the same CSV and webhook URL returns the first request's id
        and stores nothing new; with anything different it raises IdempotencyConflict.
        ``policy`` is how its images are written (over ``default_policy``); InvalidPolicy
        names a field that cannot be used.
        """
        chosen = (policy or OutputPolicy()).over(self.default_policy)
        if chosen.target_quality is not None and not scorer_available():
            raise InvalidPolicy(
                "target_quality", "needs the SSIMULACRA2 scorer: pip install 'imgcompress[target]'"
            )
        manifest = await anyio.to_thread.run_sync(parse_manifest, csv, self.limits)
        webhook = (webhook_url or "").strip() or None
        if webhook is not None:
            await self._check_webhook(webhook)
        products = tuple(NewProduct(p.row, p.serial, p.name, p.cells) for p in manifest.products)
        images = tuple(
            NewImage(new_id(), product.row, position, url, host_of(url))
            for product in manifest.products
            for position, url in enumerate(product.urls)
        )
        request = NewRequest(
            request_id=new_id(),
            columns=manifest.columns,
            webhook_url=webhook,
            created_at=self._clock(),
            products=products,
            images=images,
            base_url=base_url.rstrip("/"),
            idempotency_key=f"{owner}:{idempotency_key}" if idempotency_key else None,
            body_hash=_body_hash(csv, webhook, chosen.to_json()),
            owner=owner,
            policy=chosen.to_json(),
        )
        request_id = await self.workflow.create(request)
        if self._on_submit is not None and request_id == request.request_id:
            self._on_submit()
        return request_id

    async def _check_webhook(self, url: str) -> None:
        if len(url) > self.limits.max_url_length:
            raise InvalidWebhookUrl(
                f"webhook_url is longer than {self.limits.max_url_length} characters "
                "(max_url_length)"
            )
        try:
            parts = check_url(url)
            await vet_destination(
                parts,
                allow_private=self._allow_private,
                resolver=self._resolver,
                allowed_hosts=self._webhook_hosts,
            )
        except FetchError as exc:
            raise InvalidWebhookUrl(f"webhook_url is not acceptable: {exc}") from exc

    async def _owned(self, request_id: str, owner: str | None) -> RequestRecord:
        """Return the request, or RequestNotFound if it is not ``owner``'s (None: anyone's)."""
        request = await self.requests.get_request(request_id)
        if owner is not None and request.owner != owner:
            raise RequestNotFound(request_id)
        return request

    async def status(
        self,
        request_id: str,
        *,
        owner: str | None = None,
        detail: bool = True,
        after_row: int = 0,
        limit: int | None = None,
    ) -> StatusReport:
        """Return everything known about a request (RequestNotFound if there is none);
        with ``detail=False`` only its status, counts and webhook, not every image.

        With ``limit``, one page: at most ``limit`` products after row ``after_row``, with
        their images, and ``next_cursor`` set when more follow.
        """
        request = await self._owned(request_id, owner)
        products: list[ProductRecord] = []
        images: list[ImageRecord] = []
        next_cursor = None
        if detail:
            products, images, next_cursor = await self._page(request_id, after_row, limit)
        return StatusReport(
            request=request,
            progress=await self.workflow.progress(request_id),
            products=products,
            images=images,
            deliveries=await self.deliveries.list_deliveries(request_id),
            detail=detail,
            next_cursor=next_cursor,
            image_link=self.image_link,
        )

    async def _page(
        self, request_id: str, after_row: int, limit: int | None
    ) -> tuple[list[ProductRecord], list[ImageRecord], int | None]:
        """Return up to ``limit`` products after ``after_row``, their images, and the row to
        continue after (None when this is the last page)."""
        wanted = None if limit is None else limit + 1
        products = await self.requests.list_products(request_id, after_row=after_row, limit=wanted)
        next_cursor = None
        if limit is not None and len(products) > limit:
            products = products[:limit]
            next_cursor = products[-1].row
        images: list[ImageRecord] = []
        if products:
            rows = (products[0].row, products[-1].row)
            images = await self.requests.list_images(request_id, rows=rows)
        return products, images, next_cursor

    async def output_csv(
        self, request_id: str, image_url: Callable[[str], str], *, owner: str | None = None
    ) -> str:
        """Return the output CSV: input columns plus each processed image's URL.

        ``image_url`` turns an image id into the address written out (``Urls.image`` for
        the service, a file path for ``imgcompress process``).
        """
        return "".join(
            [part async for part in self.stream_output_csv(request_id, image_url, owner=owner)]
        )

    async def stream_output_csv(
        self, request_id: str, image_url: Callable[[str], str], *, owner: str | None = None
    ) -> AsyncIterator[str]:
        """Yield the output CSV a page of products at a time, so a request of any size is
        written at constant memory (RequestNotFinished while it is Pending)."""
        request = await self._owned(request_id, owner)
        if request.status is RequestStatus.PENDING:
            raise RequestNotFinished(
                f"request {request_id} is still Pending; its output CSV is ready once it is final"
            )
        preset = OutputPolicy.from_json(request.policy).preset is not None
        after_row: int | None = 0
        while after_row is not None:
            products, images, next_row = await self._page(request_id, after_row, _CSV_PAGE)
            outputs: dict[int, list[str | None]] = {}
            for image in images:
                url = output_url(image, image_url, self.image_link)
                outputs.setdefault(image.row, []).append(url)
            lines = iter_output_csv(
                request.columns, [(p.cells, outputs.get(p.row, [])) for p in products]
            )
            if preset:  # the preset's warnings, in a last column
                warnings = [WARNINGS_COLUMN, *_row_warnings(products, images)]
                lines = (_add_cell(line, cell) for line, cell in zip(lines, warnings, strict=True))
            if after_row:
                next(lines)  # the header row goes with the first page only
            yield "".join(lines)
            after_row = next_row

    async def image(self, image_id: str) -> StoredImage:
        """Return a processed image (ImageNotFound if there is none)."""
        return await self.workflow.image(image_id)

    async def retry_failed(self, request_id: str, *, owner: str | None = None) -> int:
        """Queue a final request's failed images again (not cancelled ones) and return how
        many; the request is Pending until they finish, then sends a new webhook."""
        await self._owned(request_id, owner)
        return await self.workflow.retry_failed(request_id)

    async def history(
        self, *, owner: str | None, before: tuple[float, str] | None, limit: int
    ) -> list[tuple[RequestRecord, Progress]]:
        """Return requests newest first with their progress (only ``owner``'s when given),
        older than the ``before`` cursor (a (created_at, request_id) pair)."""
        records = await self.workflow.list_requests(owner, before, limit)
        return [(r, await self.workflow.progress(r.request_id)) for r in records]

    async def stream_zip(
        self, request_id: str, *, owner: str | None = None
    ) -> AsyncIterator[bytes]:
        """Yield a zip of a request's processed images, one image in memory at a time,
        named ``{S. No.}-{Product Name}-{position}.{ext}`` (an image shared by several rows
        appears under each row's name)."""
        await self._owned(request_id, owner)
        archive = ZipStream()
        after_row: int | None = 0
        while after_row is not None:
            products, images, after_row = await self._page(request_id, after_row, _CSV_PAGE)
            by_row = {p.row: p for p in products}
            for image in images:
                if image.state is not ImageState.DONE or image.content_type is None:
                    continue
                product = by_row[image.row]
                stored = await self.workflow.image(image.output_id or image.image_id)
                name = archive_name(
                    product.serial,
                    product.name,
                    image.position + 1,
                    extension_for(image.content_type),
                )
                yield archive.add(name, stored.data)
        yield archive.close()

    async def cancel_or_delete(self, request_id: str, *, owner: str | None = None) -> bool:
        """Cancel a Pending request and return False; delete a final one and return True.

        Cancelling fails every unfinished image (``cancelled``); images already done stay
        available, and the request then finalizes as usual (its webhook included).
        """
        request = await self._owned(request_id, owner)
        if request.status is RequestStatus.PENDING:
            await self.workflow.cancel(request_id)
            return False
        await self.workflow.delete(request_id)
        return True
