"""Tests for imgcompress_core.manifest: parsing the upload CSV and writing the output CSV."""

from __future__ import annotations

import csv
import io
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgcompress_core.errors import ManifestError, ManifestProblem, UploadTooLarge
from imgcompress_core.manifest import (
    NAME_COLUMN,
    OUTPUT_COLUMN,
    SERIAL_COLUMN,
    URLS_COLUMN,
    Manifest,
    ManifestLimits,
    ProductRow,
    iter_output_csv,
    parse_manifest,
    render_output_csv,
    spreadsheet_safe,
)

PLAIN_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
HEADER = "S. No.,Product Name,Input Image Urls\n"
MISSION_EXAMPLE = (
    HEADER
    + '1,SKU1,"https://example.com/a.jpg,https://example.com/b.jpg"\n'
    + '2,SKU2,"https://example.com/c.png"\n'
)


def problems_of(data: bytes | str, **limits: int) -> tuple[ManifestProblem, ...]:
    """Parse data that must be rejected and return its problems."""
    raw = data.encode() if isinstance(data, str) else data
    with pytest.raises(ManifestError) as caught:
        parse_manifest(raw, ManifestLimits(**limits))
    assert type(caught.value) is ManifestError
    return caught.value.problems


def only_problem(data: bytes | str, **limits: int) -> ManifestProblem:
    """Parse data that has exactly one problem and return it."""
    problems = problems_of(data, **limits)
    assert len(problems) == 1, problems
    return problems[0]


def rows_text(*rows: str) -> str:
    return HEADER + "".join(row + "\n" for row in rows)


# --- the happy path ----------------------------------------------------------------------


def test_mission_example() -> None:
    manifest = parse_manifest(MISSION_EXAMPLE.encode())
    assert manifest.columns == (SERIAL_COLUMN, NAME_COLUMN, URLS_COLUMN)
    assert manifest.products == (
        ProductRow(
            row=2,
            serial="1",
            name="SKU1",
            urls=("https://example.com/a.jpg", "https://example.com/b.jpg"),
            cells=("1", "SKU1", "https://example.com/a.jpg,https://example.com/b.jpg"),
        ),
        ProductRow(
            row=3,
            serial="2",
            name="SKU2",
            urls=("https://example.com/c.png",),
            cells=("2", "SKU2", "https://example.com/c.png"),
        ),
    )
    assert manifest.image_count == 3


def test_bom_crlf_and_odd_header_spelling() -> None:
    data = (
        b"\xef\xbb\xbf s.no. , Product  name ,INPUT IMAGE URLS\r\n"
        b'1,  SKU1 ," https://example.com/a.jpg , http://example.com/b.jpg ,"\r\n'
    )
    manifest = parse_manifest(data)
    assert manifest.columns == ("s.no.", "Product  name", "INPUT IMAGE URLS")
    (product,) = manifest.products
    assert product.name == "SKU1"
    assert product.urls == ("https://example.com/a.jpg", "http://example.com/b.jpg")
    assert product.cells == (
        "1",
        "  SKU1 ",
        " https://example.com/a.jpg , http://example.com/b.jpg ,",
    )


def test_columns_in_any_order_keep_their_order() -> None:
    data = "Input Image Urls,S. No.,Product Name\nhttps://e.com/a.jpg,7,Lamp\n"
    manifest = parse_manifest(data.encode())
    assert manifest.columns == (URLS_COLUMN, SERIAL_COLUMN, NAME_COLUMN)
    (product,) = manifest.products
    assert (product.serial, product.name, product.urls) == ("7", "Lamp", ("https://e.com/a.jpg",))
    assert product.cells == ("https://e.com/a.jpg", "7", "Lamp")


