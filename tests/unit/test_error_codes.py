"""Every error code the source produces is in ERROR_CODES, and docs/api.md lists exactly those.

The source is read with ``ast``: a code is a string given to ``code=`` (a keyword argument),
assigned to ``code`` (a class attribute or a local), put under a ``"code"`` key in a dict,
or passed first to ``Failure(...)``. An f-string like ``f"upstream_http_{status}"`` counts
as the template ``upstream_http_<status>``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgcompress_core.errors import (
    ERROR_CODES,
    ImgCompressError,
    LeaseLost,
    StorageError,
    StorageUnavailable,
)
from imgcompress_web.problems import to_problem

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
API_DOC = ROOT / "docs" / "api.md"

# Test doubles and the storage contract suite invent placeholder failures ("x", "y").
SKIPPED = (SRC / "imgcompress_core" / "testing",)

_PLACEHOLDER = re.compile(r"<[a-z_]+>")


def _strings(node: ast.expr) -> Iterator[str]:
    """The code strings an expression can evaluate to (f-strings become templates)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue):
                inner = value.value
                name = inner.id if isinstance(inner, ast.Name) else "value"
                parts.append(f"<{name}>")
        yield "".join(parts)
    elif isinstance(node, ast.IfExp):
        yield from _strings(node.body)
        yield from _strings(node.orelse)


def _is_code(target: ast.expr) -> bool:
    return isinstance(target, ast.Name) and target.id == "code"


def _code_values(node: ast.AST) -> list[ast.expr]:
    """The expressions that one node gives as an error code."""
    if isinstance(node, ast.keyword):
        return [node.value] if node.arg == "code" else []
    if isinstance(node, ast.AnnAssign):
        return [node.value] if _is_code(node.target) and node.value else []
    if isinstance(node, ast.Assign):
        found = [node.value for target in node.targets if _is_code(target)]
        for target in node.targets:  # status, code = 413, "too_many_form_parts"
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs = zip(target.elts, node.value.elts, strict=True)
                found += [value for name, value in pairs if _is_code(name)]
        return found
    if isinstance(node, ast.Dict):
        entries = zip(node.keys, node.values, strict=True)
        return [v for k, v in entries if isinstance(k, ast.Constant) and k.value == "code"]
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        return [node.args[0]] if name == "Failure" else []
    return []


def _codes_in(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Yield (line, code) for every code literal in a module."""
    for node in ast.walk(tree):
        for expr in _code_values(node):
            for code in _strings(expr):
                yield expr.lineno, code


def source_codes() -> dict[str, str]:
    """Return every code literal under src/, with where it was first seen."""
    codes: dict[str, str] = {}
    for path in sorted(SRC.rglob("*.py")):
        if any(path.is_relative_to(skipped) for skipped in SKIPPED):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, code in _codes_in(tree):
            codes.setdefault(code, f"{path.relative_to(ROOT)}:{line}")
    return codes


def _known(code: str, keys: set[str]) -> bool:
    """True if ``code`` is a key, or fills a template key (``upstream_http_404``)."""
    if code in keys:
        return True
    templates = (_PLACEHOLDER.sub(r"\\d{3}", re.escape(k)) for k in keys if _PLACEHOLDER.search(k))
    return any(re.fullmatch(pattern, code) for pattern in templates)


def documented_codes(markdown: str) -> set[str]:
    """Return the backticked codes in the ``code`` column of every table in ``markdown``."""
    codes: set[str] = set()
    column: int | None = None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            column = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if column is None:  # a table's header row
            column = cells.index("code") if "code" in cells else -1
        elif column >= 0 and not set(cells[column]) <= set("-: "):
            codes.update(re.findall(r"`([^`]+)`", cells[column]))
    return codes


def test_the_scan_sees_every_kind_of_code_site() -> None:
    """The scanner finds class attributes, keywords, f-strings, Failure(), tuples and dicts."""
    codes = source_codes()
    for expected in (
        "storage_unavailable",  # class attribute
        "not_an_image",  # code= keyword
        "upstream_http_<status>",  # f-string
        "worker_lost",  # Failure("...")
        "too_many_form_parts",  # status, code = 413, "..."
        "invalid_form",  # {"code": "..."}
    ):
        assert expected in codes, f"the scan no longer finds {expected!r}"


def test_every_code_in_the_source_has_an_entry() -> None:
    """A new code without an entry in ERROR_CODES fails here."""
    keys = set(ERROR_CODES)
    missing = {code: where for code, where in source_codes().items() if not _known(code, keys)}
    assert not missing, f"add these to imgcompress_core.errors.ERROR_CODES: {missing}"


def test_every_entry_is_still_produced() -> None:
    """ERROR_CODES lists no code that the source stopped producing."""
    keys = set(ERROR_CODES)
    produced = source_codes()
    stale = {key for key in keys if key not in produced}
    assert not stale, f"no longer produced, remove from ERROR_CODES and docs: {stale}"


def test_entries_are_well_formed() -> None:
    """Codes are snake_case (with <placeholders>) and each meaning is one line."""
    for code, meaning in ERROR_CODES.items():
        assert re.fullmatch(r"[a-z0-9_]*(<[a-z_]+>)?[a-z0-9_]*", code), code
        assert meaning and "\n" not in meaning, code


def test_the_api_doc_lists_exactly_the_error_codes() -> None:
    """docs/api.md's code tables document every code in ERROR_CODES, and no others."""
    documented = documented_codes(API_DOC.read_text(encoding="utf-8"))
    assert sorted(documented - set(ERROR_CODES)) == [], "documented but not in ERROR_CODES"
    assert sorted(set(ERROR_CODES) - documented) == [], "in ERROR_CODES but not in docs/api.md"


def test_a_missing_entry_would_be_caught() -> None:
    """The checks above can fail: drop one entry and both notice."""
    keys = set(ERROR_CODES) - {"worker_lost"}
    assert not all(_known(code, keys) for code in source_codes())
    assert not _known("upstream_http_404", set(ERROR_CODES) - {"upstream_http_<status>"})
    assert _known("upstream_http_404", set(ERROR_CODES))
    table = "| code | meaning |\n| --- | --- |\n| `a`, `b` | x |\n\n| status | when |\n| 1 | `c` |"
    assert documented_codes(table) == {"a", "b"}


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (StorageUnavailable("down"), 503, "5"),
        (StorageUnavailable("no worker", code="worker_down"), 503, "5"),
        (LeaseLost.image("i1"), 500, None),
        (StorageError("driver said no"), 500, None),
        (ImgCompressError("refused", code="storage_conflict"), 500, None),
    ],
)
def test_storage_errors_keep_their_http_status(
    error: ImgCompressError, status: int, retry_after: str | None
) -> None:
    """StorageError's subclasses map to problems as they did before it existed."""
    problem = to_problem(error)
    assert problem.status_code == status
    assert problem.extra == {"code": error.code}
    assert (problem.headers or {}).get("Retry-After") == retry_after
