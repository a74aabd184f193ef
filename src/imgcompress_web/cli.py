"""The ``imgcompress`` command: ``serve``, ``worker`` and ``process``.

Every setting of :class:`imgcompress_core.Settings` is a flag of each command
(``--jpeg-quality 60`` is ``IMGCOMPRESS_JPEG_QUALITY=60``); the flags are generated
from the settings class, so they never drift apart. A flag beats the environment.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click
import pydantic
import uvicorn

from imgcompress_core import (
    Imgcompress,
    ManifestError,
    MemoryStorage,
    RequestStatus,
    Settings,
)
from imgcompress_core.errors import InvalidPolicy
from imgcompress_core.heap import lean_service_heap
from imgcompress_core.options import POLICY_SETTINGS, default_policy, resolve_cpu_pool

from .app import create_app
from .server import uvicorn_config

__all__ = ["main"]

log = logging.getLogger("imgcompress.cli")

_F = TypeVar("_F", bound=Callable[..., Any])
_CLICK_TYPES: dict[Any, click.ParamType[Any]] = {
    int: click.INT,
    float: click.FLOAT,
    str: click.STRING,
    Path: click.Path(path_type=Path),
}


def _base_type(annotation: Any) -> Any:
    """Return X for ``X | None``, else the annotation itself."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def settings_options(command: _F) -> _F:
    """Add one flag per Settings field to a click command."""
    for name, field in reversed(Settings.model_fields.items()):
        flag = name.replace("_", "-")
        env = f"IMGCOMPRESS_{name.upper()}"
        help_text = f"{field.description} [env {env}]"
        base = _base_type(field.annotation)
        if base is bool:
            option = click.option(
                f"--{flag}/--no-{flag}", name, default=None, help=help_text, show_default=False
            )
        elif typing.get_origin(base) is typing.Literal:
            choices = click.Choice([str(choice) for choice in typing.get_args(base)])
            option = click.option(f"--{flag}", name, type=choices, help=help_text)
        else:
            option = click.option(f"--{flag}", name, type=_CLICK_TYPES[base], help=help_text)
        command = option(command)
    return command


def load_settings(values: dict[str, Any]) -> Settings:
    """Build Settings from the environment, with flags that were given taking precedence.

    ``cpu_pool=auto`` is resolved for the command (not embedded): ``processes``.
    """
    given = {k: v for k, v in values.items() if k in Settings.model_fields and v is not None}
    try:
        settings = Settings(**given)
        pool = resolve_cpu_pool(settings.cpu_pool, embedded=False)
        default_policy(settings)  # the output settings must not contradict each other
        return settings.model_copy(update={"cpu_pool": pool})
    except InvalidPolicy as exc:
        name = POLICY_SETTINGS.get(exc.field, exc.field)
        raise click.UsageError(f"invalid settings: {name}: {exc.reason}") from exc
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise click.UsageError(f"invalid settings: {problems}") from exc


