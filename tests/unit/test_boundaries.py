"""The package shape holds: the core needs no adapter, adapters do not know each other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imgcompress_core

ROOT = Path(__file__).resolve().parents[2]

BLOCKER = """
import sys
from importlib.abc import MetaPathFinder

class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"litestar", "pymongo", "uvicorn", "click", "imgcompress_web",
                                   "imgcompress_mongo", "bson", "motor"}:
            raise ImportError(f"blocked: {name}")
        return None

sys.meta_path.insert(0, Block())
import anyio
import imgcompress_core
from imgcompress_core import Imgcompress, MemoryStorage, Settings

async def main():
    async with Imgcompress(Settings(), storage=MemoryStorage()) as ic:
        request_id = await ic.submit(b"S. No.,Product Name,Input Image Urls\\n1,A,https://a.example/x.jpg\\n")
        assert (await ic.status(request_id)).progress.total == 1

anyio.run(main)
print("core ok without adapters")
"""


def test_core_works_with_adapters_and_frameworks_unimportable() -> None:
    """imgcompress_core imports and runs with litestar, pymongo and the adapters blocked."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "core ok without adapters" in result.stdout


def test_import_contracts_hold() -> None:
    """import-linter's contracts in pyproject.toml pass (core never imports adapters)."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_public_api_is_exported() -> None:
    """Every name in imgcompress_core.__all__ exists and has a docstring."""
    for name in imgcompress_core.__all__:
        obj = getattr(imgcompress_core, name)
        assert obj.__doc__, name
