"""imgcompress_web: the Litestar HTTP service and the ``imgcompress`` command line."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