def test_row_numbers_count_records_not_lines() -> None:
    data = rows_text(
        '1,SKU1,"https://e.com/a.jpg\nhttps://e.com/b.jpg\n\nhttps://e.com/c.jpg"',
        "2,SKU2,https://e.com/d.jpg",
    )
    manifest = parse_manifest(data.encode())
    assert [p.row for p in manifest.products] == [2, 3]
    assert manifest.products[0].urls == (
        "https://e.com/a.jpg",
        "https://e.com/b.jpg",
        "https://e.com/c.jpg",
    )
    assert manifest.image_count == 4


def test_blank_records_are_skipped_but_keep_their_row_number() -> None:
    data = "\n" + rows_text(
        "", "1,A,https://e.com/a.jpg", ",,", "   ,  ,", "2,B,https://e.com/b.jpg"
    )
    manifest = parse_manifest(data.encode())
    assert manifest.columns == (SERIAL_COLUMN, NAME_COLUMN, URLS_COLUMN)
    assert [(p.row, p.serial) for p in manifest.products] == [(4, "1"), (7, "2")]


def test_trailing_empty_columns_from_spreadsheet_exports_are_ignored() -> None:
    data = "S. No.,Product Name,Input Image Urls,,\n1,A,https://e.com/a.jpg,,\n2,B,https://e.com/b.jpg\n"
    manifest = parse_manifest(data.encode())
    assert manifest.columns == (SERIAL_COLUMN, NAME_COLUMN, URLS_COLUMN)
    assert [p.cells for p in manifest.products] == [
        ("1", "A", "https://e.com/a.jpg"),
        ("2", "B", "https://e.com/b.jpg"),
    ]


def test_accepted_urls() -> None:
    urls = [
        "http://example.com/a.jpg",
        "HTTPS://Example.COM:8443/path/b.png?size=large&x=1#frag",
        "http://127.0.0.1:8000/c.webp",
        "http://[::1]:9000/d.gif",
        "https://bücher.example/ä.jpg",
    ]
    data = rows_text(f'1,A,"{",".join(urls)}"')
    # Loopback literals pass only with private networks allowed (tests/security covers the rest).
    limits = ManifestLimits(allow_private_networks=True)
    (product,) = parse_manifest(data.encode(), limits).products
    assert product.urls == tuple(urls)


def test_serial_and_name_are_trimmed_and_serial_need_not_be_a_number() -> None:
    (product,) = parse_manifest(
        rows_text("  A-1 , Blue  lamp ,https://e.com/a.jpg").encode()
    ).products
    assert (product.serial, product.name) == ("A-1", "Blue  lamp")


# --- whole-file problems -----------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"", b"   \r\n\t\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf \n", b",,,\n,\n"]
)
def test_empty_file(data: bytes) -> None:
    problem = only_problem(data)
    assert problem.reason == "the file is empty"
    assert (problem.row, problem.column) == (None, None)


def test_unicode_whitespace_only_is_empty() -> None:
    assert only_problem("\u00a0\u3000\n").reason == "the file is empty"


@pytest.mark.parametrize(
    "data",
    [
        MISSION_EXAMPLE.encode().replace(b"SKU2", b"SK\x00U2"),
        b"PK\x03\x04\x14\x00\x06\x00",  # an .xlsx workbook
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",  # an old .xls workbook
        bytes(range(256)),
    ],
)
def test_binary_data(data: bytes) -> None:
    problem = only_problem(data)
    assert problem.reason.startswith("this is not a CSV file (binary data)")
    assert problem.row is None


def test_excel_workbook_gets_a_hint() -> None:
    assert "CSV UTF-8" in only_problem(b"PK\x03\x04rest-of-zip").reason


def test_utf16_is_refused_with_its_name() -> None:
    problem = only_problem(MISSION_EXAMPLE.encode("utf-16"))
    assert "UTF-16" in problem.reason
    assert "UTF-8" in problem.reason


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_invalid_utf8_names_the_byte_offset(bom: bytes) -> None:
    data = bom + HEADER.encode() + "1,Caf\u00e9,https://e.com/a.jpg\n".encode("latin-1")
    offset = len(bom) + len(HEADER) + len("1,Caf")
    problem = only_problem(data)
    assert f"byte {offset} (line 2)" in problem.reason
    assert "must be UTF-8" in problem.reason
    assert problem.row is None


