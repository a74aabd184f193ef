"""Sending webhooks: due deliveries are leased and POSTed concurrently, bounded in total
and per receiving host, each attempt's outcome recorded through the workflow (with the
webhook retry policy deciding when to try again)."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import anyio

from ._signal import Signal
from .documents import Urls, webhook_payload
from .errors import LeaseLost, NotificationError
from .model import DeliveryClaim
from .options import WorkerConfig
from .ports import Notifier
from .retry import RetryPolicy
from .workflow import Workflow

__all__ = ["WebhookSender"]

log = logging.getLogger("imgcompress.worker")


class WebhookSender:
    """Delivers finished requests' webhooks for one worker."""

    def __init__(
        self,
        workflow: Workflow,
        notifier: Notifier,
        urls: Urls,
        config: WorkerConfig,
        owner: str,
    ) -> None:
        self.workflow = workflow
        self.notifier = notifier
        self.urls = urls
        self.config = config
        self.owner = owner
        self.retries = RetryPolicy(
            config.webhook_max_attempts, config.webhook_retry_base, config.webhook_retry_max
        )
        self._wake = Signal()
        self._sending = 0  # deliveries in flight
        self._host_limiters: dict[str, anyio.CapacityLimiter] = {}  # receiving host -> share

    def wake(self) -> None:
        """Look for due deliveries now instead of at the next poll."""
        self._wake.set()

    async def send_due(self) -> int:
        """Send every delivery due now, one after another; return how many."""
        claims = await self.workflow.claim_deliveries(
            self.owner, self.config.webhook_concurrency, self.config.lease_seconds
        )
        for claim in claims:
            await self._deliver(claim)
        return len(claims)

    async def run(self, stop: anyio.Event) -> None:
        """Send due webhook deliveries concurrently: at most ``webhook_concurrency`` at
        once, and at most ``webhook_connections_per_host`` to one receiving host, so
        receivers that hang hold only their own share (each claim's lease covers one POST)."""
        async with anyio.create_task_group() as tasks:
            while not stop.is_set():
                free = self.config.webhook_concurrency - self._sending
                claims: list[DeliveryClaim] = []
                if free > 0:
                    try:
                        claims = await self.workflow.claim_deliveries(
                            self.owner, free, self.config.lease_seconds
                        )
                    except Exception as exc:
                        log.warning("claiming webhook deliveries failed: %s", exc)
                for claim in claims:
                    self._sending += 1
                    tasks.start_soon(self._send, claim)
                if len(claims) < free or free <= 0:
                    await self._wake.wait(self.config.poll_interval)
            tasks.cancel_scope.cancel()

    async def _send(self, claim: DeliveryClaim) -> None:
        """Deliver one claim within its host's share of connections."""
        host = urlsplit(claim.url).netloc.lower()
        limiter = self._host_limiters.get(host)
        if limiter is None:
            limiter = anyio.CapacityLimiter(self.config.webhook_connections_per_host)
            self._host_limiters[host] = limiter
        try:
            async with limiter:
                await self._deliver(claim)
        except LeaseLost as exc:
            log.warning("webhook delivery taken over by another worker: %s", exc)
        except Exception as exc:
            log.warning("webhook delivery request=%s failed: %s", claim.request_id, exc)
        finally:
            self._sending -= 1
            if limiter.borrowed_tokens == 0 and not limiter.statistics().tasks_waiting:
                self._host_limiters.pop(host, None)
            self._wake.set()

    async def _deliver(self, claim: DeliveryClaim) -> None:
        try:
            request = await self.workflow.requests.get_request(claim.request_id)
            progress = await self.workflow.progress(claim.request_id)
            urls = Urls(request.base_url) if request.base_url else self.urls
            payload = webhook_payload(request, progress, urls)
            await self.notifier.notify(claim.url, payload, delivery_id=claim.delivery_id)
        except NotificationError as exc:
            delay = self.retries.decide(claim.attempt, exc)
            log.warning(
                "webhook request=%s attempt=%d failed: %s%s",
                claim.request_id,
                claim.attempt,
                exc,
                " (giving up)" if delay is None else "",
            )
            await self.workflow.record_delivery(claim, error=str(exc), retry_in=delay)
            return
        except Exception:
            log.exception("webhook request=%s: unexpected error", claim.request_id)
            await self.workflow.record_delivery(claim, error="internal error")
            return
        log.info("webhook delivered request=%s attempt=%d", claim.request_id, claim.attempt)
        await self.workflow.record_delivery(claim)
