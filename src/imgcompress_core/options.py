"""From settings to the option objects each part of the core takes.

The option objects (``WorkerConfig`` here, ``FetchOptions``, ``CompressOptions``,
``ManifestLimits``) are what an embedder builds by hand; :class:`~.settings.Settings`
is what the service reads from the environment. This module is the one place that
maps one to the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from .compress import CompressOptions
from .cpu import CpuPool
from .fetch import FetchOptions
from .settings import Settings

__all__ = ["WorkerConfig", "fetch_options", "own_hosts", "worker_config"]


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a worker paces itself."""

    download_concurrency: int = 16
    cpu_workers: int = 2
    cpu_pool: CpuPool = "threads"
    cpu_seconds: int = 60  # CPU time one image may take; enforced in processes only
    max_attempts: int = 3
    retry_base_delay: float = 1.0
    retry_max_delay: float = 60.0
    lease_seconds: float = 120.0
    poll_interval: float = 0.5
    webhook_max_attempts: int = 30
    webhook_retry_base: float = 5.0
    webhook_retry_max: float = 3600.0
    shutdown_grace: float = 30.0
    retention_seconds: float = 0.0
    compress: CompressOptions = CompressOptions()


def fetch_options(settings: Settings) -> FetchOptions:
    """Return the download limits the settings ask for."""
    return FetchOptions(
        allow_private_networks=settings.allow_private_networks,
        max_bytes=settings.max_image_bytes,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        deadline=settings.download_deadline,
        max_redirects=settings.max_redirects,
        max_connections=settings.download_concurrency,
        connections_per_host=settings.connections_per_host,
        allowed_hosts=settings.image_hosts(),
        proxy=settings.outbound_proxy,
    )


def own_hosts(settings: Settings) -> frozenset[str]:
    """Return the host:port forms under which this service serves its sample images."""
    port = settings.port
    hosts = {f"{settings.host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"}
    if settings.public_url:
        hosts.add(urlsplit(settings.public_url).netloc)
    return frozenset(h.lower() for h in hosts)


def worker_config(settings: Settings) -> WorkerConfig:
    """Return the worker pacing the settings ask for."""
    return WorkerConfig(
        download_concurrency=settings.download_concurrency,
        cpu_workers=settings.cpu_workers,
        # A process pool re-imports the main module in every child, which an embedding
        # script without an ``if __name__ == "__main__"`` guard does not survive.
        cpu_pool="threads" if settings.cpu_pool == "auto" else settings.cpu_pool,
        cpu_seconds=settings.max_compress_seconds,
        max_attempts=settings.max_attempts,
        retry_base_delay=settings.retry_base_delay,
        retry_max_delay=settings.retry_max_delay,
        lease_seconds=settings.lease_seconds,
        poll_interval=settings.poll_interval,
        webhook_max_attempts=settings.webhook_max_attempts,
        webhook_retry_base=settings.webhook_retry_base,
        webhook_retry_max=settings.webhook_retry_max,
        shutdown_grace=settings.shutdown_grace,
        retention_seconds=settings.retention_seconds,
        compress=settings.compress_options(),
    )
