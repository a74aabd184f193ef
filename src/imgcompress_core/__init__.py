"""imgcompress_core: download, compress and track the images listed in a product CSV.

The pure library: CSV manifests in and out, Pillow compression, the request/image state
machine and the worker that drives it, behind the storage ports (``RequestStore``,
``ImageQueue``, ``DeliveryQueue``, ``BlobStore``), ``Fetcher`` and ``Notifier``, with an
in-memory and an SQLite store. It imports no web framework and no database driver;
adapters (``imgcompress_web``, ``imgcompress_mongo``) build on it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .compress import CompressedImage, CompressOptions, compress_image
    from .errors import (
        BlobNotFound,
        CompressionError,
        FetchError,
        IdempotencyConflict,
        IllegalTransition,
        ImageFailure,
        ImageNotFound,
        ImgCompressError,
        InvalidPolicy,
        InvalidWebhookUrl,
        LeaseLost,
        ManifestError,
        ManifestProblem,
        NotFound,
        NotificationError,
        RequestNotFinished,
        RequestNotFound,
        StorageError,
        StorageUnavailable,
        UploadTooLarge,
    )
    from .fetch import FetchOptions, HttpxFetcher
    from .manifest import Manifest, ManifestLimits, parse_manifest, render_output_csv
    from .model import ImageState, Progress, RequestStatus
    from .notify import WebhookNotifier
    from .options import WorkerConfig
    from .policy import OutputPolicy
    from .ports import (
        BlobStore,
        DeliveryQueue,
        Fetched,
        Fetcher,
        ImageQueue,
        Notifier,
        RequestStore,
        Storage,
    )
    from .retry import RetryPolicy
    from .runtime import Imgcompress
    from .service import Service, StatusReport, Urls
    from .settings import Settings
    from .stores import MemoryStorage, SqliteStorage
    from .worker import Worker
    from .workflow import Workflow

_EXPORTS = {  # public name -> the module that defines it, imported on first use
    "BlobNotFound": ".errors",
    "InvalidPolicy": ".errors",
    "OutputPolicy": ".policy",
    "BlobStore": ".ports",
    "DeliveryQueue": ".ports",
    "ImageQueue": ".ports",
    "RequestStore": ".ports",
    "RetryPolicy": ".retry",
    "StorageError": ".errors",
    "Workflow": ".workflow",
    "compress_image": ".compress",
    "CompressedImage": ".compress",
    "CompressionError": ".errors",
    "CompressOptions": ".compress",
    "Fetched": ".ports",
    "Fetcher": ".ports",
    "FetchError": ".errors",
    "FetchOptions": ".fetch",
    "HttpxFetcher": ".fetch",
    "IdempotencyConflict": ".errors",
    "IllegalTransition": ".errors",
    "ImageFailure": ".errors",
    "ImageNotFound": ".errors",
    "ImageState": ".model",
    "Imgcompress": ".runtime",
    "ImgCompressError": ".errors",
    "InvalidWebhookUrl": ".errors",
    "LeaseLost": ".errors",
    "Manifest": ".manifest",
    "ManifestError": ".errors",
    "ManifestLimits": ".manifest",
    "ManifestProblem": ".errors",
    "MemoryStorage": ".stores",
    "NotFound": ".errors",
    "NotificationError": ".errors",
    "Notifier": ".ports",
    "parse_manifest": ".manifest",
    "Progress": ".model",
    "render_output_csv": ".manifest",
    "RequestNotFinished": ".errors",
    "RequestNotFound": ".errors",
    "RequestStatus": ".model",
    "Service": ".service",
    "Settings": ".settings",
    "SqliteStorage": ".stores",
    "StatusReport": ".service",
    "Storage": ".ports",
    "StorageUnavailable": ".errors",
    "UploadTooLarge": ".errors",
    "Urls": ".service",
    "WebhookNotifier": ".notify",
    "Worker": ".worker",
    "WorkerConfig": ".options",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module when the name is first used (PEP 562).

    So ``import imgcompress_core.compress`` (what a compression worker process needs)
    does not import httpx, pydantic and the stores.
    """
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


from ._version import __version__ as __version__  # noqa: E402

__all__ = [
    "BlobNotFound",
    "BlobStore",
    "CompressOptions",
    "CompressedImage",
    "CompressionError",
    "DeliveryQueue",
    "FetchError",
    "FetchOptions",
    "Fetched",
    "Fetcher",
    "HttpxFetcher",
    "IdempotencyConflict",
    "IllegalTransition",
    "ImageFailure",
    "ImageNotFound",
    "ImageQueue",
    "ImageState",
    "ImgCompressError",
    "Imgcompress",
    "InvalidPolicy",
    "InvalidWebhookUrl",
    "LeaseLost",
    "Manifest",
    "ManifestError",
    "ManifestLimits",
    "ManifestProblem",
    "MemoryStorage",
    "NotFound",
    "NotificationError",
    "Notifier",
    "OutputPolicy",
    "Progress",
    "RequestNotFinished",
    "RequestNotFound",
    "RequestStatus",
    "RequestStore",
    "RetryPolicy",
    "Service",
    "Settings",
    "SqliteStorage",
    "StatusReport",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "UploadTooLarge",
    "Urls",
    "WebhookNotifier",
    "Worker",
    "WorkerConfig",
    "Workflow",
    "compress_image",
    "parse_manifest",
    "render_output_csv",
]
