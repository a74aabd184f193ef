"""The model test (imgcompress_core.testing.machine) on the memory and SQLite stores, and
proof that it catches a store that breaks a rule."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from imgcompress_core import IllegalTransition, MemoryStorage, SqliteStorage, Storage
from imgcompress_core.model import Claim, ImageChange, ImageState
from imgcompress_core.testing import StoreMachine, store_machine
from imgcompress_core.workflow import FINAL_IMAGE_STATES, TRANSITIONS, check_transition, sources


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


@asynccontextmanager
async def memory_store() -> AsyncIterator[Storage]:
    """An opened in-memory store."""
    yield MemoryStorage()


@asynccontextmanager
async def sqlite_store() -> AsyncIterator[Storage]:
    """An opened SQLite store on a fresh file."""
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStorage(Path(folder) / "machine.sqlite3")
        await store.open()
        try:
            yield store
        finally:
            await store.close()


TestMemoryStoreMachine = store_machine(memory_store, max_examples=60, steps=30)
TestSqliteStoreMachine = store_machine(sqlite_store, max_examples=25, steps=25)


class _StaleClaimsWin(MemoryStorage):
    """Broken on purpose: finishing ignores the lease token, so a worker whose lease was
    taken over can still overwrite the image."""

    async def finish_image(
        self,
        claim: Claim,
        target: ImageState,
        sources: frozenset[ImageState],
        change: ImageChange,
        now: float,
    ) -> tuple[ImageState, str | None] | None:
        current = self._leases[claim.image_id].token
        return await super().finish_image(
            Claim(claim.image_id, claim.request_id, claim.url, claim.attempt, current or ""),
            target,
            sources,
            change,
            now,
        )


class _FinalizesTwice(MemoryStorage):
    """Broken on purpose: finalizing does not check that the request is still Pending."""

    async def finalize_request(self, request_id, status, now, delivery_id):  # type: ignore[no-untyped-def]
        import dataclasses

        from imgcompress_core.model import RequestStatus

        request = self._requests[request_id]
        self._requests[request_id] = dataclasses.replace(request, status=RequestStatus.PENDING)
        return await super().finalize_request(request_id, status, now, delivery_id)


class _ClaimsLiveLeases(MemoryStorage):
    """Broken on purpose: claims hand out images whose lease is still live."""

    def _claimable(self, request_id, now, max_attempts, skip=frozenset()):  # type: ignore[no-untyped-def]
        yield from self._working[request_id]
        yield from super()._claimable(request_id, now, max_attempts, skip)


@pytest.mark.parametrize("broken", [_StaleClaimsWin, _FinalizesTwice, _ClaimsLiveLeases])
def test_the_model_catches_a_store_that_breaks_a_rule(broken: type[MemoryStorage]) -> None:
    """A store with one rule broken fails the model test (it is not a test that always
    passes)."""

    @asynccontextmanager
    async def open_broken() -> AsyncIterator[Storage]:
        yield broken()

    machine = type("Broken", (StoreMachine,), {"open_store": staticmethod(open_broken)})
    quick = settings(  # derandomized: the same sequences every run, no flakiness
        max_examples=1000,
        stateful_step_count=40,
        deadline=None,
        phases=[Phase.generate],
        derandomize=True,
    )
    with pytest.raises(AssertionError):
        run_state_machine_as_test(machine, settings=quick)
