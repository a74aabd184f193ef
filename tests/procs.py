"""Helpers for tests that run `imgcompress` as a real subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

EXE = str(Path(sys.executable).with_name("imgcompress"))


def free_port() -> int:
    """Return a free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(tmp_path: Path) -> dict[str, str]:
    """Environment for a subprocess: loopback allowed, fast polling, a fresh SQLite file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGCOMPRESS_")}
    env.update(
        IMGCOMPRESS_DATABASE=str(tmp_path / "service.sqlite3"),
        IMGCOMPRESS_ALLOW_PRIVATE_NETWORKS="true",
        IMGCOMPRESS_POLL_INTERVAL="0.1",
        # Every test image comes from one loopback host: no polite pacing (tested apart).
        IMGCOMPRESS_REQUESTS_PER_SECOND_PER_HOST="0",
    )
    return env


class ServiceProcess:
    """A running `imgcompress` subprocess."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, *, exe: str = EXE) -> None:
        self.log = log
        self.log_file = log.open("wb")
        self.process = subprocess.Popen(
            [exe, *args], env=env, stdout=self.log_file, stderr=subprocess.STDOUT
        )

    def wait_http(self, base: str, timeout: float = 30) -> None:
        """Wait until /health answers, or fail with the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the service exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        pytest.fail(f"the service did not start in {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> int:
        """Send SIGTERM and return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                pytest.fail(f"no exit within 30 s of SIGTERM:\n{self.log.read_text()}")
        return self.process.returncode


def running_services() -> Iterator[list[ServiceProcess]]:
    """Collect started services and stop them all afterwards."""
    started: list[ServiceProcess] = []
    yield started
    for service in started:
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait()
        service.log_file.close()


def descendants(pid: int) -> list[int]:
    """Return every living descendant of ``pid`` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children.get(child, [])
    return found


def still_running(pids: list[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` s for ``pids`` to exit; return those still running."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":  # a zombie has exited; only its parent's wait() is missing
                alive.append(pid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def wait_final(base: str, request_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll the status endpoint until the request is final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(f"{base}/api/status/{request_id}", timeout=30).json()
        if body["status"] != "Pending":
            return body  # type: ignore[no-any-return]
        time.sleep(0.2)
    pytest.fail(f"request {request_id} still Pending after {timeout} s")
