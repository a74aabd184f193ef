"""Prometheus metrics for the service: ``GET /metrics``.

Counters and histograms are fed by the in-process worker through the core's ``Metrics``
port; the queue depth is read from the store at each scrape. Each app has its own
registry, so several apps in one process (tests) never collide. Worker processes started
with ``imgcompress worker`` keep their own counters (not exposed by this endpoint).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from imgcompress_core import Imgcompress

__all__ = ["PrometheusMetrics", "metrics_endpoint"]

_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class PrometheusMetrics:
    """The core's Metrics port on prometheus-client."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "imgcompress_requests", "Requests by status (accepted, Completed, Failed)",
            ["status"], registry=r,
        )  # fmt: skip
        self.images = Counter(
            "imgcompress_images", "Images finished, by result and reason", ["result", "reason"],
            registry=r,
        )  # fmt: skip
        self.bytes_in = Counter(
            "imgcompress_bytes_in", "Bytes downloaded and compressed", registry=r
        )
        self.bytes_out = Counter(
            "imgcompress_bytes_out", "Bytes stored after compression", registry=r
        )
        self.queue = Gauge("imgcompress_queue_depth", "Images waiting to be claimed", registry=r)
        self.fetch = Histogram(
            "imgcompress_fetch_seconds", "Download durations", buckets=_SECONDS, registry=r
        )
        self.compress = Histogram(
            "imgcompress_compress_seconds", "Compression durations", buckets=_SECONDS, registry=r
        )

    def request_accepted(self) -> None:
        """Count an accepted upload."""
        self.requests.labels("accepted").inc()

    def image_done(self, input_bytes: int, output_bytes: int) -> None:
        """Count a stored image and its bytes."""
        self.images.labels("done", "").inc()
        self.bytes_in.inc(input_bytes)
        self.bytes_out.inc(output_bytes)

    def image_failed(self, code: str) -> None:
        """Count a failed image by reason."""
        self.images.labels("failed", code).inc()

    def fetch_seconds(self, seconds: float) -> None:
        """Observe a download's duration."""
        self.fetch.observe(seconds)

    def compress_seconds(self, seconds: float) -> None:
        """Observe a compression's duration."""
        self.compress.observe(seconds)

    def request_finished(self, status: str) -> None:
        """Count a request reaching its final status."""
        self.requests.labels(status).inc()


@get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Return the metrics in Prometheus' text format."""
    metrics: PrometheusMetrics = request.app.state.metrics
    ic: Imgcompress = request.app.state.imgcompress
    metrics.queue.set(await ic.queue_depth())
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
