"""``segue-rules``: add, list, remove and audit editorial rules (docs/rules.md).

    segue-rules add --action block --target artist --value art-0042 --ttl 7d --author ana --why "licence"
    segue-rules add --action pin --target track --value trk-00012 --position 1 --ttl 2h --author ana
    segue-rules add --action boost --target artist --value art-0007 --weight 0.5 --ttl 1d --author ana
    segue-rules list [--active] [--json]
    segue-rules remove RULE_ID --actor ana [--why "campaign over"]
    segue-rules prune --actor ana          # remove the expired rules (each removal audited)
    segue-rules audit [--limit 20]

Uses the worker's Redis settings (``SEGUE_REDIS__*``); ids are checked against the model bundle's catalog
(``SEGUE_SCORING__MODEL_DIR``) when it is there. The worker picks a change up within
``SEGUE_SCORING__RULES_REFRESH_S`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import sys
import time
import uuid
from collections.abc import Sequence

import msgspec

from serving.rules import Rule, validate_rule
from serving.rules_store import RedisRulesStore, RulesStore
from streams.errors import ModelError, StoreUnavailable
from streams.settings import WorkerSettings

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_ttl(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d`` -> seconds; ValueError otherwise."""
    m = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"ttl must look like 90s, 15m, 2h or 7d, got {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def _fmt_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(rule: Rule, now_ms: int) -> str:
    """One line per rule for the terminal."""
    detail = {"pin": f" at {rule.position}", "boost": f" {rule.weight:+g}", "block": ""}[rule.action]
    state = "active" if rule.active(now_ms) else "expired"
    return (
        f"{rule.rule_id}  {rule.action}{detail} {rule.target} {rule.value}  until {_fmt_ms(rule.expires_ms)} "
        f"({state})  by {rule.author}" + (f": {rule.why}" if rule.why else "")
    )


def _catalog_ids(settings: WorkerSettings) -> tuple[set[str], set[str]] | None:
    try:
        from serving.catalog import Catalog

        catalog = Catalog.load(settings.scoring.model_dir)
    except ModelError:
        return None
    return set(catalog.index), set(catalog.artist_of)


async def run(args: argparse.Namespace, store: RulesStore, now_ms: int, known: tuple[set[str], set[str]] | None) -> int:
    """Carry out one command against ``store``; print what happened; the exit status."""
    if args.command == "add":
        expires = now_ms + 1000 * parse_ttl(args.ttl)
        rule = Rule(
            rule_id=args.id or uuid.uuid4().hex[:12],
            action=args.action,
            target=args.target,
            value=args.value,
            expires_ms=expires,
            created_ms=now_ms,
            author=args.author,
            why=args.why,
            position=args.position,
            weight=args.weight,
        )
        validate_rule(rule, *(known or (None, None)))
        await store.add(rule, actor=args.author)
        print(f"added {describe(rule, now_ms)}")
    elif args.command == "list":
        rules = [r for r in await store.list() if r.active(now_ms) or not args.active]
        for r in rules:
            print(msgspec.json.encode(r).decode() if args.json else describe(r, now_ms))
        if not rules and not args.json:
            print("no rules")
    elif args.command == "remove":
        removed = await store.remove(args.rule_id, actor=args.actor, why=args.why)
        if removed is None:
            print(f"error: no rule {args.rule_id!r} (see segue-rules list)", file=sys.stderr)
            return 1
        print(f"removed {describe(removed, now_ms)}")
    elif args.command == "prune":
        expired = [r for r in await store.list() if not r.active(now_ms)]
        for r in expired:
            await store.remove(r.rule_id, actor=args.actor, why="expired")
        print(f"pruned {len(expired)} expired rules")
    elif args.command == "audit":
        for e in await store.audit(args.limit):
            why = f": {e.why}" if e.why else ""
            print(f"{_fmt_ms(e.ts_ms)}  {e.change:<6} by {e.actor}  {describe(e.rule, now_ms)}{why}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segue-rules", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add (or replace, with --id) a rule")
    add.add_argument("--action", choices=["pin", "boost", "block"], required=True)
    add.add_argument("--target", choices=["track", "artist"], required=True)
    add.add_argument("--value", required=True, help="the track id or artist id")
    add.add_argument("--ttl", required=True, help="how long it lasts: 90s, 15m, 2h, 7d")
    add.add_argument("--author", required=True)
    add.add_argument("--why", default="")
    add.add_argument("--position", type=int, default=0, help="pin: 1-based position")
    add.add_argument("--weight", type=float, default=0.0, help="boost: added to the model score")
    add.add_argument("--id", default=None, help="rule id (default: generated)")
    ls = sub.add_parser("list", help="list the rules")
    ls.add_argument("--active", action="store_true", help="only those in force now")
    ls.add_argument("--json", action="store_true", help="one JSON rule (format v1) per line")
    rm = sub.add_parser("remove", help="remove a rule")
    rm.add_argument("rule_id")
    rm.add_argument("--actor", required=True)
    rm.add_argument("--why", default="")
    pr = sub.add_parser("prune", help="remove the expired rules")
    pr.add_argument("--actor", required=True)
    au = sub.add_parser("audit", help="the newest changes first")
    au.add_argument("--limit", type=int, default=20)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = WorkerSettings()
    known = _catalog_ids(settings) if args.command == "add" else None
    store = RedisRulesStore.connect(settings.redis)

    async def go() -> int:
        try:
            return await run(args, store, time.time_ns() // 1_000_000, known)
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    except (ValueError, StoreUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
