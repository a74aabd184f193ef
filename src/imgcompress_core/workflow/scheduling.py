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
