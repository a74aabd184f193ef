"""deploy/compose.yaml stays in step with the settings (no machine here runs Docker, so
this is what checks it): every IMGCOMPRESS_* variable it sets is a setting, the values
parse, and the blob URL opens the S3 store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from imgcompress_core import Settings
from imgcompress_core.blobs import blobs_from_settings
from imgcompress_s3 import S3BlobStore

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"


def test_compose_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared environment of serve and the workers opens the bucket."""
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"mongo", "minio", "bucket", "serve", "worker"} <= set(services)
    env = services["worker"]["environment"]
    assert env == services["serve"]["environment"]
    for name in [n for n in os.environ if n.startswith("IMGCOMPRESS_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    settings = Settings()
    fields = {f"IMGCOMPRESS_{name.upper()}" for name in Settings.model_fields}
    assert {n for n in env if n.startswith("IMGCOMPRESS_")} <= fields
    assert settings.mongodb_uri and "replicaSet=rs0" in settings.mongodb_uri
    blobs = blobs_from_settings(settings)  # (a MongoDB client would look for its host)
    assert isinstance(blobs, S3BlobStore)
    assert (blobs.bucket, blobs.endpoint) == ("imgcompress", "http://minio:9000")
    assert services["worker"]["command"] == ["worker"]
    assert "--no-run-worker" in services["serve"]["command"]
