import argparse
import asyncio

import pytest

from serving import prefs_cli, rules_cli
from serving.diversity import Preferences
from serving.prefs_store import MemoryPreferencesStore
from serving.rules_store import MemoryRulesStore

NOW = 1_763_900_000_000


def _rules(argv, store, known=None):
    args = rules_cli.parser().parse_args(argv)
    return asyncio.run(rules_cli.run(args, store, NOW, known))


def test_segue_rules_add_list_remove_prune_and_audit(capsys):
    store = MemoryRulesStore(clock=lambda: NOW)
    known = ({"trk-1"}, {"art-1"})
    add = ["add", "--action", "block", "--target", "artist", "--value", "art-1", "--ttl", "2h", "--author", "ana"]
    assert _rules([*add, "--id", "b1", "--why", "licence"], store, known) == 0
    pin = ["add", "--action", "pin", "--target", "track", "--value", "trk-1", "--position", "2", "--author", "ana"]
    assert _rules([*pin, "--ttl", "1s", "--id", "p1"], store, known) == 0
    rules = asyncio.run(store.list())
    assert [(r.rule_id, r.expires_ms - NOW) for r in rules] == [("b1", 7_200_000), ("p1", 1_000)]
    with pytest.raises(ValueError, match="not in the catalog"):
        _rules([*add, "--value", "art-9"], store, known)
    with pytest.raises(ValueError, match="tracks only"):
        _rules(["add", "--action", "pin", "--target", "artist", "--value", "art-1", "--position", "1",
                "--ttl", "1h", "--author", "ana"], store, known)  # fmt: skip
    capsys.readouterr()

    assert _rules(["list"], store) == 0
    out = capsys.readouterr().out
    assert "b1  block artist art-1" in out and "(active)" in out and "by ana: licence" in out
    assert _rules(["remove", "nope", "--actor", "bo"], store) == 1
    assert _rules(["remove", "b1", "--actor", "bo", "--why", "done"], store) == 0
    args = rules_cli.parser().parse_args(["prune", "--actor", "bo"])
    assert asyncio.run(rules_cli.run(args, store, NOW + 5_000, None)) == 0  # p1 has expired by then
    assert "pruned 1 expired rules" in capsys.readouterr().out
    assert asyncio.run(store.list()) == []
    assert _rules(["audit", "--limit", "10"], store) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[1] for line in lines] == ["remove", "remove", "add", "add"]
    assert "by bo" in lines[0] and ": expired" in lines[0] and ": done" in lines[1]


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604_800)])
def test_ttl_units(text, seconds):
    assert rules_cli.parse_ttl(text) == seconds


@pytest.mark.parametrize("bad", ["", "0", "-5m", "2w", "h"])
def test_bad_ttl_says_what_it_wants(bad):
    with pytest.raises(ValueError, match="90s, 15m, 2h or 7d"):
        rules_cli.parse_ttl(bad)


def test_segue_prefs_set_get_clear(capsys):
    store = MemoryPreferencesStore()

    def run(*argv):
        return asyncio.run(prefs_cli.run(prefs_cli.parser().parse_args(list(argv)), store))

    assert run("set", "ann", "--exploration", "0.2", "--diversity", "0.5") == 0
    assert asyncio.run(store.get_many(["ann"])) == [Preferences(0.2, 0.5)]
    assert run("get", "ann", "bob") == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "ann: exploration=0.2 diversity=0.5",
        "bob: not set (0, 0 applies)",
    ]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        run("set", "ann", "--exploration", "3")
    assert run("clear", "ann") == 0 and "cleared" in capsys.readouterr().out
    assert isinstance(prefs_cli.parser().parse_args(["clear", "x"]), argparse.Namespace)
