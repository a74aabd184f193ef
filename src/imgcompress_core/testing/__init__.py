"""Test helpers that ship with the core, so adapters written elsewhere can use them too.

- :class:`StorageContract`: the storage contract suite. Subclass it in a pytest module
  and provide a ``storage`` fixture; every test in it then runs against your store.
- :class:`BlobContract`: the same for a blob store alone (object storage, a directory).
- :func:`store_machine`: the model-based test (Hypothesis) for a store, as a test class.
- :class:`RecordingNotifier`: a working in-memory Notifier that records what it sent.
- :class:`FakeClock`: a clock the tests move by hand.

Importing this package needs pytest (``pip install imgcompress[test]``).
"""

from __future__ import annotations

from .blob_contract import BlobContract
from .contract import StorageContract
from .fakes import FakeClock, RecordingNotifier, StaticFetcher
from .machine import StoreMachine, store_machine

__all__ = [
    "BlobContract",
    "FakeClock",
    "RecordingNotifier",
    "StaticFetcher",
    "StorageContract",
    "StoreMachine",
    "store_machine",
]
