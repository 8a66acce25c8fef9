import asyncio

from streams.stores import MemoryStore, Store
from tests.store_suite import check_compare_and_set, check_offer, check_store


def test_memory_store_passes_the_store_suite():
    store = MemoryStore()
    assert isinstance(store, Store)
    asyncio.run(check_store(store, ["alice", "bob", "carol"]))


def test_memory_store_compare_and_set():
    asyncio.run(check_compare_and_set(MemoryStore(), "dave"))


def test_memory_store_offer():
    asyncio.run(check_offer(MemoryStore(), "erin"))