class GracefulServer(uvicorn.Server):
    """A uvicorn server that exits 0 after a graceful shutdown on SIGTERM or SIGINT.

    Plain uvicorn re-raises the signal once it has shut down, so the process would end
    "killed by SIGTERM" even though it stopped cleanly and lost nothing.
    """

    def handle_exit(self, sig: int, frame: types.FrameType | None) -> None:
        """Shut down gracefully on the first signal, at once on a second SIGINT."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


@click.group()
@click.version_option(package_name="imgcompress")
def main() -> None:
    """Download and compress the images listed in product CSVs."""


@main.command()
@settings_options
@click.option("--verbose", is_flag=True, help="log debug messages")
def serve(verbose: bool, **values: Any) -> None:
    """Run the HTTP service (and, unless --no-run-worker, a worker in the same process)."""
    lean_service_heap()  # before any thread starts (see imgcompress_core.heap)
    _logging(verbose)
    settings = load_settings(values)
    log.info("serving on http://%s:%d with %s", settings.host, settings.port, _store(settings))
    all_interfaces = settings.host in ("0.0.0.0", "::")  # noqa: S104 (a check, not a bind)
    if all_interfaces and not (settings.trusted_hosts or settings.public_url):
        log.warning(
            "listening on all interfaces, but only Host headers for localhost and 127.0.0.1 "
            "are answered: set IMGCOMPRESS_TRUSTED_HOSTS or IMGCOMPRESS_PUBLIC_URL to the "
            "names clients use"
        )
    GracefulServer(uvicorn_config(create_app(settings), settings, verbose=verbose)).run()


def _store(settings: Settings) -> str:
    if settings.mongodb_uri:
        return "MongoDB"
    return f"SQLite at {settings.database.resolve()}"


@main.command()
@settings_options
@click.option("--verbose", is_flag=True, help="log debug messages")
def worker(verbose: bool, **values: Any) -> None:
    """Run a worker alone: it processes images uploaded through any `serve` on the same store."""
    lean_service_heap()
    _logging(verbose)
    settings = load_settings(values)
    log.info("worker using %s", _store(settings))
    anyio.run(_run_worker, settings)


async def _run_worker(settings: Settings) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with Imgcompress(settings, run_worker=True):
            async for signum in signals:
                log.info("received %s, finishing the images in flight", signal.Signals(signum).name)
                return


@main.command()
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="folder for the images and output.csv",
)
@click.option(
    "--cache",
    is_flag=True,
    help="keep state in the configured store (--database, or --mongodb-uri) and reuse it: "
    "a feed processed again downloads and compresses only what changed",
)
@settings_options
@click.option("--verbose", is_flag=True, help="log debug messages")
def process(csv_file: Path, out_dir: Path, cache: bool, verbose: bool, **values: Any) -> None:
    """Process a CSV offline (no server): write the images and output.csv to --out."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)
    settings = load_settings(values)
    try:
        status = anyio.run(_process, settings, csv_file.read_bytes(), out_dir, cache)
    except ManifestError as exc:
        click.echo(f"error: {exc.message}", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(2)
    sys.exit(0 if status is RequestStatus.COMPLETED else 1)


def _file_name(row: int, serial: str, position: int, extension: str) -> str:
    """Name an output image: unique by row and position, readable by serial number."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", serial).strip("._")[:40]
    return f"row{row}-{position + 1}{'-' + safe if safe else ''}{extension}"


async def _process(settings: Settings, csv: bytes, out_dir: Path, cache: bool) -> RequestStatus:
    from imgcompress_core.compress import extension_for

    storage = None if cache else MemoryStorage()  # None: the store the settings name
    async with Imgcompress(settings, storage=storage) as ic:
        request_id = await ic.submit(csv)
        total = (await ic.status(request_id)).progress.total
        with click.progressbar(length=total, label="Compressing", file=sys.stderr) as bar:
            shown = 0
            while True:
                report = await ic.status(request_id)
                bar.update(report.progress.finished - shown)
                shown = report.progress.finished
                if report.request.finished_at is not None:
                    break
                await anyio.sleep(0.2)
        images_dir = out_dir / "images"
        images_dir.mkdir(parents=True, exist_ok=True)
        serials = {p.row: p.serial for p in report.products}
        paths: dict[str, str] = {}
        for record in report.images:
            link = record.output_id or record.image_id  # what the output CSV's links name
            if record.failure is not None or record.content_type is None or link in paths:
                continue  # failed, or the same output as an earlier row (one file for both)
            name = _file_name(
                record.row, serials[record.row], record.position, extension_for(record.content_type)
            )
            stored = await ic.image(link)
            await anyio.Path(images_dir / name).write_bytes(stored.data)
            paths[link] = f"images/{name}"
        output = await ic.output_csv(request_id, image_url=paths.__getitem__)
        await anyio.Path(out_dir / "output.csv").write_text(output, encoding="utf-8")
    p = report.progress
    click.echo(
        f"{report.request.status.value}: {p.done} of {p.total} images compressed, "
        f"{p.failed} failed; wrote {out_dir / 'output.csv'}"
    )
    for record in report.images:
        if record.failure is not None:
            click.echo(f"  failed {record.url}: {record.failure.message} ({record.failure.code})")
        elif record.warnings:
            click.echo(f"  warning {record.url}: {'; '.join(record.warnings)}")
    return report.request.status