def test_unreadable_csv_record_names_its_row() -> None:
    data = rows_text('1,"A"B,https://e.com/a.jpg', '2,B,"https://e.com/b.jpg')
    problems = problems_of(data)
    assert [(p.row, p.column) for p in problems] == [(2, None), (3, None)]
    assert all("cannot be read as CSV" in p.reason for p in problems)


def test_unreadable_header_stops_before_the_rows() -> None:
    problem = only_problem('"S. No."x,Product Name,Input Image Urls\n1,A,https://e.com/a.jpg\n')
    assert problem.row == 1
    assert "cannot be read as CSV" in problem.reason


# --- header problems ---------------------------------------------------------------------


def test_missing_column() -> None:
    problem = only_problem("S. No.,Product Name\n1,A\n")
    assert (problem.row, problem.column) == (1, URLS_COLUMN)
    assert "missing" in problem.reason


def test_unknown_column_lists_the_allowed_ones() -> None:
    problem = only_problem(
        "S. No.,Product Name,Input Image Urls,Price\n1,A,https://e.com/a.jpg,3\n"
    )
    assert (problem.row, problem.column) == (1, "Price")
    assert "'S. No.', 'Product Name' and 'Input Image Urls'" in problem.reason


def test_output_column_is_not_an_input() -> None:
    problem = only_problem(HEADER.strip() + ",Output Image Urls\n")
    assert problem.column == "Output Image Urls"
    assert "added by imgcompress" in problem.reason


def test_unnamed_column_in_the_middle() -> None:
    problem = only_problem("S. No.,,Product Name,Input Image Urls\n")
    assert (problem.row, problem.column) == (1, "")
    assert "column 2 has no name" in problem.reason


def test_duplicate_column() -> None:
    problem = only_problem("S. No.,Product Name,Input Image Urls,product name\n")
    assert (problem.row, problem.column) == (1, "product name")
    assert "more than once (columns 2 and 4)" in problem.reason


def test_header_problems_stop_before_row_checks() -> None:
    data = "Serial,Name,Images\n,,not-a-url\n1,,\n"
    problems = problems_of(data)
    assert {p.row for p in problems} == {1}
    assert [p.column for p in problems] == [
        "Serial",
        "Name",
        "Images",
        SERIAL_COLUMN,
        NAME_COLUMN,
        URLS_COLUMN,
    ]


def test_header_after_leading_blank_lines_keeps_its_row_number() -> None:
    problem = only_problem("\n\nS. No.,Product Name\n")
    assert (problem.row, problem.column) == (3, URLS_COLUMN)


def test_header_without_rows() -> None:
    problem = only_problem(HEADER + "\n,,\n")
    assert "no product rows" in problem.reason


# --- row problems ------------------------------------------------------------------------


def test_unquoted_url_list_gives_a_hint() -> None:
    problem = only_problem(rows_text("1,A,https://e.com/a.jpg,https://e.com/b.jpg"))
    assert (problem.row, problem.column) == (2, None)
    assert "4 cells; the header has 3 columns" in problem.reason
    assert "double quotes" in problem.reason


def test_too_few_cells() -> None:
    problem = only_problem(rows_text("1,A"))
    assert (problem.row, problem.column) == (2, None)
    assert "2 cells" in problem.reason


def test_empty_serial() -> None:
    problem = only_problem(rows_text("  ,A,https://e.com/a.jpg"))
    assert (problem.row, problem.column) == (2, SERIAL_COLUMN)
    assert "empty" in problem.reason


def test_duplicate_serial_names_the_earlier_row() -> None:
    data = rows_text(
        "1,A,https://e.com/a.jpg", "2,B,https://e.com/b.jpg", " 1 ,C,https://e.com/c.jpg"
    )
    problem = only_problem(data)
    assert (problem.row, problem.column) == (4, SERIAL_COLUMN)
    assert "already used on row 2" in problem.reason


