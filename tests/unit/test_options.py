"""Settings and the option objects agree: one default per setting, one mapping, one `auto`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import pytest

from imgcompress_core import CompressOptions, FetchOptions, ManifestLimits, Settings
from imgcompress_core.notify import WebhookNotifier
from imgcompress_core.options import (
    WorkerConfig,
    available_cpus,
    compress_options,
    fetch_options,
    manifest_limits,
    option_default,
    parameter_default,
    resolve_cpu_pool,
    worker_config,
)
from imgcompress_core.policy import OutputPolicy
from imgcompress_web.cli import load_settings

# Each setting that an option object also has: (setting, option class, its field there).
MAPPED: list[tuple[str, type[Any], str]] = [
    ("allow_private_networks", FetchOptions, "allow_private_networks"),
    ("allow_private_networks", ManifestLimits, "allow_private_networks"),
    ("outbound_proxy", FetchOptions, "proxy"),
    ("jpeg_quality", CompressOptions, "quality"),
    ("jpeg_encoder", CompressOptions, "jpeg_encoder"),
    ("jpeg_progressive", CompressOptions, "jpeg_progressive"),
    ("accelerators", CompressOptions, "accelerators"),
    ("max_image_pixels", CompressOptions, "max_pixels"),
    ("max_animation_frames", CompressOptions, "max_frames"),
    ("max_animation_pixels", CompressOptions, "max_animation_pixels"),
    ("max_jpeg_scans", CompressOptions, "max_scans"),
    ("max_compress_seconds", WorkerConfig, "max_compress_seconds"),
    ("max_upload_bytes", ManifestLimits, "max_bytes"),
    ("max_rows", ManifestLimits, "max_rows"),
    ("max_urls_per_row", ManifestLimits, "max_urls_per_row"),
    ("max_url_length", ManifestLimits, "max_url_length"),
    ("max_image_bytes", FetchOptions, "max_bytes"),
    ("connect_timeout", FetchOptions, "connect_timeout"),
    ("read_timeout", FetchOptions, "read_timeout"),
    ("download_deadline", FetchOptions, "deadline"),
    ("max_redirects", FetchOptions, "max_redirects"),
    ("download_concurrency", FetchOptions, "max_connections"),
    ("download_concurrency", WorkerConfig, "download_concurrency"),
    ("connections_per_host", FetchOptions, "connections_per_host"),
    ("connections_per_host", WorkerConfig, "connections_per_host"),
    ("requests_per_second_per_host", FetchOptions, "requests_per_second_per_host"),
    ("contact_url", FetchOptions, "contact_url"),
    ("max_decode_bytes", CompressOptions, "max_decode_bytes"),
    ("decode_budget_bytes", WorkerConfig, "decode_budget"),
    ("cpu_workers", WorkerConfig, "cpu_workers"),
    ("max_attempts", WorkerConfig, "max_attempts"),
    ("retry_base_delay", WorkerConfig, "retry_base_delay"),
    ("retry_max_delay", WorkerConfig, "retry_max_delay"),
    ("lease_seconds", WorkerConfig, "lease_seconds"),
    ("poll_interval", WorkerConfig, "poll_interval"),
    ("shutdown_grace", WorkerConfig, "shutdown_grace"),
    ("retention_seconds", WorkerConfig, "retention_seconds"),
    ("webhook_timeout", WebhookNotifier, "timeout"),
    ("webhook_secret", WebhookNotifier, "secret"),
    ("webhook_max_attempts", WorkerConfig, "webhook_max_attempts"),
    ("webhook_retry_base", WorkerConfig, "webhook_retry_base"),
    ("webhook_retry_max", WorkerConfig, "webhook_retry_max"),
    ("webhook_concurrency", WorkerConfig, "webhook_concurrency"),
    ("webhook_connections_per_host", WorkerConfig, "webhook_connections_per_host"),
    # The output policy's defaults (options.default_policy; tests/unit/test_policy.py).
    ("output_format", OutputPolicy, "format"),
    ("target_quality", OutputPolicy, "target_quality"),
    ("max_output_bytes", OutputPolicy, "max_bytes"),
    ("max_output_width", OutputPolicy, "max_width"),
    ("max_output_height", OutputPolicy, "max_height"),
    ("output_background", OutputPolicy, "background"),
    ("output_metadata", OutputPolicy, "metadata"),
    ("output_preset", OutputPolicy, "preset"),
]

# Settings no option object has in the same form (the service's own, or another shape:
# a comma-separated string where the option is a set, `auto` where it is a pool).
UNMAPPED = {
    "database",
    "mongodb_uri",
    "blob_url",
    "blob_public_url",
    "blob_presign_seconds",
    "host",
    "port",
    "public_url",
    "run_worker",
    "api_keys",
    "trusted_hosts",
    "client_timeout",
    "upload_deadline",
    "keep_alive_timeout",
    "allowed_hosts",
    "webhook_allowed_hosts",
    "cpu_pool",
}

# How options.py builds each option class from settings (WebhookNotifier: runtime.py).
BUILDERS: dict[type[Any], Callable[[Settings], Any]] = {
    CompressOptions: compress_options,
    FetchOptions: fetch_options,
    ManifestLimits: manifest_limits,
    WorkerConfig: worker_config,
}


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults only: no IMGCOMPRESS_* variable of the machine running the tests."""
    for name in list(os.environ):
        if name.upper().startswith("IMGCOMPRESS_"):
            monkeypatch.delenv(name)


