"""Scheduling rules: whose turn it is (owners, then requests) and how many images of one
host a worker may hold."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from urllib.parse import urlsplit


def fair_order(candidates: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Interleave (request id, owner) pairs so each owner takes turns, keeping each
    owner's requests in the order given (least recently served first)."""
    by_owner: dict[str, list[tuple[str, str]]] = {}
    for pair in candidates:
        by_owner.setdefault(pair[1], []).append(pair)
    queues = list(by_owner.values())
    ordered: list[tuple[str, str]] = []
    for turn in range(max((len(q) for q in queues), default=0)):
        ordered.extend(q[turn] for q in queues if turn < len(q))
    return ordered


class Turns:
    """The requests a worker last found with images to claim, in the order of their next
    turns.

    The store is asked again only when the list is older than ``max_age`` seconds, was
    found with a host skipped that now has room, or ran dry: claiming then costs one store
    call instead of two. A request claimed from moves to the back, as in the store's
    least-recently-claimed order. A request that had nothing to give outside some full
    hosts waits, without a store call, while those hosts stay full.
    """

    def __init__(self, max_age: float = 1.0) -> None:
        self.max_age = max_age
        self.pairs: list[tuple[str, str]] = []  # (request id, owner), next turn first
        # request -> the full hosts it had nothing outside of when last asked
        self.blocked: dict[tuple[str, str], frozenset[str]] = {}
        self._found_at = float("-inf")
        self._skipped: frozenset[str] = frozenset()

    def stale(self, now: float, skip_hosts: frozenset[str]) -> bool:
        """Return True if the list must be looked up again before claiming."""
        return (
            not self.pairs
            or not 0 <= now - self._found_at < self.max_age
            or not self._skipped <= skip_hosts
        )

    def found(self, pairs: Sequence[tuple[str, str]], now: float, skipped: frozenset[str]) -> None:
        """Remember what the store answered (in fair order)."""
        self.pairs = fair_order(pairs)
        self.blocked = {}
        self._found_at, self._skipped = now, skipped

    def forget(self) -> None:
        """Look again at the next claim (new work was stored)."""
        self.pairs = []

    def waiting(self, pair: tuple[str, str], full_hosts: frozenset[str]) -> bool:
        """Return True if the request had nothing outside hosts that are all still full."""
        blocked = self.blocked.get(pair)
        return blocked is not None and blocked <= full_hosts

    def gave_less(self, pair: tuple[str, str], skipped: frozenset[str]) -> bool:
        """A claim from ``pair`` skipping these full hosts gave fewer images than asked:
        return True if it waits for them, False if it ran dry (nothing was skipped)."""
        if skipped:
            self.blocked[pair] = skipped
        return bool(skipped)

    def played(self, claimed: Sequence[tuple[str, str]], dry: Sequence[tuple[str, str]]) -> None:
        """Move the requests claimed from to the back and drop those that ran dry."""
        gone = set(dry)
        moved = set(claimed) | gone
        self.pairs = [p for p in self.pairs if p not in moved]
        self.pairs += [p for p in claimed if p not in gone]


def host_of(url: str) -> str:
    """Return the host an image URL is downloaded from (lower case, no port or user)."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


class HostShares:
    """How many images one worker holds per host, and how many it may: ``per_host``,
    halved for each recent timeout of that host (down to one), so a slow or hanging host
    occupies only its share of the download slots and healthy hosts the rest."""

    MAX_PENALTY = 3

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self.held: Counter[str] = Counter()
        self._penalty: Counter[str] = Counter()

    def cap(self, host: str) -> int:
        """Return how many images of ``host`` may be held at once now."""
        return max(1, self.per_host >> self._penalty[host])

    def full(self) -> frozenset[str]:
        """Return the hosts whose share is taken."""
        return frozenset(host for host, n in self.held.items() if n >= self.cap(host))

    def room(self) -> int:
        """Return how many images may be taken at once without any host going past its
        share (the tightest host held decides; with none held, a whole share)."""
        left = [self.cap(host) - n for host, n in self.held.items() if n < self.cap(host)]
        return max(1, min([self.per_host, *left]))

    def take(self, host: str) -> None:
        """Count one more held image of ``host``."""
        self.held[host] += 1

    def give_back(self, host: str) -> None:
        """Count one held image of ``host`` less."""
        self.held[host] -= 1
        if self.held[host] <= 0:
            del self.held[host]

    def timed_out(self, host: str) -> None:
        """A download from ``host`` timed out: halve its share (down to one slot)."""
        self._penalty[host] = min(self.MAX_PENALTY, self._penalty[host] + 1)

    def answered(self, host: str) -> None:
        """A download from ``host`` finished in time: give back half of a lost share."""
        if self._penalty[host] > 0:
            self._penalty[host] -= 1
            if not self._penalty[host]:
                del self._penalty[host]
