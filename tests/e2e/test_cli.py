"""The `imgcompress` command for real: `serve` under uvicorn, `worker`, and `process`."""

from __future__ import annotations

import csv
import io
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from procs import EXE, ServiceProcess, env_for, free_port, wait_final
from servers import LocalServer, corpus_images, photo


def products_csv(urls: list[str]) -> bytes:
    """A two-product CSV over the given URLs."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["S. No.", "Product Name", "Input Image Urls"])
    writer.writerow(["1", "SKU1", ",".join(urls[:-1])])
    writer.writerow(["2", "SKU2", urls[-1]])
    return out.getvalue().encode()


@pytest.mark.slow
def test_serve_upload_status_output_webhook(
    tmp_path: Path,
    services: list[ServiceProcess],
    image_server: LocalServer,
    webhook_receiver: LocalServer,
    store: tuple[str, str | None],
) -> None:
    """`imgcompress serve` under uvicorn on each store: upload, status, output, webhook."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = env_for(tmp_path)
    if store[1]:
        env["IMGCOMPRESS_MONGODB_URI"] = store[1]
    service = ServiceProcess(["serve", "--port", str(port)], env, tmp_path / "serve.log")
    services.append(service)
    service.wait_http(base)

    originals = corpus_images(3)
    urls = [image_server.add(f"/{i}.jpg", data) for i, data in enumerate(originals)]
    response = httpx.post(
        f"{base}/api/upload",
        files={"file": ("products.csv", products_csv(urls), "text/csv")},
        data={"webhook_url": webhook_receiver.url("/hook")},
    )
    assert response.status_code == 202, response.text
    request_id = response.json()["requestId"]
    status = wait_final(base, request_id)
    assert status["status"] == "Completed"
    assert status["progress"]["done"] == 3

    output = httpx.get(f"{base}/api/requests/{request_id}/output.csv").text
    rows = list(csv.reader(io.StringIO(output)))
    image_urls = [*rows[1][3].split(","), rows[2][3]]
    for url, original in zip(image_urls, originals, strict=True):
        served = httpx.get(url)
        assert served.status_code == 200
        with Image.open(io.BytesIO(served.content)) as out, Image.open(io.BytesIO(original)) as src:
            assert out.format == "JPEG"
            assert out.size == src.size
        assert len(served.content) <= len(original)

    deadline = time.monotonic() + 20
    while not webhook_receiver.posts() and time.monotonic() < deadline:
        time.sleep(0.1)
    [hook] = webhook_receiver.posts()
    assert hook.json()["requestId"] == request_id
    assert hook.json()["status"] == "Completed"
    assert service.stop() == 0


@pytest.mark.slow
def test_separate_worker_process_does_the_work(
    tmp_path: Path, services: list[ServiceProcess], image_server: LocalServer
) -> None:
    """`serve --no-run-worker` only accepts; an `imgcompress worker` on the same file works."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = env_for(tmp_path)
    web = ServiceProcess(
        ["serve", "--port", str(port), "--no-run-worker"], env, tmp_path / "web.log"
    )
    services.append(web)
    web.wait_http(base)
    url = image_server.add("/a.jpg", photo())
    response = httpx.post(
        f"{base}/api/upload",
        files={"file": ("p.csv", products_csv([url, url]), "text/csv")},
    )
    request_id = response.json()["requestId"]
    time.sleep(0.5)
    assert httpx.get(f"{base}/api/status/{request_id}").json()["status"] == "Pending"

    worker = ServiceProcess(["worker"], env, tmp_path / "worker.log")
    services.append(worker)
    assert wait_final(base, request_id)["status"] == "Completed"
    assert worker.stop() == 0
    assert web.stop() == 0


@pytest.mark.slow
def test_process_offline(tmp_path: Path, image_server: LocalServer) -> None:
    """`imgcompress process` writes the images and an output CSV pointing at them."""
    originals = corpus_images(2)
    urls = [image_server.add(f"/{i}.jpg", data) for i, data in enumerate(originals)]
    urls.append(image_server.url("/missing.jpg"))
    source = tmp_path / "in.csv"
    source.write_bytes(products_csv(urls))
    out = tmp_path / "out"
    result = subprocess.run(
        [EXE, "process", str(source), "--out", str(out)],
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Completed: 2 of 3 images compressed, 1 failed" in result.stdout
    assert "upstream_http_404" in result.stdout
    rows = list(csv.reader(io.StringIO((out / "output.csv").read_text())))
    assert rows[0][-1] == "Output Image Urls"
    assert rows[1][3] == "images/row2-1-1.jpg,images/row2-2-1.jpg"
    assert rows[2][3] == ""
    for name, original in zip(["row2-1-1.jpg", "row2-2-1.jpg"], originals, strict=True):
        data = (out / "images" / name).read_bytes()
        assert len(data) <= len(original)
        with Image.open(out / "images" / name) as image:
            assert image.format == "JPEG"


def test_process_rejects_a_bad_csv(tmp_path: Path) -> None:
    """A bad CSV makes `process` exit 2 and list each problem."""
    source = tmp_path / "bad.csv"
    source.write_text("S. No.,Product Name\n1,A\n")
    result = subprocess.run(
        [EXE, "process", str(source), "--out", str(tmp_path / "out")],
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Input Image Urls" in result.stderr


def test_flags_match_settings(tmp_path: Path) -> None:
    """Every setting has a flag, and a bad value is a usage error naming it."""
    from imgcompress_core import Settings

    help_text = subprocess.run(
        [EXE, "serve", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in help_text, name
    bad = subprocess.run(
        [EXE, "serve", "--jpeg-quality", "0"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert "jpeg_quality" in bad.stderr
