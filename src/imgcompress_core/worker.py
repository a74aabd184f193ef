"""The worker: claims images, downloads, compresses, stores, finalizes, notifies.

One loop claims as many images as there are free download slots (leases, so a worker
that dies loses nothing: its claims expire and another worker takes them); each image
then runs as its own task: download (bounded by the fetcher's pool), compress off the
event loop (bounded by ``cpu_workers``), store. ``cpu_pool`` says where compression
runs: ``"processes"`` (see :mod:`.cpu`; the benchmarks measured them about 40 % faster
than threads on JPEG, where Pillow holds the GIL for part of the work) or ``"threads"``
(no extra processes; the default when embedded, see ``Settings.cpu_pool``).
A failure is recorded with its reason; a transient one is retried with exponential
backoff and full jitter, honouring Retry-After. When a request's last image is final
the store finalizes it exactly once and queues its webhook, which a second loop sends.

Nothing an image does can stop the worker: every exception is caught, logged and
recorded as that image's failure.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import time
from collections.abc import Callable

import anyio

from ._signal import Signal
from .compress import CompressOptions
from .cpu import Compressor
from .documents import Urls
from .downloads import Downloader
from .errors import CompressionError, ImageFailure, InvalidPolicy, LeaseLost
from .model import Claim, Failure, ImageResult, RequestRecord
from .options import WorkerConfig
from .policy import OutputPolicy
from .ports import BlobStore, Fetcher, Metrics, Notifier, NullMetrics, Storage
from .retry import RetryPolicy
from .webhooks import WebhookSender
from .workflow import (
    HostShares,
    Leasing,
    Workflow,
    host_of,
)

__all__ = ["Worker", "WorkerConfig"]

log = logging.getLogger("imgcompress.worker")

# Failures of our own storage (a bucket or directory down), retried patiently.
OUTAGE_CODES = frozenset({"blob_store_unavailable"})


def _with_policy(options: CompressOptions, policy: str) -> CompressOptions:
    """The compression options for a request whose policy's JSON is ``policy``."""
    if not policy:
        return options
    try:
        return dataclasses.replace(options, policy=OutputPolicy.from_json(policy))
    except (InvalidPolicy, ValueError) as exc:  # not written by this version's submit
        raise CompressionError(
            f"the request's output policy cannot be used: {exc}", code="invalid_policy"
        ) from exc


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{random.randrange(16**6):06x}"


