"""`imgcompress process --cache` reuses the store it is pointed at: a feed processed again
asks conditionally, downloads and compresses nothing unchanged, and writes the same files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from procs import EXE, env_for
from servers import LocalServer, photo


def run_process(tmp_path: Path, source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """Run `imgcompress process --cache` on the test's SQLite file."""
    return subprocess.run(
        [EXE, "process", str(source), "--out", str(out), "--cache", "--cpu-pool", "threads"],
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_process_with_cache_reuses_earlier_work(tmp_path: Path, image_server: LocalServer) -> None:
    """The second run gets 304 for every image and writes identical output."""
    urls = [
        image_server.add(f"/c{n}.jpg", photo(seed=n), headers={"ETag": f'"c{n}"'}) for n in range(3)
    ]
    source = tmp_path / "in.csv"
    rows = "\n".join(f"{n + 1},P{n},{url}" for n, url in enumerate(urls))
    source.write_text(f"S. No.,Product Name,Input Image Urls\n{rows}\n")
    first = run_process(tmp_path, source, tmp_path / "first")
    assert first.returncode == 0, first.stderr
    sent = image_server.body_bytes_sent
    second = run_process(tmp_path, source, tmp_path / "second")
    assert second.returncode == 0, second.stderr
    assert image_server.not_modified == 3
    assert image_server.body_bytes_sent == sent  # nothing downloaded again
    for name in ("output.csv", *(f"images/row{n + 2}-1-{n + 1}.jpg" for n in range(3))):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()
