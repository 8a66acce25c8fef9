"""The one test suite every ``RulesStore`` implementation must pass (unit: memory, integration: Redis).

The store under test must use ``clock`` (it returns 1_000, then 1_001, ...) and keep at most 5 audit entries.
"""

from __future__ import annotations

import itertools

from serving.rules import Rule
from serving.rules_store import RulesStore

AUDIT_MAX = 5


def clock_from(start: int = 1_000):
    ticks = itertools.count(start)
    return lambda: next(ticks)


def rule(rule_id: str, created_ms: int = 100, **kw) -> Rule:
    fields = {"action": "block", "target": "artist", "value": "art-1", "expires_ms": 10**13, "author": "ed"}
    return Rule(rule_id=rule_id, created_ms=created_ms, **{**fields, **kw})


async def check_rules_store(store: RulesStore) -> None:
    assert isinstance(store, RulesStore)
    assert await store.list() == []
    assert await store.audit() == []
    block = rule("b1", created_ms=200, why="licence ended")
    pin = rule("p1", created_ms=100, action="pin", target="track", value="trk-1", position=3)
    await store.add(block, actor="alice")
    await store.add(pin, actor="bob")
    assert await store.list() == [pin, block]  # oldest first

    replaced = rule("b1", created_ms=200, action="boost", weight=0.5)
    await store.add(replaced, actor="alice")
    assert await store.list() == [pin, replaced]

    assert await store.remove("b1", actor="carol", why="done") == replaced
    assert await store.remove("b1", actor="carol") is None  # nothing there: nothing audited
    assert await store.list() == [pin]

    log = await store.audit()
    assert [(e.change, e.actor, e.rule.rule_id) for e in log] == [
        ("remove", "carol", "b1"),
        ("add", "alice", "b1"),
        ("add", "bob", "p1"),
        ("add", "alice", "b1"),
    ]
    assert log[0].why == "done" and log[0].rule == replaced and log[3].why == "licence ended"
    assert [e.ts_ms for e in log] == [1_003, 1_002, 1_001, 1_000]
    assert len(await store.audit(limit=2)) == 2 and await store.audit(limit=0) == []

    for i in range(4):
        await store.add(rule(f"x{i}"), actor="dave")
    log = await store.audit(limit=100)
    assert len(log) == AUDIT_MAX and log[0].rule.rule_id == "x3"  # capped, newest kept