class Worker:
    """Drives images from queued to final and delivers webhooks."""

    def __init__(
        self,
        storage: Storage,
        fetcher: Fetcher,
        notifier: Notifier,
        urls: Urls,
        config: WorkerConfig = WorkerConfig(),
        *,
        blobs: BlobStore | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.workflow = Workflow.over(storage, blobs=blobs, clock=clock)
        self.leasing = Leasing(config.lease_seconds, config.max_attempts)
        self.image_retries = RetryPolicy(
            config.max_attempts, config.retry_base_delay, config.retry_max_delay
        )
        # Our own storage being down is not the image's fault: it gets the patience of a
        # webhook (about half an hour with the defaults) instead of the image's attempts.
        self.outage_retries = RetryPolicy(
            max(config.max_attempts, 30),
            config.retry_base_delay,
            max(config.retry_max_delay, 60.0),
        )
        self.fetcher = fetcher
        self.notifier = notifier
        self.urls = urls
        self.config = config
        self.owner = _owner()
        self.metrics: Metrics = metrics or NullMetrics()
        self._clock = clock
        self._compressor = Compressor(
            config.cpu_pool,
            config.cpu_workers,
            cpu_seconds=config.max_compress_seconds,
            decode_budget=config.decode_budget,
        )
        self._wake_images = Signal()
        self._look_again = False  # new work was submitted: ask the store which requests
        self._held: dict[str, Claim] = {}  # image id -> the claim this worker works on
        self._released: set[tuple[str, str]] = set()  # claims whose host share is given back
        self.shares = HostShares(config.connections_per_host)  # images held per host
        self.downloads = Downloader(
            self.workflow, fetcher, self.shares, self.metrics, config.compress
        )
        self._in_flight: dict[tuple[str, str], anyio.Event] = {}  # (owner, url) being worked on
        self._requests: dict[str, RequestRecord] = {}  # a few request records, by id
        self.webhooks = WebhookSender(self.workflow, notifier, urls, config, self.owner)
        self.alive = False

    def wake(self) -> None:
        """Look for new work now instead of at the next poll."""
        self._look_again = True
        self._wake_images.set()

    async def run(self, stop: anyio.Event) -> None:
        """Work until ``stop`` is set, give in-flight images ``shutdown_grace`` seconds to
        finish, then return (unfinished claims simply expire and are taken over)."""
        log.info("worker %s started", self.owner)
        self.alive = True
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._compressor.start)  # its processes, before any image
                tasks.start_soon(self._wake_on, stop)
                tasks.start_soon(self.webhooks.run, stop)
                tasks.start_soon(self._heartbeat_loop)
                tasks.start_soon(self._sweep_loop, stop)
                await self._claim_loop(stop, tasks)
                with anyio.move_on_after(self.config.shutdown_grace):
                    while self._held:
                        await self._wake_images.wait(self.config.poll_interval)
                if self._held:
                    log.warning(
                        "worker %s: %d images left to other workers", self.owner, len(self._held)
                    )
                tasks.cancel_scope.cancel()
        finally:
            self.alive = False
            self._compressor.close()
        log.info("worker %s stopped", self.owner)

    async def _wake_on(self, stop: anyio.Event) -> None:
        await stop.wait()
        self._wake_images.set()
        self.webhooks.wake()

    async def _claim_loop(self, stop: anyio.Event, tasks: anyio.abc.TaskGroup) -> None:
        while not stop.is_set():
            free = self.config.download_concurrency - len(self._held)
            claims: list[Claim] = []
            if free > 0:
                look_again, self._look_again = self._look_again, False
                try:
                    claims = await self.workflow.claim(
                        self.owner, free, self.leasing, self.shares, look_again=look_again
                    )
                except Exception as exc:
                    log.warning("claiming images failed: %s", exc)
            for claim in claims:
                self._held[claim.image_id] = claim
                tasks.start_soon(self._process, claim)
            if len(claims) < free or free <= 0:
                await self._wake_images.wait(self.config.poll_interval)

    async def _heartbeat_loop(self) -> None:
        """Renew the leases of images in flight, so slow work is not taken over."""
        while True:
            await anyio.sleep(self.config.lease_seconds / 3)
            claims = list(self._held.values())
            if not claims:
                continue
            try:
                held = await self.workflow.renew(claims, self.config.lease_seconds)
            except Exception as exc:
                log.warning("renewing leases failed: %s", exc)
                continue
            lost = [c for c in claims if c not in held and c.image_id in self._held]
            if lost:  # (claims finished since the snapshot are not lost)
                log.warning("worker %s lost %d leases", self.owner, len(lost))

    async def _sweep_loop(self, stop: anyio.Event) -> None:
        """Finalize requests whose finalize step was lost (a crash, a storage error), and
        delete those past their retention period."""
        while not stop.is_set():
            try:
                for request_id in await self.workflow.unfinalized(50):
                    await self._finalize(request_id)
            except Exception as exc:
                log.warning("finalizing finished requests failed: %s", exc)
            if self.config.retention_seconds > 0:
                await self._expire()
            try:
                # Long enough that a worker between writing a blob and marking its image
                # done (a live lease) is never swept from under it.
                grace = max(2 * self.config.lease_seconds, 60.0)
                await self.workflow.sweep_outputs(grace)
                await self.workflow.sweep_blobs(grace)
            except Exception as exc:
                log.warning("sweeping unreferenced blobs failed: %s", exc)
            await anyio.sleep(self.config.poll_interval * 10)

    async def _expire(self) -> None:
        """Delete finished requests older than the retention period."""
        try:
            expired = await self.workflow.expired_requests(self.config.retention_seconds, 50)
            for request_id in expired:
                await self.workflow.delete(request_id)
                log.info("request expired request=%s (retention)", request_id)
        except Exception as exc:
            log.warning("removing expired requests failed: %s", exc)

    async def _process(self, claim: Claim) -> None:
        try:
            await self._process_image(claim)
            siblings = (c for c in self._held.values() if c.request_id == claim.request_id)
            if sum(1 for _ in siblings) <= 1:  # else the last of them finalizes the request
                await self._finalize(claim.request_id)
        except LeaseLost as exc:
            log.warning("image %s: %s", claim.image_id, exc)
        except Exception:
            log.exception("image %s: could not record its result", claim.image_id)
        finally:
            # A retried image may already be claimed again (by this worker) under a new claim.
            if self._held.get(claim.image_id) is claim:
                del self._held[claim.image_id]
            self._release_host(claim)
            self._released.discard((claim.image_id, claim.token))
            self._wake_images.set()

    def _release_host(self, claim: Claim) -> None:
        """Give the claim's place in its host's share back, once."""
        key = (claim.image_id, claim.token)
        if key not in self._released:
            self._released.add(key)
            self.shares.give_back(host_of(claim.url))

    async def _process_image(self, claim: Claim) -> None:
        """Process one claimed image; the same URL (for one owner) is never worked on twice
        at once in this worker: a second claim waits, then reuses the first one's work."""
        request = await self._request(claim.request_id)
        key = (request.owner, claim.url)
        while (leader := self._in_flight.get(key)) is not None:
            await leader.wait()
        self._in_flight[key] = done = anyio.Event()
        try:
            await self._work(claim, request)
        finally:
            del self._in_flight[key]
            done.set()

    async def _request(self, request_id: str) -> RequestRecord:
        """Return a request's record (its owner and policy never change, so it is cached)."""
        record = self._requests.get(request_id)
        if record is None:
            record = await self.workflow.requests.get_request(request_id)
            if len(self._requests) >= 1024:
                self._requests.pop(next(iter(self._requests)))
            self._requests[request_id] = record
        return record

    async def _work(self, claim: Claim, request: RequestRecord) -> None:
        try:
            downloaded = await self.downloads.obtain(claim, request)
            if downloaded is None:
                return
            fetched, input_hash = downloaded
            # Downloaded: the host's share is for downloads, so the next image of the
            # host may start while this one waits for (or is in) compression.
            self._release_host(claim)
            self._wake_images.set()
            options = _with_policy(self.config.compress, request.policy)
            compressed = await self._compressor.compress(fetched.data, options)
        except ImageFailure as exc:
            with anyio.CancelScope(shield=True):
                await self._record_failure(claim, exc)
            return
        except Exception as exc:
            log.exception("image %s (%s) failed unexpectedly", claim.image_id, claim.url)
            failure = Failure("internal_error", f"an unexpected error occurred: {exc!r}")
            with anyio.CancelScope(shield=True):
                await self.workflow.fail(claim, failure)
            self.metrics.image_failed(failure.code)
            return
        image, seconds = compressed
        self.metrics.compress_seconds(seconds)
        result = ImageResult(
            data=image.data,
            content_type=image.content_type,
            width=image.width,
            height=image.height,
            input_bytes=image.input_bytes,
            note=image.note,
            quality=image.quality,
            score=image.score,
            warnings=image.warnings,
        )
        with anyio.CancelScope(shield=True):
            try:
                await self.workflow.complete(
                    claim,
                    result,
                    owner=request.owner,
                    policy=self.downloads.recipe(request),
                    input_hash=input_hash,
                )
            except ImageFailure as exc:  # the store cannot keep this result (too large)
                await self._record_failure(claim, exc)
                return
        self.metrics.image_done(result.input_bytes, len(result.data))

    async def _record_failure(self, claim: Claim, exc: ImageFailure) -> None:
        failure = Failure(exc.code, exc.message)
        policy = self.outage_retries if exc.code in OUTAGE_CODES else self.image_retries
        delay = policy.decide(claim.attempt, exc)
        if delay is not None:
            log.info(
                "image %s: %s (attempt %d), retrying in %.1f s",
                claim.image_id,
                exc.code,
                claim.attempt,
                delay,
            )
            await self.workflow.retry(claim, failure, delay)
            return
        log.info(
            "image failed request=%s image=%s code=%s url=%s: %s",
            claim.request_id,
            claim.image_id,
            exc.code,
            claim.url,
            exc.message,
        )
        await self.workflow.fail(claim, failure)
        self.metrics.image_failed(exc.code)

    async def _finalize(self, request_id: str) -> None:
        final = await self.workflow.finalize(request_id)
        if final is None:
            return
        self.metrics.request_finished(final.status.value)
        progress = await self.workflow.progress(request_id)
        log.info(
            "request finished request=%s status=%s done=%d failed=%d",
            request_id,
            final.status.value,
            progress.done,
            progress.failed,
        )
        if final.webhook_url:
            self.webhooks.wake()

    async def step(self) -> int:
        """Do, once, everything due now: claim and process images until none is left to
        claim, then send the due webhooks; return how many items were handled.

        The loops of :meth:`run` do the same continuously; tests drive a worker on a fake
        clock with this, and one-shot tools can too.
        """
        handled, look_again = 0, True
        while claims := await self.workflow.claim(
            self.owner,
            self.config.download_concurrency,
            self.leasing,
            self.shares,
            look_again=look_again,
        ):
            look_again = False
            async with anyio.create_task_group() as tasks:
                for claim in claims:
                    self._held[claim.image_id] = claim
                    tasks.start_soon(self._process, claim)
            handled += len(claims)
        return handled + await self.webhooks.send_due()
