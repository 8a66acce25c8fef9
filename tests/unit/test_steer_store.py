import asyncio

from streams.steer_store import MemorySteerStore
from tests.steer_store_suite import check_steer_store


def test_memory_steer_store_passes_the_steer_store_suite():
    asyncio.run(check_steer_store(MemorySteerStore(), ["alice", "bob", "carol"]))
