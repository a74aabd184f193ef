"""From settings to the option objects each part of the core takes.

The option objects (``WorkerConfig`` here, ``FetchOptions``, ``CompressOptions``,
``ManifestLimits``) are what an embedder builds by hand; :class:`~.settings.Settings`
is what the service reads from the environment. The option objects hold every default
(``Settings`` reads its defaults from them with :func:`option_default`), and this module
is the one place that maps settings to option objects.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from .compress import CompressOptions
from .cpu import CpuPool
from .fetch import FetchOptions
from .manifest import ManifestLimits
from .policy import OutputPolicy

if TYPE_CHECKING:
    from .settings import Settings

__all__ = [
    "POLICY_SETTINGS",
    "CpuPoolSetting",
    "WorkerConfig",
    "available_cpus",
    "compress_options",
    "default_policy",
    "fetch_options",
    "manifest_limits",
    "option_default",
    "own_hosts",
    "parameter_default",
    "resolve_cpu_pool",
    "worker_config",
]

CpuPoolSetting = Literal["auto", "processes", "threads"]
"""The ``cpu_pool`` setting: a :data:`~.cpu.CpuPool`, or ``auto`` to let the caller choose."""


def available_cpus() -> int:
    """Return the number of CPUs this process may run on (at least 1)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def option_default(cls: type[Any], name: str) -> Any:
    """Return the default of dataclass ``cls``'s field ``name`` (calling its factory if any).

    The option dataclasses use ``slots=True``, so ``cls.name`` is a slot, not the default.
    """
    for item in dataclasses.fields(cls):
        if item.name == name:
            if item.default is not dataclasses.MISSING:
                return item.default
            if item.default_factory is not dataclasses.MISSING:
                return item.default_factory()
            raise ValueError(f"{cls.__name__}.{name} has no default")
    raise ValueError(f"{cls.__name__} has no field {name!r}")


def parameter_default(function: Callable[..., Any], name: str) -> Any:
    """Return the default of parameter ``name`` of ``function`` (for classes that are not
    dataclasses, e.g. ``WebhookNotifier.__init__``)."""
    parameter = inspect.signature(function).parameters.get(name)
    if parameter is None:
        raise ValueError(f"{function.__qualname__}() has no parameter {name!r}")
    default = parameter.default
    if default is inspect.Parameter.empty:
        raise ValueError(f"{function.__qualname__}() has no default for {name!r}")
    return default


def resolve_cpu_pool(setting: CpuPoolSetting, *, embedded: bool) -> CpuPool:
    """Return the pool ``cpu_pool`` asks for; ``auto`` is threads when embedded, else
    processes.

    A process pool re-imports the main module in every child, which an embedding script
    without an ``if __name__ == "__main__"`` guard does not survive; the ``imgcompress``
    command's main module is safe to re-import, and processes compress JPEG faster than
    threads (``benchmarks/RESULTS.md``).
    """
    if setting == "auto":
        return "threads" if embedded else "processes"
    return setting


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a worker paces itself."""

    download_concurrency: int = option_default(FetchOptions, "max_connections")
    connections_per_host: int = option_default(FetchOptions, "connections_per_host")
    cpu_workers: int = field(default_factory=available_cpus)
    cpu_pool: CpuPool = "threads"
    max_compress_seconds: int = 60  # CPU time one image may take; enforced in processes only
    # Decoded bytes of the images compressed at once (one larger image runs alone).
    decode_budget: int = 64 << 20
    max_attempts: int = 3
    retry_base_delay: float = 1.0
    retry_max_delay: float = 60.0
    lease_seconds: float = 120.0
    poll_interval: float = 0.5
    webhook_max_attempts: int = 30
    webhook_concurrency: int = 16
    webhook_connections_per_host: int = 4
    webhook_retry_base: float = 5.0
    webhook_retry_max: float = 3600.0
    shutdown_grace: float = 30.0
    retention_seconds: float = 0.0
    compress: CompressOptions = CompressOptions()


def compress_options(settings: Settings) -> CompressOptions:
    """Return the compression options the settings ask for."""
    return CompressOptions(
        quality=settings.jpeg_quality,
        max_pixels=settings.max_image_pixels,
        max_frames=settings.max_animation_frames,
        max_animation_pixels=settings.max_animation_pixels,
        max_scans=settings.max_jpeg_scans,
        max_decode_bytes=settings.max_decode_bytes,
        jpeg_encoder=settings.jpeg_encoder,
        jpeg_progressive=settings.jpeg_progressive,
        accelerators=settings.accelerators,
    )


# The settings that hold the output policy's defaults, by the policy's field names.
POLICY_SETTINGS = {
    "format": "output_format",
    "target_quality": "target_quality",
    "max_bytes": "max_output_bytes",
    "max_width": "max_output_width",
    "max_height": "max_output_height",
    "background": "output_background",
    "metadata": "output_metadata",
    "preset": "output_preset",
}


def default_policy(settings: Settings) -> OutputPolicy:
    """Return the output policy a request gets for the fields it leaves unset (InvalidPolicy
    naming the setting's field when the settings contradict each other)."""
    return OutputPolicy(
        **{field: getattr(settings, name) for field, name in POLICY_SETTINGS.items()}
    )


def manifest_limits(settings: Settings) -> ManifestLimits:
    """Return the CSV limits the settings ask for."""
    return ManifestLimits(
        max_bytes=settings.max_upload_bytes,
        max_rows=settings.max_rows,
        max_urls_per_row=settings.max_urls_per_row,
        max_url_length=settings.max_url_length,
        allow_private_networks=settings.allow_private_networks,
    )


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
        requests_per_second_per_host=settings.requests_per_second_per_host,
        contact_url=settings.contact_url,
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
    """Return the worker pacing the settings ask for (``cpu_pool=auto``: as embedded)."""
    return WorkerConfig(
        download_concurrency=settings.download_concurrency,
        connections_per_host=settings.connections_per_host,
        cpu_workers=settings.cpu_workers,
        cpu_pool=resolve_cpu_pool(settings.cpu_pool, embedded=True),
        max_compress_seconds=settings.max_compress_seconds,
        decode_budget=settings.decode_budget_bytes,
        max_attempts=settings.max_attempts,
        retry_base_delay=settings.retry_base_delay,
        retry_max_delay=settings.retry_max_delay,
        lease_seconds=settings.lease_seconds,
        poll_interval=settings.poll_interval,
        webhook_max_attempts=settings.webhook_max_attempts,
        webhook_concurrency=settings.webhook_concurrency,
        webhook_connections_per_host=settings.webhook_connections_per_host,
        webhook_retry_base=settings.webhook_retry_base,
        webhook_retry_max=settings.webhook_retry_max,
        shutdown_grace=settings.shutdown_grace,
        retention_seconds=settings.retention_seconds,
        compress=compress_options(settings),
    )
