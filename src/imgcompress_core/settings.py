"""One settings object for everything: environment variables ``IMGCOMPRESS_*`` and CLI flags.

Each field is read from ``IMGCOMPRESS_<FIELD NAME>`` (for example
``IMGCOMPRESS_JPEG_QUALITY=60``); the CLI adds a matching ``--field-name`` flag for each
one, generated from this class, so the two can never drift apart.

A setting that some option object also has (``CompressOptions``, ``FetchOptions``,
``ManifestLimits``, ``WorkerConfig``, ``WebhookNotifier``) takes its default from there,
so each default is written once; :mod:`.options` maps settings to those objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .compress import CompressOptions
from .fetch import FetchOptions
from .manifest import ManifestLimits
from .notify import WebhookNotifier
from .options import (
    CpuPoolSetting,
    WorkerConfig,
    available_cpus,
    compress_options,
    option_default,
    parameter_default,
)
from .policy import OutputPolicy

__all__ = ["Settings", "settings_table"]


def _compress(name: str) -> Any:
    return option_default(CompressOptions, name)


def _fetch(name: str) -> Any:
    return option_default(FetchOptions, name)


def _manifest(name: str) -> Any:
    return option_default(ManifestLimits, name)


def _worker(name: str) -> Any:
    return option_default(WorkerConfig, name)


def _policy(name: str) -> Any:
    return option_default(OutputPolicy, name)


def _hosts(value: str) -> frozenset[str]:
    return frozenset(h.strip().lower() for h in value.split(",") if h.strip())


class Settings(BaseSettings):
    """Every setting of imgcompress, with its default."""

    model_config = SettingsConfigDict(env_prefix="IMGCOMPRESS_", extra="forbid", frozen=True)

    # Where state lives.
    database: Path = Field(
        Path("imgcompress.sqlite3"), description="SQLite file of the embedded store"
    )
    mongodb_uri: str | None = Field(
        None, description="use MongoDB (this URI) instead of SQLite; needs imgcompress[mongo]"
    )
    blob_url: str | None = Field(
        None,
        description="keep the processed images here instead of in the database: "
        "file:///directory, or s3://bucket/prefix?endpoint=...&region=... (needs "
        "imgcompress[s3]; credentials from the AWS_* variables)",
    )
    blob_public_url: str | None = Field(
        None,
        description="base URL (a CDN or public bucket) where the blob store's keys are served; "
        "output CSVs and status documents then link there directly",
    )
    blob_presign_seconds: int = Field(
        3600,
        ge=1,
        le=604800,
        description="lifetime of the presigned links /api/images/{id} redirects to (S3 "
        "without blob_public_url)",
    )

    # The web service.
    host: str = Field("127.0.0.1", description="address `serve` listens on")
    port: int = Field(8000, ge=0, le=65535, description="port `serve` listens on")
    public_url: str | None = Field(
        None,
        description="base URL written into output CSVs and webhooks (default: from the request "
        "or http://HOST:PORT)",
    )
    run_worker: bool = Field(True, description="`serve` also processes images in-process")

    api_keys: str = Field(
        "",
        description="if set, the API needs `Authorization: Bearer <key>` with one of these "
        "comma-separated keys, and each key sees only its own requests",
    )
    trusted_hosts: str = Field(
        "",
        description="Host header values the service answers to, comma-separated (host or "
        "host:port; *.example.com for subdomains); links are built from the request's Host "
        "only when public_url is unset (default: HOST:PORT, localhost:PORT, 127.0.0.1:PORT, "
        "[::1]:PORT and public_url's host)",
    )
    client_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds a client may take to send a request's headers, or pause while "
        "sending its body; then 408 and the connection is closed",
    )
    upload_deadline: float = Field(
        300.0, gt=0, description="seconds a client may take to send one whole request body"
    )
    keep_alive_timeout: int = Field(
        5, ge=1, description="seconds an idle keep-alive connection is kept open"
    )

    # What the service may fetch.
    allow_private_networks: bool = Field(
        _fetch("allow_private_networks"),
        description="allow image and webhook URLs on loopback, private and link-local "
        "addresses (tests and demos only)",
    )

    allowed_hosts: str = Field(
        "",
        description="if set, only these image hosts may be fetched (comma-separated; "
        "*.example.com matches subdomains); narrows, never widens",
    )
    webhook_allowed_hosts: str = Field(
        "", description="if set, webhooks may only go to these hosts (comma-separated)"
    )
    outbound_proxy: str | None = Field(
        _fetch("proxy"),
        description="send downloads and webhooks through this http(s) proxy; environment "
        "proxy variables are always ignored",
    )

    # Compression.
    jpeg_quality: int = Field(
        _compress("quality"), ge=1, le=95, description="JPEG/WebP quality of the output"
    )
    jpeg_encoder: Literal["libjpeg-turbo", "libjpeg-turbo-robidoux", "jpegli"] = Field(
        _compress("jpeg_encoder"),
        description="who writes JPEGs: libjpeg-turbo (Pillow), libjpeg-turbo with "
        "N. Robidoux's quantisation tables, or jpegli (needs imgcompress[jpegli]; grey and "
        "CMYK JPEGs stay with Pillow)",
    )
    jpeg_progressive: bool = Field(
        _compress("jpeg_progressive"),
        description="write progressive JPEGs (libjpeg-turbo only): the same pixels, about 2 % "
        "smaller near quality 80, 2.5 times the encode time",
    )
    accelerators: bool = Field(
        _compress("accelerators"),
        description="use the faster codecs (imgcompress[fast]) and the compiled accelerators "
        "when installed; false: Pillow decodes and encodes everything",
    )
    max_image_pixels: int = Field(
        _compress("max_pixels"),
        ge=1,
        description="largest image accepted, in pixels (width x height)",
    )
    max_animation_frames: int = Field(
        _compress("max_frames"), ge=1, description="most frames in an animated GIF, WebP or PNG"
    )
    max_animation_pixels: int = Field(
        _compress("max_animation_pixels"),
        ge=1,
        description="largest animation, in pixels (width x height x frames)",
    )
    max_jpeg_scans: int = Field(
        _compress("max_scans"),
        ge=1,
        description="most scans in a progressive JPEG (each one decodes it again)",
    )
    max_decode_bytes: int = Field(
        _compress("max_decode_bytes"),
        ge=1,
        description="largest decoded image (width x height x bytes a pixel): one over it "
        "fails; images compressed at once never exceed it together either",
    )
    decode_budget_bytes: int = Field(
        _worker("decode_budget"),
        ge=1,
        description="decoded bytes of the images compressed at once: an image that would "
        "take them past this waits (alone, any image up to max_decode_bytes runs)",
    )
    max_compress_seconds: int = Field(
        _worker("max_compress_seconds"),
        ge=1,
        description="CPU seconds one image may take (enforced with cpu_pool=processes)",
    )

    # The output policy's defaults: what a request that does not say gets (docs/compression.md).
    output_format: Literal["jpeg", "webp", "avif", "auto", "original"] | None = Field(
        _policy("format"),
        description="output format: jpeg, webp, avif, auto (the smallest of them) or original "
        "(the input's family); unset: JPEG, or WebP for transparent images",
    )
    target_quality: float | None = Field(
        _policy("target_quality"),
        ge=30,
        le=95,
        description="a SSIMULACRA2 score (30-95) each image reaches with the smallest output, "
        "instead of jpeg_quality; needs imgcompress[target]",
    )
    max_output_bytes: int | None = Field(
        _policy("max_bytes"),
        ge=1024,
        description="largest output file: the quality is lowered to fit (never the size), "
        "else the image fails",
    )
    max_output_width: int | None = Field(
        _policy("max_width"), ge=1, description="shrink wider images to this width (never enlarge)"
    )
    max_output_height: int | None = Field(
        _policy("max_height"), ge=1, description="shrink taller images to this height"
    )
    output_background: str | None = Field(
        _policy("background"),
        description="keep (transparency kept) or a colour #rrggbb to flatten transparent "
        "images onto; unset: keep, white for JPEG",
    )
    output_metadata: Literal["strip", "copyright"] | None = Field(
        _policy("metadata"),
        description="strip (all but the ICC profile) or copyright (also keep copyright, "
        "artist, IPTC rights, digital source type); GPS is always removed",
    )
    output_preset: Literal["web", "shopify", "google-merchant", "amazon-main"] | None = Field(
        _policy("preset"),
        description="a store's rules: fills the fields above and warns per image about rules "
        "an image breaks that the policy cannot fix",
    )

    # Upload limits.
    max_upload_bytes: int = Field(_manifest("max_bytes"), ge=1, description="largest CSV accepted")
    max_rows: int = Field(_manifest("max_rows"), ge=1, description="most product rows in one CSV")
    max_urls_per_row: int = Field(
        _manifest("max_urls_per_row"), ge=1, description="most image URLs in one row"
    )
    max_url_length: int = Field(
        _manifest("max_url_length"), ge=16, description="longest image URL accepted"
    )

    # Downloads.
    max_image_bytes: int = Field(
        _fetch("max_bytes"), ge=1, description="largest image download, in bytes"
    )
    connect_timeout: float = Field(
        _fetch("connect_timeout"), gt=0, description="seconds to connect to a server"
    )
    read_timeout: float = Field(
        _fetch("read_timeout"), gt=0, description="seconds to wait for each read"
    )
    download_deadline: float = Field(
        _fetch("deadline"), gt=0, description="seconds for a whole download"
    )
    max_redirects: int = Field(
        _fetch("max_redirects"), ge=0, description="redirect hops followed per download"
    )
    download_concurrency: int = Field(
        _worker("download_concurrency"), ge=1, description="downloads in flight per worker"
    )
    connections_per_host: int = Field(
        _fetch("connections_per_host"),
        ge=1,
        description="downloads in flight from one host per worker (halved for each recent "
        "timeout of that host, down to one)",
    )
    requests_per_second_per_host: float = Field(
        _fetch("requests_per_second_per_host"),
        ge=0,
        description="downloads started per second to one host, per worker (0: no limit); "
        "halved while the host answers 429 or 503, restored slowly; Retry-After is honoured",
    )
    contact_url: str | None = Field(
        _fetch("contact_url"),
        description="a URL (or mailto:) added to the User-Agent of downloads, so site "
        "owners can reach you",
    )

    # The worker.
    cpu_workers: int = Field(
        default_factory=available_cpus,
        ge=1,
        description="images compressed at once (default: the CPUs available)",
    )
    cpu_pool: CpuPoolSetting = Field(
        "auto",
        description=(
            "where images are compressed: worker processes or threads; auto = processes"
            " in the imgcompress command, threads when embedded"
        ),
    )
    max_attempts: int = Field(
        _worker("max_attempts"), ge=1, description="tries per image for transient failures"
    )
    retry_base_delay: float = Field(
        _worker("retry_base_delay"), ge=0, description="first retry delay in seconds"
    )
    retry_max_delay: float = Field(
        _worker("retry_max_delay"), ge=0, description="longest retry delay in seconds"
    )
    lease_seconds: float = Field(
        _worker("lease_seconds"), gt=0, description="how long a claim on an image lasts"
    )
    poll_interval: float = Field(
        _worker("poll_interval"), gt=0, description="seconds between looks for new work"
    )
    shutdown_grace: float = Field(
        _worker("shutdown_grace"),
        ge=0,
        description="seconds a stopping worker lets images in flight finish",
    )

    retention_seconds: float = Field(
        _worker("retention_seconds"),
        ge=0,
        description="delete finished requests and their images after this long (0: keep)",
    )

    # Webhooks.
    webhook_timeout: float = Field(
        parameter_default(WebhookNotifier, "timeout"),
        gt=0,
        description="seconds for one webhook POST",
    )
    webhook_secret: str | None = Field(
        parameter_default(WebhookNotifier, "secret"),
        description="sign webhooks the Standard Webhooks way with this secret (whsec_... or "
        "any string)",
    )
    webhook_max_attempts: int = Field(
        _worker("webhook_max_attempts"),
        ge=1,
        description="tries per webhook delivery (with the defaults: about a day)",
    )
    webhook_retry_base: float = Field(
        _worker("webhook_retry_base"), ge=0, description="first webhook retry delay, s"
    )
    webhook_concurrency: int = Field(
        _worker("webhook_concurrency"), ge=1, description="webhook deliveries in flight per worker"
    )
    webhook_connections_per_host: int = Field(
        _worker("webhook_connections_per_host"),
        ge=1,
        description="webhook deliveries in flight to one receiving host",
    )
    webhook_retry_max: float = Field(
        _worker("webhook_retry_max"), ge=0, description="longest webhook retry delay, s"
    )

    @model_validator(mode="after")
    def _compression_options_hold(self) -> Settings:
        """Refuse at start-up, not image by image, compression options that do not go
        together (jpegli not installed, progressive jpegli): CompressOptions' own checks."""
        compress_options(self)
        return self

    def api_key_set(self) -> frozenset[str]:
        """Return the accepted API keys (empty: the API is open)."""
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())

    def image_hosts(self) -> frozenset[str]:
        """Return the image-host allow-list (empty: any public host)."""
        return _hosts(self.allowed_hosts)

    def webhook_hosts(self) -> frozenset[str]:
        """Return the webhook-host allow-list (empty: any public host)."""
        return _hosts(self.webhook_allowed_hosts)

    def base_url(self) -> str:
        """Return the public base URL without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"


def settings_table() -> str:
    """Return the Markdown table of every setting: variable, flag, default, meaning."""
    lines = [
        "| environment variable | flag | default | what it does |",
        "| --- | --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = "number of CPUs"
        elif field.default is None:
            default = "unset"
        else:
            default = f"`{field.default}`"
            if isinstance(field.default, bool):
                default = f"`{str(field.default).lower()}`"
        flag = name.replace("_", "-")
        if field.annotation is bool:
            flag = f"[no-]{flag}"
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `IMGCOMPRESS_{name.upper()}` | `--{flag}` | {default} | {description} |")
    return "\n".join(lines) + "\n"
