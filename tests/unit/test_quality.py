"""The quality gates run with the tests, so the one test command checks everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    """Run a tool from this environment at the repository root."""
    return subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    "command",
    [
        ("ruff", "check", "src", "tests", "benchmarks", "noxfile.py"),
        ("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py"),
        ("mypy", "--strict", "src"),
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_quality_gate(command: tuple[str, ...]) -> None:
    """ruff check, ruff format --check and mypy --strict on src/ pass."""
    result = run(*command)
    assert result.returncode == 0, result.stdout + result.stderr