def test_empty_name() -> None:
    problem = only_problem(rows_text("1, ,https://e.com/a.jpg"))
    assert (problem.row, problem.column) == (2, NAME_COLUMN)


@pytest.mark.parametrize("cell", ['""', '" , ,\n "', "  "])
def test_no_urls(cell: str) -> None:
    problem = only_problem(rows_text(f"1,A,{cell}"))
    assert (problem.row, problem.column) == (2, URLS_COLUMN)
    assert problem.reason == "there are no image URLs"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("example.com/a.jpg", "must start with http:// or https://"),
        ("ftp://example.com/a.jpg", "must start with http:// or https://"),
        ("javascript:alert(1)", "must start with http:// or https://"),
        ("file:///etc/passwd", "must start with http:// or https://"),
        ("https://", "has no host name"),
        ("https:///a.jpg", "has no host name"),
        ("http://user:secret@example.com/a.jpg", "user name or password"),
        ("http://@example.com/a.jpg", "user name or password"),
        ("https://exa mple.com/a.jpg", "space or a control character"),
        ("https://example.com/a\x07.jpg", "space or a control character"),
        ("https://example.com/\u202ea.jpg", "space or a control character"),
        ("http://[::1/a.jpg", "cannot be parsed"),
        ("http://example.com:99999/a.jpg", "cannot be parsed"),
        ("http://example.com:port/a.jpg", "cannot be parsed"),
    ],
)
def test_bad_url(url: str, why: str) -> None:
    problem = only_problem(HEADER.encode() + b'1,A,"' + url.encode() + b'"\n')
    assert (problem.row, problem.column) == (2, URLS_COLUMN)
    assert why in problem.reason
    assert repr(url) in problem.reason


def test_bad_url_is_quoted_truncated() -> None:
    url = "ftp://example.com/" + "x" * 500
    problem = only_problem(rows_text(f"1,A,{url}"))
    assert repr(url[:77] + "...") in problem.reason
    assert len(problem.reason) < 200


def test_every_bad_url_in_a_cell_is_reported() -> None:
    data = rows_text('1,A,"https://ok.com/a.jpg,ftp://x/b.jpg,https://ok.com/c.jpg,nope"')
    problems = problems_of(data)
    assert len(problems) == 2
    assert "ftp://x/b.jpg" in problems[0].reason
    assert "nope" in problems[1].reason


def test_several_problems_are_collected_in_one_error() -> None:
    data = rows_text(
        "1,A,https://e.com/a.jpg",
        ",B,https://e.com/b.jpg",
        '1,,"ftp://e.com/c.jpg"',
        "4,D,",
        "5,E",
    )
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data.encode())
    located = [(p.row, p.column) for p in caught.value.problems]
    assert located == [
        (3, SERIAL_COLUMN),
        (4, SERIAL_COLUMN),
        (4, NAME_COLUMN),
        (4, URLS_COLUMN),
        (5, URLS_COLUMN),
        (6, None),
    ]
    assert "the CSV has 6 problems" in str(caught.value)
    assert caught.value.code == "invalid_csv"


# --- limits ------------------------------------------------------------------------------


def test_max_bytes() -> None:
    data = MISSION_EXAMPLE.encode()
    assert parse_manifest(data, ManifestLimits(max_bytes=len(data))).image_count == 3
    with pytest.raises(UploadTooLarge) as caught:
        parse_manifest(data, ManifestLimits(max_bytes=len(data) - 1))
    assert caught.value.limit == len(data) - 1


def test_max_bytes_is_checked_before_anything_else() -> None:
    with pytest.raises(UploadTooLarge):
        parse_manifest(b"\x00" * 11, ManifestLimits(max_bytes=10))


