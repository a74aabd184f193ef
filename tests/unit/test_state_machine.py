"""Hypothesis drives random event sequences through the workflow and a real store.

Events: new requests, claims, completions, failures, retries, stale workers finishing
work they lost, time passing (leases expire), finalization. After every step the
invariants must hold: counts add up, a final image never changes again, a request is
final exactly when every image is, and it is finalized (webhook queued) once.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from imgcompress_core import IllegalTransition, LeaseLost, MemoryStorage, SqliteStorage, Storage
from imgcompress_core.model import Claim, Failure, ImageResult, ImageState, RequestStatus
from imgcompress_core.testing import FakeClock
from imgcompress_core.testing.contract import make_request
from imgcompress_core.workflow import FINAL_IMAGE_STATES, TRANSITIONS, check_transition, sources

LEASE = 30.0
MAX_ATTEMPTS = 2
RESULT = ImageResult(b"\xff\xd8x", "image/jpeg", 1, 1, 10)


def test_transition_table_is_consistent() -> None:
    """Final states have no way out; every non-final state can reach a final one."""
    assert {ImageState.DONE, ImageState.FAILED} == FINAL_IMAGE_STATES
    for state, targets in TRANSITIONS.items():
        for target in ImageState:
            if target in targets:
                check_transition(state, target)
                assert state in sources(target)
            else:
                with pytest.raises(IllegalTransition):
                    check_transition(state, target)


class StoreMachine(RuleBasedStateMachine):
    """A model of what the store must hold, checked against the store after every step."""

    store_kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.stack = ExitStack()
        self.portal = self.stack.enter_context(anyio.from_thread.start_blocking_portal())
        self.clock = FakeClock()
        self.store: Storage
        if self.store_kind == "sqlite":
            folder = self.stack.enter_context(tempfile.TemporaryDirectory())
            self.store = SqliteStorage(Path(folder) / "s.sqlite3", clock=self.clock)
        else:
            self.store = MemoryStorage(clock=self.clock)
        self.call(self.store.open)
        self.requests: list[str] = []
        self.current: dict[str, Claim] = {}  # the claim that owns each image now
        self.held: list[Claim] = []  # every claim ever handed out (some now stale)
        self.final_states: dict[str, ImageState] = {}
        self.finalized: set[str] = set()
        self.attempts: dict[str, int] = {}
        self.lease_until: dict[str, float] = {}  # image id -> when its current lease ends

    def call(self, fn: Any, *args: Any) -> Any:
        """Run an async store method from the test thread."""
        return self.portal.call(fn, *args)

    def teardown(self) -> None:
        """Close the store and the portal."""
        self.call(self.store.close)
        self.stack.close()

    @initialize(sizes=st.lists(st.integers(1, 3), min_size=1, max_size=3))
    def first_request(self, sizes: list[int]) -> None:
        """Start with one request."""
        self.add_request(sizes)

    @rule(sizes=st.lists(st.integers(1, 3), min_size=1, max_size=3))
    def add_request(self, sizes: list[int]) -> None:
        """Upload another request."""
        request = make_request(tuple(sizes), webhook_url="https://hooks.example/h")
        self.call(self.store.create_request, request)
        self.requests.append(request.request_id)

    @rule(limit=st.integers(1, 4))
    def claim(self, limit: int) -> None:
        """A worker claims images; an image whose worker died too often fails instead."""
        now = self.clock.now
        lost = {
            image_id
            for image_id, until in self.lease_until.items()
            if until <= now
            and self.attempts[image_id] >= MAX_ATTEMPTS
            and image_id not in self.final_states
        }
        claims: list[Claim] = self.call(self.store.claim_images, "w", limit, LEASE, MAX_ATTEMPTS)
        assert len(claims) <= limit
        for image_id in lost:
            self.final_states[image_id] = ImageState.FAILED
            del self.current[image_id]
        for claim in claims:
            assert claim.image_id not in self.final_states, "a final image was claimed"
            live = self.lease_until.get(claim.image_id, 0) > now
            assert not live, "an image under a live lease was claimed again"
            self.attempts[claim.image_id] = self.attempts.get(claim.image_id, 0) + 1
            assert claim.attempt == self.attempts[claim.image_id]
            self.current[claim.image_id] = claim
            self.lease_until[claim.image_id] = now + LEASE
            self.held.append(claim)

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 1000))
    def renew(self, index: int) -> None:
        """A worker renews a lease: only the current, unfinished claim keeps it."""
        claim = self.held[index % len(self.held)]
        owner = self.current.get(claim.image_id) == claim
        working = owner and claim.image_id not in self.final_states
        renewed = self.call(self.store.renew_claims, [claim], LEASE)
        assert renewed == ([claim] if working else [])
        if working:
            self.lease_until[claim.image_id] = self.clock.now + LEASE

    def _finish(self, index: int, action: str) -> None:
        claim = self.held[index % len(self.held)]
        owner = self.current.get(claim.image_id) == claim
        final = self.final_states.get(claim.image_id)
        try:
            if action == "complete":
                self.call(self.store.complete_image, claim, RESULT)
            elif action == "fail":
                self.call(self.store.fail_image, claim, Failure("x", "failed"))
            else:
                self.call(self.store.retry_image, claim, Failure("t", "later"), self.clock.now + 5)
        except LeaseLost:
            assert not owner, "the owning claim was refused"
            return
        except IllegalTransition:
            assert owner and final is not None, "a legal change was refused"
            return
        idempotent_repeat = action == "complete" and final is ImageState.DONE
        assert owner, "a stale claim changed an image"
        assert final is None or idempotent_repeat, "a final image changed"
        self.lease_until.pop(claim.image_id, None)
        if action == "complete":
            self.final_states[claim.image_id] = ImageState.DONE
        elif action == "fail":
            self.final_states[claim.image_id] = ImageState.FAILED
        else:
            del self.current[claim.image_id]

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 1000))
    def complete(self, index: int) -> None:
        """A worker (maybe a stale one) completes an image."""
        self._finish(index, "complete")

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 1000))
    def fail(self, index: int) -> None:
        """A worker (maybe a stale one) fails an image."""
        self._finish(index, "fail")

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 1000))
    def retry(self, index: int) -> None:
        """A worker (maybe a stale one) puts an image back in the queue."""
        self._finish(index, "retry")

    @rule(seconds=st.sampled_from([1.0, 10.0, LEASE + 1]))
    def time_passes(self, seconds: float) -> None:
        """Leases expire and retry times arrive."""
        self.clock.advance(seconds)

    @rule(index=st.integers(0, 1000))
    def finalize(self, index: int) -> None:
        """Finalize succeeds once, exactly when every image is final."""
        request_id = self.requests[index % len(self.requests)]
        images = self.call(self.store.list_images, request_id)
        all_final = all(i.state in FINAL_IMAGE_STATES for i in images)
        result = self.call(self.store.finalize_request, request_id)
        if all_final and request_id not in self.finalized:
            assert result is not None
            any_done = any(i.state is ImageState.DONE for i in images)
            expected = RequestStatus.COMPLETED if any_done else RequestStatus.FAILED
            assert result.status is expected
            self.finalized.add(request_id)
        else:
            assert result is None

    @invariant()
    def counts_add_up_and_final_is_final(self) -> None:
        """Counts add up; final images keep their state; status matches the images."""
        for request_id in self.requests:
            progress = self.call(self.store.progress, request_id)
            parts = progress.queued + progress.working + progress.done + progress.failed
            assert parts == progress.total
            images = self.call(self.store.list_images, request_id)
            for image in images:
                if image.image_id in self.final_states:
                    assert image.state is self.final_states[image.image_id]
            request = self.call(self.store.get_request, request_id)
            if request.status is RequestStatus.PENDING:
                assert request_id not in self.finalized
            else:
                assert request_id in self.finalized
                assert progress.finished == progress.total
            deliveries = self.call(self.store.list_deliveries, request_id)
            assert len(deliveries) == (1 if request_id in self.finalized else 0)


class SqliteStoreMachine(StoreMachine):
    """The same machine against the SQLite store."""

    store_kind = "sqlite"


TestMemoryStateMachine = StoreMachine.TestCase
TestMemoryStateMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestSqliteStateMachine = SqliteStoreMachine.TestCase
TestSqliteStateMachine.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
