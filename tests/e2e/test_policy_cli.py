"""Output options as flags of `imgcompress process` (the settings' defaults for the policy):
the images it writes are decoded; contradictory flags are a usage error naming the setting."""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

import pytest
from PIL import ExifTags, Image

from policy_kit import cutout, needs_corpus, photo, save, tagged_jpeg
from procs import EXE, env_for
from servers import LocalServer

pytestmark = needs_corpus


def process(tmp_path: Path, urls: list[str], *flags: str) -> subprocess.CompletedProcess[str]:
    source = tmp_path / "in.csv"
    lines = ["S. No.,Product Name,Input Image Urls"]
    lines += [f'{i},SKU{i},"{url}"' for i, url in enumerate(urls, 1)]
    source.write_text("\n".join(lines) + "\n")
    return subprocess.run(
        [EXE, "process", str(source), "--out", str(tmp_path / "out"), *flags],
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_process_flags_set_format_size_and_metadata(
    tmp_path: Path, image_server: LocalServer
) -> None:
    urls = [
        image_server.add("/tagged.jpg", tagged_jpeg()),
        image_server.add("/cut.png", save(cutout(), "PNG")),
    ]
    flags = ["--output-format", "avif", "--max-output-width", "300", "--output-metadata"]
    result = process(tmp_path, urls, *flags, "copyright")
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO((tmp_path / "out" / "output.csv").read_text())))
    first, second = rows[1][3], rows[2][3]
    assert first.endswith(".avif") and second.endswith(".avif")
    with Image.open(tmp_path / "out" / first) as tagged:
        assert (tagged.format, tagged.width) == ("AVIF", 300)
        assert tagged.getexif()[ExifTags.Base.Copyright] == "(c) 2026 Example Shop"
        assert ExifTags.IFD.GPSInfo not in tagged.getexif()
    with Image.open(tmp_path / "out" / second) as transparent:
        assert transparent.width == 300
        assert transparent.convert("RGBA").getpixel((1, 1))[3] == 0  # AVIF keeps alpha


@pytest.mark.slow
def test_process_with_a_preset_reports_warnings(tmp_path: Path, image_server: LocalServer) -> None:
    small = image_server.add("/small.png", save(Image.new("RGB", (500, 400), "grey"), "PNG"))
    big = image_server.add("/big.jpg", save(photo((1600, 1200)), "JPEG", quality=95))
    result = process(tmp_path, [small, big], "--output-preset", "amazon-main")
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stdout and "1000 px" in result.stdout
    rows = list(csv.reader(io.StringIO((tmp_path / "out" / "output.csv").read_text())))
    assert rows[0][-1] == "Warnings"
    assert "not pure white" in rows[1][-1]


@pytest.mark.slow
def test_process_max_bytes_flag(tmp_path: Path, image_server: LocalServer) -> None:
    url = image_server.add("/big.jpg", save(photo((1600, 1200)), "JPEG", quality=98))
    result = process(tmp_path, [url], "--max-output-bytes", "50000")
    assert result.returncode == 0, result.stderr
    [written] = (tmp_path / "out" / "images").iterdir()
    assert written.stat().st_size <= 50_000
    with Image.open(written) as image:
        assert image.size == (1600, 1200)


def test_contradictory_flags_are_a_usage_error(tmp_path: Path) -> None:
    result = process(
        tmp_path, ["http://127.0.0.1:9/a.jpg"], "--output-format", "jpeg", "--output-background"
    )
    assert result.returncode == 2  # click: --output-background needs a value
    result = process(
        tmp_path,
        ["http://127.0.0.1:9/a.jpg"],
        *("--output-format", "jpeg", "--output-background", "keep"),
    )
    assert result.returncode == 2
    assert "output_background" in result.stderr
    result = process(tmp_path, ["http://127.0.0.1:9/a.jpg"], "--output-format", "gif")
    assert result.returncode == 2
    assert "output-format" in result.stderr