def test_max_rows_is_one_problem_and_stops_reading() -> None:
    data = rows_text(
        "1,A,https://e.com/a.jpg",
        "",
        "2,B,https://e.com/b.jpg",
        "3,C,https://e.com/c.jpg",
        ",,not-a-url",
    )
    assert len(problems_of(data, max_rows=4)) == 3  # the bad last row is read and checked
    problem = only_problem(data, max_rows=3)  # the bad last row is not read
    assert (problem.row, problem.column) == (6, None)
    assert "more than 3 product rows; the limit is 3 (max_rows)" in problem.reason
    good = data.rsplit(",,", 1)[0].encode()
    assert len(parse_manifest(good, ManifestLimits(max_rows=3)).products) == 3


def test_max_urls_per_row() -> None:
    urls = ",".join(f"https://e.com/{i}.jpg" for i in range(4))
    limits = ManifestLimits(max_urls_per_row=4)
    assert parse_manifest(rows_text(f'1,A,"{urls}"').encode(), limits).image_count == 4
    problem = only_problem(rows_text(f'1,A,"{urls}"'), max_urls_per_row=3)
    assert (problem.row, problem.column) == (2, URLS_COLUMN)
    assert problem.reason == "the cell has 4 image URLs; the limit is 3 (max_urls_per_row)"


def test_max_url_length() -> None:
    url = "https://e.com/" + "a" * 26
    assert len(url) == 40
    limits = ManifestLimits(max_url_length=40)
    assert parse_manifest(rows_text(f"1,A,{url}").encode(), limits).image_count == 1
    problem = only_problem(rows_text(f"1,A,{url}"), max_url_length=39)
    assert (problem.row, problem.column) == (2, URLS_COLUMN)
    assert "is 40 characters long; the limit is 39 (max_url_length)" in problem.reason


def test_max_problems_cuts_the_list_and_says_how_many_more() -> None:
    data = rows_text(*(f"{i},,https://e.com/a.jpg" for i in range(10)))
    problems = problems_of(data, max_problems=4)
    assert len(problems) == 4
    assert [p.row for p in problems[:3]] == [2, 3, 4]
    assert problems[3] == ManifestProblem("... and 7 more problems not shown")


def test_max_problems_exactly_reached_shows_all() -> None:
    data = rows_text(*(f"{i},,https://e.com/a.jpg" for i in range(4)))
    problems = problems_of(data, max_problems=4)
    assert [p.column for p in problems] == [NAME_COLUMN] * 4


def test_default_limits() -> None:
    limits = ManifestLimits()
    assert (limits.max_bytes, limits.max_rows, limits.max_urls_per_row) == (10 << 20, 10_000, 50)
    assert (limits.max_url_length, limits.max_problems) == (2048, 100)
    urls = ",".join(f"https://e.com/{i}.jpg" for i in range(51))
    problem = only_problem(rows_text(f'1,A,"{urls}"'))
    assert "has 51 image URLs; the limit is 50 (max_urls_per_row)" in problem.reason


