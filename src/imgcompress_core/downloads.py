"""Getting a claimed image's bytes, or not needing them: a URL already downloaded for the
same request is not fetched again, one downloaded before is fetched conditionally (a 304
reuses its output), and bytes compressed before under the same recipe are not compressed
again. Downloads also keep each host to its share (a timeout shrinks it)."""

from __future__ import annotations

import time

import anyio

from .compress import CompressOptions
from .errors import ImageFailure
from .model import Claim, Output, RequestRecord, Source
from .ports import Fetched, Fetcher, Metrics
from .workflow import (
    REUSED_NOT_MODIFIED,
    REUSED_SAME_CONTENT,
    HostShares,
    Workflow,
    content_hash,
    host_of,
    output_recipe,
)

__all__ = ["Downloader"]

# Download failures that count against the host's share (it is slow or hanging).
SLOW_HOST_CODES = frozenset({"download_timeout", "connection_failed"})


class Downloader:
    """Downloads for one worker, reusing earlier work wherever the rules allow."""

    def __init__(
        self,
        workflow: Workflow,
        fetcher: Fetcher,
        shares: HostShares,
        metrics: Metrics,
        compress: CompressOptions,
    ) -> None:
        self.workflow = workflow
        self.fetcher = fetcher
        self.shares = shares
        self.metrics = metrics
        self.compress = compress

    def recipe(self, request: RequestRecord) -> str:
        """Return what an output of this request depends on besides its input: the
        request's policy, the service's default quality (which fills a policy without one)
        and its encoder settings, so changing either never reuses outputs made before."""
        options = self.compress
        return output_recipe(
            request.policy,
            options.quality,
            options.jpeg_encoder,
            options.jpeg_progressive,
            options.accelerators,
        )

    async def _reused(
        self,
        claim: Claim,
        request: RequestRecord,
        input_hash: str,
        why: str,
        output: Output | None = None,
    ) -> bool:
        """Finish the image with what this input already became (``output``, when it was
        looked up already), if anything; say so."""
        if output is None:
            recipe = self.recipe(request)
            output = await self.workflow.reusable(request.owner, recipe, input_hash)
        if output is None:
            return False
        with anyio.CancelScope(shield=True):
            await self.workflow.reuse(claim, output, why)
        self.metrics.image_done(output.input_bytes, output.output_bytes)
        return True

    async def obtain(self, claim: Claim, request: RequestRecord) -> tuple[Fetched, str] | None:
        """Download the image unless earlier work makes that needless; return the body and
        its hash, or None when the image was finished by reusing an earlier output.

        A URL already downloaded for this request (a duplicate row) is not fetched again; a
        URL downloaded before is fetched conditionally, and a 304 reuses its output.
        """
        owner, url = request.owner, claim.url
        source, known = await self.workflow.recall(owner, url, self.recipe(request))
        if source is not None and source.request_id == claim.request_id:
            if known is not None:
                await self._reused(claim, request, source.input_hash, REUSED_SAME_CONTENT, known)
                return None
            source = None
        fetched = await self._fetch(claim, source)
        if fetched.not_modified and source is not None:
            if known is not None:
                await self._reused(claim, request, source.input_hash, REUSED_NOT_MODIFIED, known)
                etag = fetched.etag or source.etag
                modified = fetched.last_modified or source.last_modified
                if (etag, modified) != (source.etag, source.last_modified):
                    await self.workflow.downloaded(
                        owner, url, claim.request_id, source.input_hash, etag, modified
                    )
                return None
            fetched = await self._fetch(claim, None)  # its output is gone: fetch it whole
        input_hash = content_hash(fetched.data)
        await self.workflow.downloaded(
            owner, url, claim.request_id, input_hash, fetched.etag, fetched.last_modified
        )
        if await self._reused(claim, request, input_hash, REUSED_SAME_CONTENT):
            return None
        return fetched, input_hash

    async def _fetch(self, claim: Claim, source: Source | None) -> Fetched:
        """Download a claimed image (conditionally, given what an earlier download said);
        a timeout shrinks its host's share, an answer in time restores it."""
        host = host_of(claim.url)
        started = time.perf_counter()
        try:
            if source is None or not (source.etag or source.last_modified):
                fetched = await self.fetcher.fetch(claim.url)
            else:
                fetched = await self.fetcher.fetch(
                    claim.url, etag=source.etag, last_modified=source.last_modified
                )
        except ImageFailure as exc:
            if exc.code in SLOW_HOST_CODES:
                self.shares.timed_out(host)
            raise
        finally:
            self.metrics.fetch_seconds(time.perf_counter() - started)
        self.shares.answered(host)
        return fetched
