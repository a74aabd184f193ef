"""Run sharp (Node, the seed's library) side by side with the Python approaches.

Needs ``node`` and ``npm`` on PATH. sharp is installed at run time with ``npm install``
into a directory under the system temp dir (outside the repository; reused by later
runs), never into the project. When anything is missing or fails, :class:`SharpUnavailable`
says why and the caller skips the comparison.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["SHARP_HOME", "SharpUnavailable", "run_sharp", "run_sharp_job"]

SHARP_HOME = Path(tempfile.gettempdir()) / "imgcompress-bench-sharp"
_RUNNER = Path(__file__).with_name("sharp_bench.mjs")
_JOB_RUNNER = Path(__file__).with_name("sharp_job.mjs")


class SharpUnavailable(RuntimeError):
    """sharp cannot be run here; the message says why."""


def _install() -> None:
    if (SHARP_HOME / "node_modules" / "sharp" / "package.json").is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SharpUnavailable("npm is not on PATH")
    SHARP_HOME.mkdir(parents=True, exist_ok=True)
    (SHARP_HOME / "package.json").write_text('{"private": true}\n')
    command = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "sharp"]
    try:
        done = subprocess.run(
            command, cwd=SHARP_HOME, capture_output=True, text=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise SharpUnavailable("npm install sharp took over 10 minutes") from exc
    if done.returncode != 0:
        raise SharpUnavailable(f"npm install sharp failed: {done.stderr.strip()[-500:]}")


def _node() -> str:
    """Return node's path once sharp is installed."""
    node = shutil.which("node")
    if node is None:
        raise SharpUnavailable("node is not on PATH")
    _install()
    return node


def _run(command: list[str]) -> dict[str, Any]:
    """Run a runner and return the JSON document it prints."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise SharpUnavailable(f"the sharp runner failed: {done.stderr.strip()[-800:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run_sharp(files: list[Path], rounds: int, quality: int, out_dir: Path) -> dict[str, Any]:
    """Time sharp over ``files`` (in that order); return the runner's JSON document."""
    node = _node()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as listing:
        json.dump([str(f) for f in files], listing)
    command = [node, str(_RUNNER), str(SHARP_HOME), listing.name, str(rounds), str(out_dir)]
    try:
        return _run([*command, str(quality)])
    finally:
        Path(listing.name).unlink()


def run_sharp_job(
    files: list[Path], tasks: list[tuple[int, str]], recipe: str, quality: int, rounds: int
) -> dict[str, Any]:
    """Time sharp doing ``tasks`` (file index, output format) all in flight, ``recipe``
    "same" (each task's format) or "flatten" (onto white, JPEG); see sharp_job.mjs."""
    node = _node()
    job = {"files": [str(f) for f in files], "tasks": tasks, "recipe": recipe, "quality": quality}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as listing:
        json.dump(job, listing)
    try:
        return _run([node, str(_JOB_RUNNER), str(SHARP_HOME), listing.name, str(rounds)])
    finally:
        Path(listing.name).unlink()
