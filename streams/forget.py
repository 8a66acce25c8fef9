"""``segue-forget USER [USER ...]``: remove everything segue stores about listeners (state, recommendations,
prompt steer, exploration/diversity preferences).

Uses the worker's Redis settings (``SEGUE_REDIS__*``). Events already on Kafka topics age out with the
topics' retention; this command removes the derived per-user data.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from serving.prefs_store import RedisPreferencesStore
from streams.errors import StoreUnavailable
from streams.settings import WorkerSettings
from streams.steer_store import RedisSteerStore, SteerStore
from streams.stores import RedisStore


async def forget(
    store: RedisStore,
    users: Sequence[str],
    steers: SteerStore | None = None,
    prefs: RedisPreferencesStore | None = None,
) -> dict[str, bool]:
    """Forget each user (state, recommendations, prompt steer, preferences); True where something was stored."""
    out = {}
    for u in users:
        found = await store.forget_user(u)
        if steers is not None:
            found = await steers.delete_steer(u) or found
        if prefs is not None:
            found = await prefs.delete(u) or found
        out[u] = found
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segue-forget", description=__doc__.split("\n\n")[0])
    parser.add_argument("users", nargs="+", help="user ids")
    args = parser.parse_args(argv)
    settings = WorkerSettings().redis
    store = RedisStore.connect(settings)
    steers = RedisSteerStore.connect(settings)
    prefs = RedisPreferencesStore.connect(settings)

    async def run() -> dict[str, bool]:
        try:
            return await forget(store, args.users, steers, prefs)
        finally:
            await store.close()
            await steers.close()
            await prefs.close()

    try:
        result = asyncio.run(run())
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for user, found in result.items():
        print(f"{user}: {'forgotten' if found else 'nothing stored'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
