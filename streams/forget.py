"""``segue-forget USER [USER ...]``: remove everything segue stores about listeners (state, recommendations).

Uses the worker's Redis settings (``SEGUE_REDIS__*``). Events already on Kafka topics age out with the
topics' retention; this command removes the derived per-user data.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from streams.errors import StoreUnavailable
from streams.settings import WorkerSettings
from streams.stores import RedisStore


async def forget(store: RedisStore, users: Sequence[str]) -> dict[str, bool]:
    """Forget each user; True where something was stored."""
    return {u: await store.forget_user(u) for u in users}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segue-forget", description=__doc__.split("\n\n")[0])
    parser.add_argument("users", nargs="+", help="user ids")
    args = parser.parse_args(argv)
    store = RedisStore.connect(WorkerSettings().redis)

    async def run() -> dict[str, bool]:
        try:
            return await forget(store, args.users)
        finally:
            await store.close()

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
