"""The store's share of an image: CPU per image of the SQLite calls a finished image costs.

    .venv/bin/python benchmarks/store.py [-n 1500] [--rounds 4] [--pragma NAME=VALUE ...]

One request of N images in a fresh SQLite file (the embedded default, blobs in the same
file), then, for every image, the store calls ``serve``'s worker makes, through the
workflow as it makes them (the store's thread and its hand-offs included): a claim of 8
at a time, ``recall`` before the download, ``downloaded`` after it, and ``complete`` with
a 150 KB output (about the corpus's mean output at q50, 0.14 MB: its blob, its reuse-cache
entry, the image marked done). The table gives this process's user and system CPU per
image, and where the time inside SQLite goes, statement by statement (a ``COMMIT`` is
named after the first statement of its transaction).

Each variant runs in a fresh interpreter: ``default`` (the store as it is), and one per
``--pragma`` (run on the store's connection after it opens, e.g. ``wal_autocheckpoint=4000``
or ``page_size=16384``, which a new file takes before its first table). Variants alternate
round after round, so a machine whose speed drifts affects them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from imgcompress_core.model import Claim, ImageResult
from imgcompress_core.stores.sqlite import SqliteStorage
from imgcompress_core.testing._contract_kit import LEASING, make_request
from imgcompress_core.workflow import Workflow
from imgcompress_core.workflow.rules import content_hash

OUTPUT_BYTES = 150_000


class TimedConnection:
    """A sqlite3 connection that adds each statement's time to ``spent`` (seconds, by the
    statement's first words; a COMMIT by its transaction's first statement)."""

    def __init__(self, inner: sqlite3.Connection) -> None:
        self._inner = inner
        self.spent: defaultdict[str, float] = defaultdict(float)
        self._first: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        words = " ".join(sql.split()[:4])
        if words.startswith("COMMIT"):
            words, self._first = f"COMMIT after {self._first}", None
        elif not words.startswith("BEGIN") and self._first is None:
            self._first = words
        started = time.perf_counter()
        try:
            return self._inner.execute(sql, *args)
        finally:
            self.spent[words] += time.perf_counter() - started


async def one_run(n: int, pragma: str | None) -> dict[str, Any]:
    """Run the calls of ``n`` images; return CPU ms per image and ms per statement."""
    folder = tempfile.mkdtemp(prefix="imgcompress-store-")
    path = Path(folder) / "imgcompress.db"
    if pragma and pragma.startswith("page_size="):  # a new file takes it before any table
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute(f"PRAGMA {pragma}")
            conn.execute("VACUUM")
    store = SqliteStorage(path)
    await store.open()
    timed = TimedConnection(store._connect())  # the benchmark looks inside the store
    store._conn = timed  # type: ignore[assignment]
    if pragma and not pragma.startswith("page_size="):
        timed.execute(f"PRAGMA {pragma}")
    flow = Workflow.over(store)
    request = make_request((1,) * n)  # n products of one image
    await flow.create(request)
    outputs = [os.urandom(OUTPUT_BYTES) for _ in range(8)]

    async def finish(claim: Claim, index: int) -> None:
        await flow.recall("", claim.url, "")
        input_hash = content_hash(claim.image_id.encode())
        await flow.downloaded("", claim.url, claim.request_id, input_hash, None, None)
        data = outputs[index % len(outputs)] + claim.image_id.encode()  # a blob of its own
        result = ImageResult(data, "image/jpeg", 1200, 800, 4 * OUTPUT_BYTES)
        await flow.complete(claim, result, input_hash=input_hash)

    timed.spent.clear()
    before, done = resource.getrusage(resource.RUSAGE_SELF), 0
    while done < n:
        claims = await flow.claim("bench", 8, LEASING)
        await asyncio.gather(*(finish(claim, i) for i, claim in enumerate(claims)))
        done += len(claims)
    after = resource.getrusage(resource.RUSAGE_SELF)
    await store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    shutil.rmtree(folder)
    return {
        "user_ms": (after.ru_utime - before.ru_utime) / n * 1000,
        "sys_ms": (after.ru_stime - before.ru_stime) / n * 1000,
        "page_size": page_size,
        "statements_ms": {k: v / n * 1000 for k, v in timed.spent.items()},
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Run the variants, alternating, and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-n", type=int, default=1500, help="images per run")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--pragma", action="append", default=[], help="NAME=VALUE variant")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one run of this pragma
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(asyncio.run(one_run(args.n, args.child or None))))
        return
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for pragma in ["", *args.pragma]:
            out = subprocess.run(
                [sys.executable, __file__, "-n", str(args.n), "--child", pragma],
                capture_output=True,
                text=True,
                check=True,
            )
            runs.setdefault(pragma or "default", []).append(json.loads(out.stdout))
    print(f"{args.n} images per run, {args.rounds} rounds, a {OUTPUT_BYTES // 1000} KB output each")
    print("| variant | page size | CPU ms per image (each round) | median | of it system |")
    print("| --- | --- | --- | --- | --- |")
    for name, rows in runs.items():
        totals = [r["user_ms"] + r["sys_ms"] for r in rows]
        system = statistics.median(r["sys_ms"] for r in rows)
        each = " / ".join(f"{t:.2f}" for t in totals)
        median = statistics.median(totals)
        print(f"| {name} | {rows[0]['page_size']} | {each} | {median:.2f} | {system:.2f} |")
    for name, rows in runs.items():
        print(f"\n{name}: ms per image inside SQLite, median of the rounds")
        print("| statement | ms |")
        print("| --- | --- |")
        keys = {k for r in rows for k in r["statements_ms"]}
        medians = {k: statistics.median(r["statements_ms"].get(k, 0.0) for r in rows) for k in keys}
        for key, ms in sorted(medians.items(), key=lambda kv: -kv[1])[:8]:
            print(f"| {key} | {ms:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
