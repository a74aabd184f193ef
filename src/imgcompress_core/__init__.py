"""imgcompress_core: download, compress and track the images listed in a product CSV.

The pure library: CSV manifests in and out, Pillow compression, the request/image state
machine and the worker that drives it, behind the ``Storage``, ``Fetcher`` and
``Notifier`` ports, with an in-memory and an SQLite store. It imports no web framework
and no database driver; adapters (``imgcompress_web``, ``imgcompress_mongo``) build on it.
"""

from __future__ import annotations

from .compress import CompressedImage, CompressOptions, compress_image
from .errors import (
    CompressionError,
    FetchError,
    IdempotencyConflict,
    IllegalTransition,
    ImageFailure,
    ImageNotFound,
    ImgCompressError,
    InvalidWebhookUrl,
    LeaseLost,
    ManifestError,
    ManifestProblem,
    NotFound,
    NotificationError,
    RequestNotFinished,
    RequestNotFound,
    StorageUnavailable,
    UploadTooLarge,
)
from .fetch import FetchOptions, HttpxFetcher
from .manifest import Manifest, ManifestLimits, parse_manifest, render_output_csv
from .model import ImageState, Progress, RequestStatus
from .notify import WebhookNotifier
from .ports import Fetched, Fetcher, Notifier, Storage
from .runtime import Imgcompress
from .service import Service, StatusReport, Urls
from .settings import Settings
from .stores import MemoryStorage, SqliteStorage
from .worker import Worker, WorkerConfig

__version__ = "0.1.0"

__all__ = [
    "CompressOptions",
    "CompressedImage",
    "CompressionError",
    "FetchError",
    "FetchOptions",
    "Fetched",
    "Fetcher",
    "HttpxFetcher",
    "IdempotencyConflict",
    "IllegalTransition",
    "ImageFailure",
    "ImageNotFound",
    "ImageState",
    "ImgCompressError",
    "Imgcompress",
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
    "Progress",
    "RequestNotFinished",
    "RequestNotFound",
    "RequestStatus",
    "Service",
    "Settings",
    "SqliteStorage",
    "StatusReport",
    "Storage",
    "StorageUnavailable",
    "UploadTooLarge",
    "Urls",
    "WebhookNotifier",
    "Worker",
    "WorkerConfig",
    "compress_image",
    "parse_manifest",
    "render_output_csv",
]
