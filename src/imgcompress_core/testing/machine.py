"""The model test: Hypothesis drives random event sequences through the workflow and a
real store, and checks the store against a model of what it must hold.

Events: new requests, claims, completions, failures, retries, stale workers finishing
work they lost, renewals, cancels, time passing (leases expire), finalization. After
every step the invariants must hold: counts add up, a final image never changes again,
a request is final exactly when every image is, it is finalized (webhook queued) once,
and a done image serves the bytes it was completed with.

Run it on your own store with one import::

    from imgcompress_core.testing import store_machine

    TestMyStoreMachine = store_machine(my_store_context)  # a pytest test class

where ``my_store_context()`` is an async context manager yielding an opened, empty store.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, ExitStack
from typing import Any, ClassVar

import anyio.from_thread
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ..errors import IllegalTransition, LeaseLost, RequestNotFinished
from ..model import Claim, Failure, ImageResult, ImageState, RequestStatus
from ..ports import Storage
from ..workflow import FINAL_IMAGE_STATES, Leasing, Workflow
from .contract import make_request
from .fakes import FakeClock

__all__ = ["StoreMachine", "store_machine"]

LEASE = 30.0
MAX_ATTEMPTS = 2
LEASING = Leasing(LEASE, MAX_ATTEMPTS)

StoreContext = Callable[[], AbstractAsyncContextManager[Storage]]


def _result(claim: Claim) -> ImageResult:
    """A processed image whose bytes say which claim made them."""
    return ImageResult(f"jpeg of {claim.image_id}".encode(), "image/jpeg", 1, 1, 10)


class StoreMachine(RuleBasedStateMachine):
    """A model of what the store must hold, checked against the store after every step."""

    open_store: ClassVar[StoreContext]

    def __init__(self) -> None:
        super().__init__()
        self.stack = ExitStack()
        self.portal = self.stack.enter_context(anyio.from_thread.start_blocking_portal())
        self.clock = FakeClock()
        self.store: Storage = self.stack.enter_context(
            self.portal.wrap_async_context_manager(type(self).open_store())
        )
        self.flow = Workflow.over(self.store, clock=self.clock)
        self.requests: list[str] = []
        self.images_of: dict[str, list[str]] = {}
        self.current: dict[str, Claim] = {}  # the claim that owns each image now
        self.held: list[Claim] = []  # every claim ever handed out (some now stale)
        self.final_states: dict[str, ImageState] = {}
        self.done_bytes: dict[str, bytes] = {}
        self.finalized: set[str] = set()
        self.codes: dict[str, str] = {}  # failed image id -> its failure code
        self.deliveries: dict[str, int] = {}  # request id -> webhook deliveries queued
        self.attempts: dict[str, int] = {}
        self.lease_until: dict[str, float] = {}  # image id -> when its current lease ends

    def call(self, fn: Any, *args: Any) -> Any:
        """Run an async workflow or store method from the test thread."""
        return self.portal.call(fn, *args)

    def teardown(self) -> None:
        """Close the store and the portal."""
        self.stack.close()

    @initialize(sizes=st.lists(st.integers(1, 3), min_size=1, max_size=3))
    def first_request(self, sizes: list[int]) -> None:
        """Start with one request."""
        self.add_request(sizes)

    @rule(sizes=st.lists(st.integers(1, 3), min_size=1, max_size=3))
    def add_request(self, sizes: list[int]) -> None:
        """Upload another request."""
        request = make_request(tuple(sizes), webhook_url="https://hooks.example/h")
        self.call(self.flow.create, request)
        self.requests.append(request.request_id)
        self.images_of[request.request_id] = [i.image_id for i in request.images]

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
        claims: list[Claim] = self.call(self.flow.claim, "w", limit, LEASING)
        assert len(claims) <= limit
        assert len({c.image_id for c in claims}) == len(claims), "an image was claimed twice"
        for image_id in lost:
            self.final_states[image_id] = ImageState.FAILED
            self.codes[image_id] = "worker_lost"
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
        renewed = self.call(self.flow.renew, [claim], LEASE)
        assert renewed == ([claim] if working else [])
        if working:
            self.lease_until[claim.image_id] = self.clock.now + LEASE

    def _finish(self, index: int, action: str) -> None:
        claim = self.held[index % len(self.held)]
        owner = self.current.get(claim.image_id) == claim
        final = self.final_states.get(claim.image_id)
        try:
            if action == "complete":
                self.call(self.flow.complete, claim, _result(claim))
            elif action == "fail":
                self.call(self.flow.fail, claim, Failure("x", "failed"))
            else:
                self.call(self.flow.retry, claim, Failure("t", "later"), 5.0)
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
            self.done_bytes.setdefault(claim.image_id, _result(claim).data)
        elif action == "fail":
            self.final_states[claim.image_id] = ImageState.FAILED
            self.codes.setdefault(claim.image_id, "x")
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
    def cancel(self, index: int) -> None:
        """A client cancels: every unfinished image fails, their claims die, and the request
        is finalized in the same step (once)."""
        request_id = self.requests[index % len(self.requests)]
        self.call(self.flow.cancel, request_id)
        for image_id in self.images_of[request_id]:
            if image_id not in self.final_states:
                self.final_states[image_id] = ImageState.FAILED
                self.codes[image_id] = "cancelled"
                self.current.pop(image_id, None)
                self.lease_until.pop(image_id, None)
        self._finalized(request_id)

    def _finalized(self, request_id: str) -> None:
        """Note that a request became final (its round queues one more delivery)."""
        if request_id not in self.finalized:
            self.finalized.add(request_id)
            self.deliveries[request_id] = self.deliveries.get(request_id, 0) + 1

    @rule(index=st.integers(0, 1000))
    def retry_failed(self, index: int) -> None:
        """A client retries a final request's failed images: those not cancelled are
        queued afresh and the request is Pending again; a Pending one is refused."""
        request_id = self.requests[index % len(self.requests)]
        if request_id not in self.finalized:
            try:
                self.call(self.flow.retry_failed, request_id)
            except RequestNotFinished:
                return
            raise AssertionError("a Pending request's failed images were retried")
        again = [
            i
            for i in self.images_of[request_id]
            if self.final_states.get(i) is ImageState.FAILED and self.codes[i] != "cancelled"
        ]
        queued = self.call(self.flow.retry_failed, request_id)
        assert queued == len(again), "retry queued other images than the failed ones"
        for image_id in again:
            del self.final_states[image_id], self.codes[image_id]
            self.attempts[image_id] = 0
            self.current.pop(image_id, None)
            self.lease_until.pop(image_id, None)
        if again:
            self.finalized.discard(request_id)

    @rule(index=st.integers(0, 1000))
    def finalize(self, index: int) -> None:
        """Finalize succeeds once, exactly when every image is final."""
        request_id = self.requests[index % len(self.requests)]
        all_final = all(i in self.final_states for i in self.images_of[request_id])
        result = self.call(self.flow.finalize, request_id)
        if all_final and request_id not in self.finalized:
            assert result is not None, "a finished request was not finalized"
            any_done = any(
                self.final_states[i] is ImageState.DONE for i in self.images_of[request_id]
            )
            expected = RequestStatus.COMPLETED if any_done else RequestStatus.FAILED
            assert result.status is expected
            self._finalized(request_id)
        else:
            assert result is None, "finalized twice, or before every image was final"

    @invariant()
    def store_matches_the_model(self) -> None:
        """Counts add up; final images keep their state and bytes; status matches."""
        for request_id in self.requests:
            progress = self.call(self.flow.progress, request_id)
            parts = progress.queued + progress.working + progress.done + progress.failed
            assert parts == progress.total == len(self.images_of[request_id])
            images = self.call(self.store.list_images, request_id)
            for image in images:
                expected = self.final_states.get(image.image_id)
                if expected is not None:
                    assert image.state is expected, "a final image changed state"
                else:
                    assert image.state not in FINAL_IMAGE_STATES, "an image became final alone"
            request = self.call(self.store.get_request, request_id)
            if request.status is RequestStatus.PENDING:
                assert request_id not in self.finalized, "a finalized request is Pending"
            else:
                assert request_id in self.finalized, "a request became final by itself"
                assert progress.finished == progress.total
            deliveries = self.call(self.store.list_deliveries, request_id)
            assert len(deliveries) == self.deliveries.get(request_id, 0), "deliveries miscounted"
        for image_id, data in self.done_bytes.items():
            assert self.call(self.flow.image, image_id).data == data, "wrong bytes served"


def store_machine(
    open_store: StoreContext, *, max_examples: int = 25, steps: int = 25
) -> type[Any]:
    """Return a pytest test class running the model test against stores that
    ``open_store()`` (an async context manager) opens, one per example."""
    machine: Any = type("Machine", (StoreMachine,), {"open_store": staticmethod(open_store)})
    test_case: type[Any] = machine.TestCase
    test_case.settings = settings(
        max_examples=max_examples, stateful_step_count=steps, deadline=None
    )
    return test_case
