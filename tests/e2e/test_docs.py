"""Every example in README.md and docs/ runs, and the docs match the code they describe."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import venv
from pathlib import Path

import httpx
import pytest

from imgcompress_core.settings import settings_table
from procs import ServiceProcess, env_for, free_port
from servers import LocalServer, photo

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- run-with-pytest -->\n)?```(\w+)\n(.*?)```", re.DOTALL)


def blocks(language: str) -> list[tuple[str, bool, str]]:
    """Return (file:index, run-with-pytest?, code) for every block of ``language``."""
    found = []
    for path in DOCS:
        for index, match in enumerate(BLOCK.finditer(path.read_text())):
            if match.group(2) == language:
                found.append((f"{path.name}:{index}", bool(match.group(1)), match.group(3)))
    return found


PYTHON_BLOCKS = blocks("python")


def test_docs_have_python_examples() -> None:
    """The parametrised run below is not vacuous."""
    assert len(PYTHON_BLOCKS) >= 3


@pytest.mark.parametrize(
    ("where", "with_pytest", "code"), PYTHON_BLOCKS, ids=[b[0] for b in PYTHON_BLOCKS]
)
def test_python_example_runs(where: str, with_pytest: bool, code: str, tmp_path: Path) -> None:
    """Each Python block runs to completion (blocks marked run-with-pytest pass under pytest)."""
    script = tmp_path / ("test_example.py" if with_pytest else "example.py")
    script.write_text(code)
    command = (
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
        if with_pytest
        else [sys.executable, str(script)]
    )
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env_for(tmp_path)
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"
    if with_pytest:
        assert " passed" in result.stdout and "failed" not in result.stdout


LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_relative_links_point_at_files_that_exist() -> None:
    """Every relative Markdown link in README.md, docs/ and benchmarks/ names a real file."""
    pages = [*DOCS, *sorted((ROOT / "benchmarks").glob("*.md"))]
    checked, broken = 0, []
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL (http:, mailto:) or an anchor on the same page
            checked += 1
            if not (page.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert checked >= 10, "the link pattern found almost nothing: is it still right?"
    assert broken == []


def test_readme_settings_table_matches_the_settings() -> None:
    """The configuration table in README.md is exactly what the Settings class defines."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- settings-table:start -->\n") + len("<!-- settings-table:start -->\n")
    end = readme.index("<!-- settings-table:end -->")
    assert readme[start:end] == settings_table(), (
        "README.md is out of date: paste the output of "
        "python -c 'from imgcompress_core.settings import settings_table as t; print(t())'"
    )


def test_readme_commands_are_the_ci_commands() -> None:
    """The README starts with the serve command and the test command; .ci/run runs the latter."""
    commands = [code.strip() for _, _, code in blocks("bash")[:2]]
    assert commands[0] == (
        'python3 -m venv .venv && .venv/bin/pip install ".[all]" && .venv/bin/imgcompress serve'
    )
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci


@pytest.mark.slow
def test_readme_curl_session(
    tmp_path: Path,
    services: list[ServiceProcess],
    image_server: LocalServer,
) -> None:
    """The README's curl session works against a real `imgcompress serve`.

    Only the host names change: example.com becomes a loopback image server and the
    service runs on a free port.
    """
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        image_server.add(f"/{name}", photo())
    image_server.add("/hook", b"ok", content_type="text/plain")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = ServiceProcess(
        ["serve", "--port", str(port)], env_for(tmp_path), tmp_path / "serve.log"
    )
    services.append(service)
    service.wait_http(base)
    [session] = [code for _, _, code in blocks("bash") if "curl" in code]
    script = session.replace("http://127.0.0.1:8000", base).replace(
        "https://example.com", image_server.base
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"status":"Completed"' in result.stdout
    assert "Output Image Urls" in (tmp_path / "output.csv").read_text()
    deadline = time.monotonic() + 20
    while not image_server.posts() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert image_server.posts()[0].json()["status"] == "Completed"


@pytest.mark.slow
def test_readme_install_command_gives_a_working_service(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    """A fresh venv with a non-editable `pip install ".[all]"` serves the page and the API."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    install = subprocess.run(
        [str(env_dir / "bin" / "pip"), "install", "-q", f"{ROOT}[all]"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = ServiceProcess(
        ["serve", "--port", str(port)],
        env_for(tmp_path),
        tmp_path / "installed.log",
        exe=str(env_dir / "bin" / "imgcompress"),
    )
    services.append(service)
    service.wait_http(base)
    page = httpx.get(f"{base}/")
    assert page.status_code == 200
    assert "<form" in page.text
    assert httpx.get(f"{base}/schema/openapi.json").status_code == 200
    assert service.stop() == 0
