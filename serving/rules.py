"""Editorial rules: pin, boost and block a track or an artist until an expiry; pure values and their application.

* ``block``  a track or all tracks of an artist: never recommended (removed before the top-n is chosen, so
  the list stays full).
* ``boost``  a track or an artist: ``weight`` is added to the model score of its tracks (score units; a
  negative weight demotes).
* ``pin``    a track at a 1-based ``position``: placed there last, after ranking, the knob and the boosts
  (unless blocked, or the listener heard it in the current session). Pins are for tracks only.

``compile_rules`` turns the active rules into arrays over the catalog (``ActiveRules``) once per refresh;
``Rescorer`` applies them per batch. Rules are stored and audited by ``serving.rules_store`` (format v1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import msgspec
import numpy as np

RULE_VERSION: Final = 1
ACTIONS: Final = ("pin", "boost", "block")
TARGETS: Final = ("track", "artist")
MAX_PINS: Final = 50

Action = Literal["pin", "boost", "block"]
Target = Literal["track", "artist"]


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One editorial rule (format v1). ``expires_ms``: ms since the epoch after which it no longer applies."""

    v: int = RULE_VERSION
    rule_id: str
    action: Action
    target: Target
    value: str  # the track id or artist id
    expires_ms: int
    created_ms: int
    author: str
    why: str = ""
    position: int = 0  # pin: 1-based
    weight: float = 0.0  # boost: added to the score

    def active(self, now_ms: int) -> bool:
        return now_ms < self.expires_ms


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One change to the rules (format v1): ``change`` is "add" or "remove"; who did it, when and why."""

    v: int = RULE_VERSION
    ts_ms: int
    change: Literal["add", "remove"]
    actor: str
    rule: Rule
    why: str = ""


def validate_rule(rule: Rule, known_track: set[str] | None = None, known_artist: set[str] | None = None) -> Rule:
    """Check a rule's fields; ValueError that says what to fix. Catalog ids are checked when sets are given."""
    if rule.v != RULE_VERSION:
        raise ValueError(f"rule format v{rule.v}; this code reads v{RULE_VERSION}")
    if rule.action not in ACTIONS or rule.target not in TARGETS:
        raise ValueError(f"action must be one of {ACTIONS} and target one of {TARGETS}")
    if not rule.value or not rule.rule_id or not rule.author:
        raise ValueError("rule_id, value (the track or artist id) and author must not be empty")
    if rule.expires_ms <= rule.created_ms:
        raise ValueError("expires_ms must be after created_ms: give the rule a future expiry")
    if rule.action == "pin":
        if rule.target != "track":
            raise ValueError("pin is for tracks only: pin one of the artist's tracks, or boost the artist")
        if rule.position < 1:
            raise ValueError("a pin needs a 1-based position >= 1")
    if rule.action == "boost" and not np.isfinite(rule.weight):
        raise ValueError("a boost needs a finite weight")
    if known_track is not None and rule.target == "track" and rule.value not in known_track:
        raise ValueError(f"track {rule.value!r} is not in the catalog")
    if known_artist is not None and rule.target == "artist" and rule.value not in known_artist:
        raise ValueError(f"artist {rule.value!r} is not in the catalog")
    return rule


@dataclass(frozen=True, eq=False)
class ActiveRules:
    """The rules in force, as arrays over the catalog's N tracks.

    ``blocked`` bool [N]; ``boost`` float32 [N] (added to scores); ``pins`` (0-based position, track index)
    sorted by position, at most ``MAX_PINS``; ``valid_until_ms``: the earliest expiry among them (recompile
    after it).
    """

    blocked: np.ndarray
    boost: np.ndarray
    pins: tuple[tuple[int, int], ...]
    valid_until_ms: int
    count: int

    @property
    def empty(self) -> bool:
        return self.count == 0

    @staticmethod
    def none(n_tracks: int) -> ActiveRules:
        return ActiveRules(np.zeros(n_tracks, bool), np.zeros(n_tracks, np.float32), (), np.iinfo(np.int64).max, 0)


def compile_rules(
    rules: Sequence[Rule], track_index: dict[str, int], artist_of: Sequence[str], now_ms: int
) -> ActiveRules:
    """The rules active at ``now_ms`` as ``ActiveRules``; rules naming unknown tracks or artists are ignored."""
    n = len(artist_of)
    live = [r for r in rules if r.active(now_ms)]
    if not live:
        return ActiveRules.none(n)
    artists = np.asarray(artist_of)
    blocked = np.zeros(n, bool)
    boost = np.zeros(n, np.float32)
    pins: dict[int, int] = {}  # track index -> 0-based position; the newest rule for a track wins
    for r in sorted(live, key=lambda r: (r.created_ms, r.rule_id)):
        if r.target == "track":
            i = track_index.get(r.value)
            if i is None:
                continue
            mask: np.ndarray | int = i
        else:
            mask = artists == r.value
        if r.action == "block":
            blocked[mask] = True
        elif r.action == "boost":
            boost[mask] += np.float32(r.weight)
        elif r.action == "pin" and r.target == "track":
            pins[int(mask)] = r.position - 1
    pin_list = sorted(((pos, i) for i, pos in pins.items() if not blocked[i]), key=lambda p: (p[0], p[1]))
    return ActiveRules(blocked, boost, tuple(pin_list[:MAX_PINS]), min(r.expires_ms for r in live), len(live))


def place_pins(
    ranked: list[int], pins: Sequence[tuple[int, int]], n: int, excluded: set[int]
) -> tuple[list[int], set[int]]:
    """Insert pinned track indices at their positions into ``ranked`` (track indices, best first).

    A pinned track already in the list moves to its position; ``excluded`` pins (heard in the session) are
    skipped; two pins for one position keep their order; the list is cut to ``n``. Returns (list, pinned set).
    """
    pinned = [(pos, i) for pos, i in pins if i not in excluded]
    placed = {i for _, i in pinned}
    out = [i for i in ranked if i not in placed]
    for pos, i in pinned:
        out.insert(min(pos, len(out)), i)
    out = out[:n]
    return out, placed & set(out)
