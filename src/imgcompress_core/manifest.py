"""Read an uploaded product CSV (the manifest) and write the output CSV.

:func:`parse_manifest` checks the whole upload and either returns a :class:`Manifest` or
raises one :class:`~imgcompress_core.errors.ManifestError` listing every problem found,
each located by spreadsheet row and column. :func:`iter_output_csv` writes the input
columns back with ``Output Image Urls`` added, every cell made safe to open in a
spreadsheet (no formula injection).
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import urlsplit

from ._guard import url_refusal
from .errors import ManifestError, ManifestProblem, UploadTooLarge

__all__ = [
    "NAME_COLUMN",
    "OUTPUT_COLUMN",
    "SERIAL_COLUMN",
    "URLS_COLUMN",
    "Manifest",
    "ManifestLimits",
    "ProductRow",
    "iter_output_csv",
    "parse_manifest",
    "render_output_csv",
    "spreadsheet_safe",
]

SERIAL_COLUMN = "S. No."
NAME_COLUMN = "Product Name"
URLS_COLUMN = "Input Image Urls"
OUTPUT_COLUMN = "Output Image Urls"

_OutputRows: TypeAlias = Iterable[tuple[Sequence[str], Sequence[str | None]]]
"""Rows for the output CSV: (the input cells, the output URL of each image or None)."""

_REQUIRED = (SERIAL_COLUMN, NAME_COLUMN, URLS_COLUMN)
_ALLOWED_TEXT = "'S. No.', 'Product Name' and 'Input Image Urls'"
_BOM = b"\xef\xbb\xbf"
_SIGNATURES = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")  # xlsx (a ZIP archive) and old xls
_UNSAFE_ASCII = re.compile(r"[\x00-\x20\x7f]")  # what _unsafe_char finds in ASCII, quickly
_URL_SPLIT = re.compile(r"[,\r\n]+")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _normalise(name: str) -> str:
    return "".join(name.casefold().split())


_CANONICAL = {_normalise(name): name for name in _REQUIRED}


@dataclass(frozen=True, slots=True)
class ManifestLimits:
    """Caps applied while parsing; each problem message names the setting it hit."""

    max_bytes: int = 10 * 1024 * 1024
    max_rows: int = 10_000  # data rows (not counting the header)
    max_urls_per_row: int = 50
    max_url_length: int = 2048
    max_problems: int = 100  # problems reported at most; the last says how many more were cut
    # Image URLs are held to the fetcher's rules that need no DNS (check_destination): an IP
    # literal on loopback or a private network is refused here unless this is set.
    allow_private_networks: bool = False

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_rows", "max_urls_per_row", "max_url_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_problems < 2:
            raise ValueError("max_problems must be at least 2")


@dataclass(frozen=True, slots=True)
class ProductRow:
    """One product: its spreadsheet row number, trimmed serial and name, and image URLs."""

    row: int  # the header is row 1; counts CSV records (a quoted cell may span lines)
    serial: str
    name: str
    urls: tuple[str, ...]  # in the order given
    cells: tuple[str, ...]  # the row's cells exactly as read, one per column, in column order


@dataclass(frozen=True, slots=True)
class Manifest:
    """A CSV that passed every check: its header names and its products."""

    columns: tuple[str, ...]  # header names as written in the file (trimmed, BOM removed)
    products: tuple[ProductRow, ...]

    @property
    def image_count(self) -> int:
        """Return the number of image URLs over all products."""
        return sum(len(product.urls) for product in self.products)


@dataclass(frozen=True, slots=True)
class _Header:
    columns: tuple[str, ...]
    serial: int
    name: int
    urls: int


def parse_manifest(data: bytes, limits: ManifestLimits = ManifestLimits()) -> Manifest:
    """Check an uploaded CSV; return its products or raise ManifestError with every problem."""
    if len(data) > limits.max_bytes:
        raise UploadTooLarge(limits.max_bytes)
    return _Parser(limits).parse(data)


class _Parser:
    """One parse: the limits, the problems found so far (kept up to the cap) and the serials."""

    def __init__(self, limits: ManifestLimits) -> None:
        self.limits = limits
        self.kept: list[ManifestProblem] = []
        self.total = 0  # every problem found, kept or not
        self.seen: dict[str, int] = {}  # trimmed serial -> the row that first used it

    def add(self, reason: str, row: int | None = None, column: str | None = None) -> None:
        self.total += 1
        if len(self.kept) < self.limits.max_problems:
            self.kept.append(ManifestProblem(reason, row, column))

    def error(self) -> ManifestError:
        cap = self.limits.max_problems
        if self.total <= cap:
            return ManifestError(self.kept)
        hidden = self.total - (cap - 1)
        return ManifestError(
            [*self.kept[: cap - 1], ManifestProblem(f"... and {hidden} more problems not shown")]
        )

    def parse(self, data: bytes) -> Manifest:
        text = self.decode(data)
        records = self.records(text or "")
        header = self.header(records) if text is not None else None
        if header is None:
            raise self.error()
        products: list[ProductRow] = []
        data_rows = 0
        for number, cells in records:
            if not any(cell.strip() for cell in cells):
                continue
            data_rows += 1
            if data_rows > self.limits.max_rows:
                limit = self.limits.max_rows
                reason = f"the file has more than {limit} product rows; the limit is {limit}"
                self.add(f"{reason} (max_rows)", number)
                break  # bound the work: the rest is not read
            product = self.product(number, cells, header)
            if product is not None:
                products.append(product)
        if self.total == 0 and not products:
            self.add("the file has a header row but no product rows")
        if self.total:
            raise self.error()
        return Manifest(header.columns, tuple(products))

    def decode(self, data: bytes) -> str | None:
        bom = len(_BOM) if data.startswith(_BOM) else 0
        body = data[bom:]
        if body.startswith((b"\xff\xfe", b"\xfe\xff")):
            self.add("the file is UTF-16 encoded; it must be UTF-8 (in Excel: 'CSV UTF-8')")
            return None
        if body.startswith(_SIGNATURES) or b"\x00" in body:
            hint = ": save the spreadsheet as 'CSV UTF-8'" if body.startswith(_SIGNATURES) else ""
            self.add(f"this is not a CSV file (binary data){hint}")
            return None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            at = exc.start + bom
            line = data.count(b"\n", 0, at) + 1
            self.add(
                f"byte {at} (line {line}) is not valid UTF-8 (0x{data[at]:02x}); the file must be"
                " UTF-8 encoded (in Excel: save as 'CSV UTF-8')"
            )
            return None
        if not text.strip():
            self.add("the file is empty")
            return None
        return text

    def records(self, text: str) -> Iterator[tuple[int, list[str]]]:
        """Yield (spreadsheet row number, cells) for each CSV record, reporting unreadable ones."""
        longest = _allow_cells(self.limits)
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        number = 0
        while True:
            number += 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if "field limit" in str(exc):
                    limits = self.limits
                    self.add(
                        f"a cell is longer than {longest:,} characters; a cell of image URLs "
                        f"holds at most max_urls_per_row ({limits.max_urls_per_row}) URLs of "
                        f"max_url_length ({limits.max_url_length}) characters",
                        number,
                    )
                    continue
                self.add(f"this row cannot be read as CSV: {exc}", number)
                continue
            yield number, cells

    def header(self, records: Iterator[tuple[int, list[str]]]) -> _Header | None:
        before = self.total
        found = next(((n, c) for n, c in records if any(cell.strip() for cell in c)), None)
        if found is None or self.total != before:  # nothing but blanks, or unreadable CSV
            if self.total == before:
                self.add("the file is empty")
            return None
        number, cells = found
        names = [cell.strip().lstrip("\ufeff").strip() for cell in cells]
        while names and not names[-1]:
            names.pop()  # spreadsheet exports often add empty columns at the end
        where: dict[str, int] = {}
        for position, name in enumerate(names):
            canonical = _CANONICAL.get(_normalise(name))
            if canonical is None:
                self.add(_unknown_column(name, position), number, name)
            elif canonical in where:
                twice = f"columns {where[canonical] + 1} and {position + 1}"
                self.add(f"the column {canonical!r} appears more than once ({twice})", number, name)
            else:
                where[canonical] = position
        for missing in (name for name in _REQUIRED if name not in where):
            reason = f"the required column {missing!r} is missing from the header row"
            self.add(f"{reason}; the header must name {_ALLOWED_TEXT}", number, missing)
        if self.total != before:
            return None
        return _Header(tuple(names), *(where[name] for name in _REQUIRED))

    def product(self, number: int, cells: list[str], header: _Header) -> ProductRow | None:
        width = len(header.columns)
        if len(cells) > width and not any(cell.strip() for cell in cells[width:]):
            cells = cells[:width]
        if len(cells) != width:
            hint = " (a list of URLs must be in double quotes)" if len(cells) > width else ""
            self.add(
                f"the row has {len(cells)} cells; the header has {width} columns{hint}", number
            )
            return None
        before = self.total
        serial, name = cells[header.serial].strip(), cells[header.name].strip()
        if not serial:
            self.add("the serial number is empty", number, SERIAL_COLUMN)
        elif serial in self.seen:
            reason = f"the serial number {serial!r} is already used on row {self.seen[serial]}"
            self.add(reason, number, SERIAL_COLUMN)
        else:
            self.seen[serial] = number
        if not name:
            self.add("the product name is empty", number, NAME_COLUMN)
        urls = self.urls(number, cells[header.urls])
        if self.total != before:
            return None
        return ProductRow(number, serial, name, urls, tuple(cells))

    def urls(self, number: int, cell: str) -> tuple[str, ...]:
        urls = tuple(piece for piece in (p.strip() for p in _URL_SPLIT.split(cell)) if piece)
        limit = self.limits.max_urls_per_row
        if not urls:
            self.add("there are no image URLs", number, URLS_COLUMN)
        elif len(urls) > limit:
            reason = f"the cell has {len(urls)} image URLs; the limit is {limit} (max_urls_per_row)"
            self.add(reason, number, URLS_COLUMN)
        for url in urls:
            problem = _url_problem(url, self.limits)
            if problem is not None:
                self.add(problem, number, URLS_COLUMN)
        return urls


def _unknown_column(name: str, position: int) -> str:
    allowed = f"the allowed columns are {_ALLOWED_TEXT}"
    if not name:
        return f"column {position + 1} has no name; {allowed}"
    if _normalise(name) == _normalise(OUTPUT_COLUMN):
        return f"the column {OUTPUT_COLUMN!r} is added by imgcompress, not uploaded; {allowed}"
    return f"unknown column {name!r}; {allowed}"


def _allow_cells(limits: ManifestLimits) -> int:
    """Raise the csv module's cell-size cap to what the limits allow; return the cap.

    The cap is process-wide (``csv.field_size_limit``, 131,072 by default), so it is only
    ever raised: a full cell of max_urls_per_row URLs of max_url_length characters fits.
    """
    needed = limits.max_urls_per_row * (limits.max_url_length + 2)
    if csv.field_size_limit() < needed:
        csv.field_size_limit(needed)
    return csv.field_size_limit()


def _url_problem(url: str, limits: ManifestLimits) -> str | None:
    """Say what is wrong with one image URL, or return None if it is acceptable."""
    max_length = limits.max_url_length
    shown = repr(url if len(url) <= 80 else url[:77] + "...")
    if len(url) > max_length:
        limit = f"the limit is {max_length} (max_url_length)"
        return f"the URL {shown} is {len(url)} characters long; {limit}"
    if _UNSAFE_ASCII.search(url) if url.isascii() else any(map(_unsafe_char, url)):
        return f"the URL {shown} contains a space or a control character"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number 0-65535)
    except ValueError as exc:
        return f"the URL {shown} cannot be parsed ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"the URL {shown} must start with http:// or https://"
    if "@" in parts.netloc:
        return f"the URL {shown} must not contain a user name or password"
    if not parts.hostname:
        return f"the URL {shown} has no host name"
    refusal = url_refusal(url, allow_private=limits.allow_private_networks)
    if refusal is not None:
        return f"the URL {shown} is not acceptable: {refusal}"
    return None


def _unsafe_char(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) in ("Cc", "Cf")  # Cf: bidi, zero-width


def spreadsheet_safe(cell: str) -> str:
    """Prefix a cell that a spreadsheet would run as a formula with an apostrophe."""
    if _PLAIN_NUMBER.fullmatch(cell):
        return cell
    if cell.startswith(_FORMULA_START) or cell.lstrip().startswith(_FORMULA_START):
        return "'" + cell
    return cell


def iter_output_csv(columns: Sequence[str], rows: _OutputRows) -> Iterator[str]:
    """Yield the output CSV line by line: the input columns plus Output Image Urls."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(cells: Sequence[str]) -> str:
        writer.writerow([spreadsheet_safe(cell) for cell in cells])
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    yield line([*columns, OUTPUT_COLUMN])
    for cells, outputs in rows:
        if len(cells) != len(columns):
            raise ValueError(f"a row has {len(cells)} cells for {len(columns)} columns")
        yield line([*cells, _join_outputs(outputs)])


def _join_outputs(outputs: Sequence[str | None]) -> str:
    if any(url is not None and "," in url for url in outputs):
        raise ValueError(f"an output URL contains a comma: {outputs!r}")
    return ",".join("" if url is None else url for url in outputs)


def render_output_csv(columns: Sequence[str], rows: _OutputRows) -> str:
    """Return the whole output CSV as one string (see iter_output_csv)."""
    return "".join(iter_output_csv(columns, rows))