def _default(owner: type[Any], name: str) -> Any:
    if dataclasses.is_dataclass(owner):
        return option_default(owner, name)
    return parameter_default(owner, name)


def test_every_setting_is_classified() -> None:
    """A new setting must be added to MAPPED or UNMAPPED, so this file keeps up."""
    mapped = {setting for setting, _, _ in MAPPED}
    assert mapped.isdisjoint(UNMAPPED)
    assert mapped | UNMAPPED == set(Settings.model_fields)


@pytest.mark.parametrize(
    ("setting", "owner", "name"), MAPPED, ids=[f"{s}-{o.__name__}" for s, o, _ in MAPPED]
)
def test_setting_default_is_the_option_default(setting: str, owner: type[Any], name: str) -> None:
    """Settings().<setting> is the default of the option it maps to: they cannot drift."""
    assert getattr(Settings(), setting) == _default(owner, name)


@pytest.mark.parametrize("owner", list(BUILDERS), ids=lambda owner: owner.__name__)
def test_default_settings_build_default_options(owner: type[Any]) -> None:
    """Options built from default settings equal the option class's own defaults."""
    assert BUILDERS[owner](Settings()) == owner()


def _changed(value: Any) -> Any:
    """A valid value different from a setting's default."""
    if isinstance(value, bool):
        return not value
    if value is None:
        return "http://proxy.example:3128"
    if value == "libjpeg-turbo":
        return "jpegli"
    return value + 1


@pytest.mark.parametrize(
    ("setting", "owner", "name"),
    [m for m in MAPPED if m[1] in BUILDERS],
    ids=[f"{s}-{o.__name__}" for s, o, _ in MAPPED if o in BUILDERS],
)
def test_each_setting_reaches_its_option(setting: str, owner: type[Any], name: str) -> None:
    """A setting given a non-default value arrives in the option object built from it."""
    value = _changed(getattr(Settings(), setting))
    built = BUILDERS[owner](Settings(**{setting: value}))
    assert getattr(built, name) == value
    if owner is CompressOptions:  # the worker's copy of the compression options, too
        assert getattr(worker_config(Settings(**{setting: value})).compress, name) == value


def test_cpu_workers_default_is_the_cpus_available() -> None:
    """Settings and WorkerConfig agree on the CPU count, from one function."""
    assert Settings().cpu_workers == WorkerConfig().cpu_workers == available_cpus() >= 1


@pytest.mark.parametrize(
    ("setting", "embedded", "pool"),
    [
        ("auto", True, "threads"),
        ("auto", False, "processes"),
        ("threads", True, "threads"),
        ("threads", False, "threads"),
        ("processes", True, "processes"),
        ("processes", False, "processes"),
    ],
)
def test_resolve_cpu_pool(setting: Any, embedded: bool, pool: str) -> None:
    """`auto` is threads when embedded and processes in the command; the others stay."""
    assert resolve_cpu_pool(setting, embedded=embedded) == pool


def test_auto_pool_is_threads_embedded_and_processes_in_the_command() -> None:
    """Both places that resolve `auto` go through resolve_cpu_pool."""
    assert worker_config(Settings()).cpu_pool == "threads"
    command = load_settings({})
    assert command.cpu_pool == "processes"
    assert worker_config(command).cpu_pool == "processes"
    assert load_settings({"cpu_pool": "threads"}).cpu_pool == "threads"


def test_option_default_reports_unknown_fields() -> None:
    """A typo in a field name fails loudly at import time, not with a wrong default."""
    with pytest.raises(ValueError, match="no field"):
        option_default(FetchOptions, "max_byte")
    with pytest.raises(ValueError, match="no parameter"):
        parameter_default(WebhookNotifier, "timeot")
