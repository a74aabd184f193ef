"""The SQLite store's image queue: claims (fair, per host), leases, and finishing images,
each one conditional update."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..model import Claim, Failure, ImageChange, ImageState, new_id
from ._sqlite_base import PENDING, QUEUED, WORKING, SqliteBase, in_thread, states_in

__all__ = ["SqliteImageQueue"]

# A request's claimable images: expired leases first, then due queued images, in order.
_CLAIMABLE = (
    "SELECT seq, 0 AS rank FROM images WHERE request_id = :rid AND state = 'working'"
    " AND lease_expires_at <= :now AND attempts < :max_attempts AND host NOT IN ({skip})"
    " UNION ALL SELECT seq, 1 AS rank FROM images WHERE request_id = :rid AND state = 'queued'"
    " AND not_before <= :now AND host NOT IN ({skip})"
)


def _claimable(skip_hosts: frozenset[str]) -> tuple[str, dict[str, str]]:
    """Return the claimable-images query skipping these hosts, and its host parameters."""
    hosts = {f"h{n}": host for n, host in enumerate(sorted(skip_hosts))}
    return _CLAIMABLE.format(skip=", ".join(f":{name}" for name in hosts)), hosts


class SqliteImageQueue(SqliteBase):
    """Images leased to workers with fencing tokens."""

    # -- images -----------------------------------------------------------------------

    @in_thread
    def expire_leases(self, now: float, max_attempts: int, failure: Failure) -> None:
        """Fail working images whose lease expired after ``max_attempts`` attempts."""
        with self._write() as conn:
            conn.execute(
                "UPDATE images SET state = ?, failure_code = ?, failure_message = ?,"
                " lease_token = NULL, updated_at = ?"
                " WHERE state = ? AND lease_expires_at <= ? AND attempts >= ?",
                (
                    ImageState.FAILED.value,
                    failure.code,
                    failure.message,
                    now,
                    WORKING,
                    now,
                    max_attempts,
                ),
            )

    @in_thread
    def claimable_requests(
        self, now: float, limit: int, skip_hosts: frozenset[str]
    ) -> list[tuple[str, str]]:
        """Return, per owner, up to ``limit`` Pending requests with a claimable image,
        least recently claimed first."""
        claimable, hosts = _claimable(skip_hosts)
        with self._read() as conn:
            rows = conn.execute(
                "SELECT request_id, owner FROM (SELECT request_id, owner, claimed_at,"
                " ROW_NUMBER() OVER (PARTITION BY owner ORDER BY claimed_at) AS turn"
                " FROM requests r WHERE status = :pending AND EXISTS ("
                + claimable.replace(":rid", "r.request_id")
                + ")) WHERE turn <= :limit ORDER BY turn, claimed_at",
                {"now": now, "max_attempts": 2**31, "limit": limit, "pending": PENDING, **hosts},
            ).fetchall()
        return [(r["request_id"], r["owner"]) for r in rows]

    @in_thread
    def claim_images(
        self,
        request_id: str,
        worker: str,
        limit: int,
        *,
        now: float,
        lease_seconds: float,
        max_attempts: int,
        skip_hosts: frozenset[str] = frozenset(),
    ) -> list[Claim]:
        """Lease up to ``limit`` of the request's images in one conditional update."""
        token = new_id()
        claimable, hosts = _claimable(skip_hosts)
        params = {
            **hosts,
            "rid": request_id,
            "now": now,
            "max_attempts": max_attempts,
            "limit": limit,
            "worker": worker,
            "token": token,
            "expires": now + lease_seconds,
        }
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE images SET state = 'working', attempts = attempts + 1,"
                " lease_owner = :worker, lease_token = :token, lease_expires_at = :expires,"
                " updated_at = :now WHERE seq IN (SELECT seq FROM"
                f" ({claimable} ORDER BY rank, seq LIMIT :limit))"
                " RETURNING image_id, url, attempts, seq",
                params,
            ).fetchall()
            conn.execute(
                "UPDATE requests SET claimed_at = ? WHERE request_id = ?", (now, request_id)
            )
        rows.sort(key=lambda r: r["seq"])
        return [Claim(r["image_id"], request_id, r["url"], r["attempts"], token) for r in rows]

    @in_thread
    def renew_claims(self, claims: Sequence[Claim], expires_at: float) -> list[Claim]:
        """Extend the leases these claims still hold; return those."""
        held = []
        with self._write() as conn:
            for claim in claims:
                cursor = conn.execute(
                    "UPDATE images SET lease_expires_at = ? WHERE image_id = ?"
                    " AND lease_token = ? AND state = ?",
                    (expires_at, claim.image_id, claim.token, WORKING),
                )
                if cursor.rowcount == 1:
                    held.append(claim)
        return held

    @in_thread
    def finish_image(
        self,
        claim: Claim,
        target: ImageState,
        sources: frozenset[ImageState],
        change: ImageChange,
        now: float,
    ) -> tuple[ImageState, str | None] | None:
        """Move the image to ``target`` if the claim owns it and it is in ``sources``."""
        fields: dict[str, Any] = {
            "state": target.value,
            "failure_code": change.failure.code if change.failure else None,
            "failure_message": change.failure.message if change.failure else None,
            "updated_at": now,
        }
        if target is ImageState.QUEUED:
            fields |= {"lease_token": None, "lease_expires_at": 0, "not_before": change.not_before}
        if change.output is not None:
            out = change.output
            fields |= {
                "input_bytes": out.input_bytes,
                "output_bytes": out.output_bytes,
                "width": out.width,
                "height": out.height,
                "content_type": out.content_type,
                "note": out.note,
                "blob_key": out.blob_key,
                "output_id": out.output_id,
                "reused": change.reused,
                "quality": out.quality,
                "score": out.score,
                "warnings": json.dumps(out.warnings),
            }
        listed, values = states_in(sources)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE images SET {assignments} WHERE image_id = ? AND lease_token = ?"
                f" AND state IN {listed}",
                (*fields.values(), claim.image_id, claim.token, *values),
            )
            if cursor.rowcount == 1:
                return None
            row = conn.execute(
                "SELECT state, lease_token FROM images WHERE image_id = ?", (claim.image_id,)
            ).fetchone()
        if row is None:
            return ImageState.FAILED, None
        return ImageState(row["state"]), row["lease_token"]

    @in_thread
    def queue_depth(self) -> int:
        """Count queued images."""
        with self._read() as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM images WHERE state = ?", (QUEUED,)
            ).fetchone()
        return int(count)
