"""``segue-prefs``: read and set a listener's exploration and diversity knob (docs/api.md).

    segue-prefs set USER --exploration 0.2 --diversity 0.5
    segue-prefs get USER [USER ...]
    segue-prefs clear USER

Uses the worker's Redis settings (``SEGUE_REDIS__*``); the worker applies a change from the user's next event.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from serving.diversity import Preferences
from serving.prefs_store import PreferencesStore, RedisPreferencesStore
from streams.errors import StoreUnavailable
from streams.settings import WorkerSettings


async def run(args: argparse.Namespace, store: PreferencesStore) -> int:
    """Carry out one command; print what happened; the exit status."""
    if args.command == "set":
        prefs = Preferences(args.exploration, args.diversity)
        await store.put(args.user, prefs)
        print(f"{args.user}: exploration={prefs.exploration:g} diversity={prefs.diversity:g}")
    elif args.command == "get":
        for user, prefs in zip(args.users, await store.get_many(args.users), strict=True):
            shown = (
                "not set (0, 0 applies)"
                if prefs is None
                else f"exploration={prefs.exploration:g} diversity={prefs.diversity:g}"
            )
            print(f"{user}: {shown}")
    else:
        found = await store.delete(args.user)
        print(f"{args.user}: {'cleared' if found else 'nothing set'}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segue-prefs", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    st = sub.add_parser("set", help="set a user's knob")
    st.add_argument("user")
    st.add_argument("--exploration", type=float, default=0.0, help="share of exploratory picks, 0..1")
    st.add_argument("--diversity", type=float, default=0.0, help="MMR strength, 0..1")
    gt = sub.add_parser("get", help="show users' knobs")
    gt.add_argument("users", nargs="+")
    cl = sub.add_parser("clear", help="back to (0, 0)")
    cl.add_argument("user")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    store = RedisPreferencesStore.connect(WorkerSettings().redis)

    async def go() -> int:
        try:
            return await run(args, store)
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    except (ValueError, StoreUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