@pytest.mark.parametrize(
    "limits",
    [
        {"max_bytes": 0},
        {"max_rows": 0},
        {"max_urls_per_row": -1},
        {"max_url_length": 0},
        {"max_problems": 1},
    ],
)
def test_limits_must_be_sensible(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be at least"):
        ManifestLimits(**limits)


# --- the output CSV ----------------------------------------------------------------------


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def test_output_csv_round_trip() -> None:
    manifest = parse_manifest(MISSION_EXAMPLE.encode())
    outputs: dict[str, list[str | None]] = {
        "1": ["https://cdn.test/i/1", None],
        "2": ["https://cdn.test/i/3"],
    }
    text = render_output_csv(
        manifest.columns, [(p.cells, outputs[p.serial]) for p in manifest.products]
    )
    assert text.endswith("\r\n")
    assert read_csv(text) == [
        [SERIAL_COLUMN, NAME_COLUMN, URLS_COLUMN, OUTPUT_COLUMN],
        [
            "1",
            "SKU1",
            "https://example.com/a.jpg,https://example.com/b.jpg",
            "https://cdn.test/i/1,",
        ],
        ["2", "SKU2", "https://example.com/c.png", "https://cdn.test/i/3"],
    ]


def test_output_keeps_positions_of_failed_images() -> None:
    text = render_output_csv(["S. No."], [(["1"], [None, "u2", None, "u4"]), (["2"], [None])])
    assert [row[1] for row in read_csv(text)[1:]] == [",u2,,u4", ""]


def test_output_is_yielded_line_by_line() -> None:
    chunks = list(iter_output_csv(["a", "b"], [(["1", "x\ny"], ["u"]), (["2", "z"], [])]))
    assert chunks == ["a,b,Output Image Urls\r\n", '1,"x\ny",u\r\n', "2,z,\r\n"]


def test_output_neutralises_formulas_but_keeps_numbers() -> None:
    rows: list[tuple[list[str], list[str | None]]] = [
        (["-12.5", '=HYPERLINK("http://evil")', "@SUM(A1)"], ["u"]),
        (["+3", " -cmd", "ok"], [None]),
    ]
    parsed = read_csv(render_output_csv(["=col", "b", "c"], rows))
    assert parsed == [
        ["'=col", "b", "c", OUTPUT_COLUMN],
        ["-12.5", '\'=HYPERLINK("http://evil")', "'@SUM(A1)", "u"],
        ["+3", "' -cmd", "ok", ""],
    ]


def test_output_rejects_rows_of_the_wrong_width_and_comma_urls() -> None:
    with pytest.raises(ValueError, match="2 cells for 1 columns"):
        render_output_csv(["a"], [(["1", "2"], [])])
    with pytest.raises(ValueError, match="comma"):
        render_output_csv(["a"], [(["1"], ["https://x/a,b"])])


def test_output_of_a_parsed_manifest_with_formula_cells() -> None:
    data = rows_text("-1,=1+2,https://e.com/a.jpg", "@x,+SKU,https://e.com/b.jpg")
    manifest = parse_manifest(data.encode())
    parsed = read_csv(
        render_output_csv(manifest.columns, [(p.cells, ["o"]) for p in manifest.products])
    )
    assert parsed[1][:2] == ["-1", "'=1+2"]
    assert parsed[2][:2] == ["'@x", "'+SKU"]


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ("", ""),
        ("plain", "plain"),
        ("SKU-1", "SKU-1"),
        ("a=b", "a=b"),
        ("=1+1", "'=1+1"),
        ("+1+1", "'+1+1"),
        ("-1+1", "'-1+1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("  =1", "'  =1"),
        ("\n=1", "'\n=1"),
        ("-", "'-"),
        ("-12.5", "-12.5"),
        ("+3", "+3"),
        ("-.5", "-.5"),
        ("1e5", "1e5"),
        ("-1E-3", "-1E-3"),
        ("42", "42"),
        ("-1,234", "'-1,234"),
        (" -12", "' -12"),
        ("-12 ", "'-12 "),
        ("-١٢", "'-١٢"),  # non-ASCII digits are not plain numbers
        ("'=already", "'=already"),
    ],
)
def test_spreadsheet_safe(cell: str, safe: str) -> None:
    assert spreadsheet_safe(cell) == safe


# --- properties --------------------------------------------------------------------------

CSV_ALPHABET = st.sampled_from(
    [*'S. NoProduct NameInput Image Urls,"\r\n\t =+-@:/hxpst1é\x00\ufeff', "https://e.com/a.jpg"]
)
MANIFEST_CELL = st.sampled_from(
    [
        "1",
        " 2 ",
        "",
        "SKU",
        "=cmd",
        "-3",
        "https://e.com/a.jpg",
        '"https://e.com/a.jpg, https://e.com/b.jpg"',
        '"https://e.com/a.jpg\nhttps://e.com/c.jpg"',
        "ftp://e.com/x",
        "http://u:p@e.com/",
        '"unterminated',
        '"a"b',
    ]
)
PRODUCT_LINE = st.tuples(
    st.sampled_from(["1", " 2 ", "3", "-4", "=5", ""]),
    st.sampled_from(["SKU", "=cmd", "+x", "@a", '"multi\nline"', ""]),
    st.sampled_from(
        [
            "https://e.com/a.jpg",
            '"https://e.com/a.jpg, https://e.com/b.jpg"',
            '"https://e.com/a.jpg\nhttps://e.com/c.jpg"',
            "ftp://e.com/x",
            "",
        ]
    ),
).map(",".join)
ANY_LINE = st.lists(MANIFEST_CELL, min_size=1, max_size=4).map(",".join)
MANIFEST_TEXT = st.lists(PRODUCT_LINE | ANY_LINE | st.just(""), max_size=7).map(
    lambda lines: HEADER + "\n".join(lines)
)


