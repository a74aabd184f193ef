"""The compiled accelerators this checkout tests are built from its own C sources.

pip skips an optional extension that fails to compile and keeps the file an earlier build
left beside the sources, so without this a C change that does not compile would be tested
as the old code, silently."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest


@pytest.mark.parametrize("name", ["_requantise", "_unfilter"])
def test_each_extension_is_newer_than_its_source(name: str) -> None:
    module = importlib.import_module(f"imgcompress_core.{name}")  # built, or the test fails
    assert module.__file__ is not None
    built = Path(module.__file__)
    source = built.parent / f"{name}.c"
    if not source.exists():
        return  # installed from a wheel, which ships no C sources: nothing to be stale against
    assert built.stat().st_mtime >= source.stat().st_mtime, (
        f"{built.name} is older than {source.name}: rebuild it (pip install -e .) and read "
        "the compiler's errors if it does not rebuild"
    )
