"""Fixtures for the end-to-end tests."""

from __future__ import annotations

import pytest

from imgcompress_core import Settings


@pytest.fixture
def test_settings(test_settings: Settings) -> Settings:
    """The shared test settings, plus the Host Litestar's test client sends.

    The service answers only to trusted Host headers; the test client says
    ``testserver.local``, which a real deployment would not list.
    """
    return test_settings.model_copy(update={"trusted_hosts": "testserver.local"})