@given(st.binary(max_size=400))
def test_any_bytes_give_a_manifest_or_a_manifest_error(data: bytes) -> None:
    check_parse(data)


@given(st.lists(CSV_ALPHABET, max_size=80).map("".join))
def test_csv_like_text_gives_a_manifest_or_a_manifest_error(text: str) -> None:
    check_parse((HEADER + text).encode())
    check_parse(text.encode())


@given(MANIFEST_TEXT)
def test_manifest_like_text_gives_a_manifest_or_a_manifest_error(text: str) -> None:
    manifest = check_parse(text.encode())
    if manifest is not None:  # what was accepted can be written back out
        rows = [(p.cells, [None] * len(p.urls)) for p in manifest.products]
        parsed = read_csv(render_output_csv(manifest.columns, rows))
        assert len(parsed) == len(manifest.products) + 1
        assert all(looks_safe(cell) for row in parsed for cell in row)


def check_parse(data: bytes) -> Manifest | None:
    """Parse under small limits; anything but a Manifest or a ManifestError fails the test."""
    limits = ManifestLimits(max_rows=5, max_urls_per_row=3, max_url_length=30, max_problems=5)
    problems: tuple[ManifestProblem, ...] = ()
    manifest = None
    try:
        manifest = parse_manifest(data, limits)
    except ManifestError as exc:
        problems = exc.problems
    if manifest is None:
        assert 1 <= len(problems) <= limits.max_problems
        assert all(isinstance(p, ManifestProblem) and p.reason for p in problems)
        return None
    assert manifest.products
    assert all(len(p.cells) == len(manifest.columns) for p in manifest.products)
    assert all(1 <= len(p.urls) <= 3 for p in manifest.products)
    return manifest


CELL = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20)
OUTPUT_URL = st.none() | st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00,"), max_size=20
)


@given(
    st.integers(min_value=1, max_value=4).flatmap(
        lambda width: st.tuples(
            st.lists(CELL, min_size=width, max_size=width),
            st.lists(
                st.tuples(
                    st.lists(CELL, min_size=width, max_size=width), st.lists(OUTPUT_URL, max_size=4)
                ),
                max_size=5,
            ),
        )
    )
)
def test_output_rows_round_trip(
    case: tuple[list[str], list[tuple[list[str], list[str | None]]]],
) -> None:
    columns, rows = case
    parsed = read_csv(render_output_csv(columns, rows))
    assert parsed[0] == [spreadsheet_safe(c) for c in [*columns, OUTPUT_COLUMN]]
    assert len(parsed) == len(rows) + 1
    for (cells, outputs), read in zip(rows, parsed[1:], strict=True):
        joined = ",".join("" if url is None else url for url in outputs)
        assert read == [spreadsheet_safe(c) for c in [*cells, joined]]
        assert all(looks_safe(cell) for cell in read)


def looks_safe(cell: str) -> bool:
    """A cell read back is a plain number, starts with the apostrophe, or starts harmlessly."""
    if cell.startswith("'") or PLAIN_NUMBER.fullmatch(cell):
        return True
    return not cell.lstrip().startswith(("=", "+", "-", "@", "\t", "\r")) and not cell.startswith(
        ("\t", "\r")
    )
