"""HTTP routes for editorial rules and the per-user knob (docs/rules.md, docs/api.md), and what the API does to
every list it serves: the per-request knob, editorial blocks on read, and the reasons' sentences.

* ``GET    /v1/rules`` (``?active=true`` for those in force) and ``POST /v1/rules`` (one rule, audited);
  ``DELETE /v1/rules/{rule_id}?actor=...&why=...``; ``GET /v1/rules/audit?limit=100`` (newest first).
* ``GET|PUT|DELETE /v1/users/{user_id}/preferences``: ``{"exploration": 0.2, "diversity": 0.5}``.

Token-protected like every route but ``/healthz`` (the API's middleware).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import msgspec
import numpy as np
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from serving.catalog import Catalog
from serving.diversity import NEUTRAL, Preferences, rerank, seed_for
from serving.explain import KIND_EXPLORED, POPULAR, Explanations, with_text
from serving.prefs_store import PreferencesStore, RedisPreferencesStore
from serving.rescore import Ranking, Rescorer, popularity_ranking, to_record
from serving.rules import ActiveRules, Rule, validate_rule
from serving.rules_store import RedisRulesStore, RulesCache, RulesStore
from streams.errors import StoreUnavailable
from streams.records import Recommendations
from streams.settings import RedisSettings
from streams.stores import Store


class RuleIn(BaseModel):
    """The body of ``POST /v1/rules``. Give ``expires_ms`` or ``ttl_s``; ``rule_id`` is generated if absent."""

    action: Literal["pin", "boost", "block"]
    target: Literal["track", "artist"]
    value: str = Field(min_length=1, max_length=128)
    author: str = Field(min_length=1, max_length=64)
    why: str = Field("", max_length=500)
    position: int = Field(0, ge=0, le=500)
    weight: float = 0.0
    expires_ms: int | None = Field(None, gt=0)
    ttl_s: int | None = Field(None, gt=0, le=366 * 86_400)
    rule_id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class PreferencesIn(BaseModel):
    """The body of ``PUT /v1/users/{user_id}/preferences``."""

    exploration: float = Field(0.0, ge=0.0, le=1.0)
    diversity: float = Field(0.0, ge=0.0, le=1.0)


@dataclass
class Editorial:
    """What the routes and ``finish`` need."""

    rules_store: RulesStore
    rules: RulesCache
    preferences: PreferencesStore
    store: Store
    catalog: Catalog
    rescorer: Rescorer
    model_version: str
    provider: str
    clock: Callable[[], int]
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex[:12]

    async def finish(
        self, user_id: str, recs: Recommendations, exploration: float | None, diversity: float | None
    ) -> Recommendations:
        """The list as served: re-ranked with a per-request knob if given, blocked tracks dropped (ranks
        renumbered), reasons with their sentences."""
        now = self.clock()
        try:
            rules = await self.rules.current(now)
            if exploration is not None or diversity is not None:
                recs = await self._with_knob(user_id, now, rules, exploration, diversity)
        except StoreUnavailable as exc:
            raise HTTPException(status_code=503, detail=f"state store unavailable: {exc}") from exc
        index, blocked = self.catalog.index, rules.blocked
        items = [it for it in recs.items if not (it.track_id in index and blocked[index[it.track_id]])]
        items = [msgspec.structs.replace(it, rank=r + 1, reason=with_text(it.reason)) for r, it in enumerate(items)]
        return msgspec.structs.replace(recs, items=items)

    async def _with_knob(
        self, user_id: str, now: int, rules: ActiveRules, exploration: float | None, diversity: float | None
    ) -> Recommendations:
        stored = (await self.preferences.get_many([user_id]))[0] or NEUTRAL
        prefs = Preferences(
            stored.exploration if exploration is None else exploration,
            stored.diversity if diversity is None else diversity,
        )
        (state,) = await self.store.get_states([user_id])
        if state is not None:
            (ranking,) = self.rescorer.rank([state], [now], prefs=[prefs], rules=rules, users=[user_id])
        else:
            ranking = self._popular(prefs, rules, user_id, now)
        return to_record(
            user_id,
            ranking,
            self.catalog.track_ids,
            self.model_version,
            self.provider,
            generated_ms=now,
            session_id=state.session_id if state is not None else "",
        )

    def _popular(self, prefs: Preferences, rules: ActiveRules, user_id: str, now: int) -> Ranking:
        """The popularity ranking under the knob: MMR and exploratory picks over the most popular candidates."""
        n = self.rescorer.n_recs
        if prefs.neutral:
            return popularity_ranking(self.catalog.popularity, n, rules)
        pop = self.catalog.popularity
        cand = np.argsort(-pop, kind="stable")[: self.rescorer.n_candidates]
        scores = np.where(rules.blocked[cand], -np.inf, pop[cand]).astype(np.float32)
        chosen, explored = rerank(
            scores, self.catalog.embeddings[cand], n, prefs, np.random.default_rng(seed_for(user_id, now))
        )
        kinds = np.where(explored, KIND_EXPLORED, 0).astype(np.int8)
        return Ranking(cand[chosen], scores[chosen], True, Explanations.uniform(len(chosen), POPULAR, kinds))


def register_editorial(api: FastAPI, ed: Editorial) -> None:
    """Add the rules and preferences routes to ``api``."""

    async def guarded(call):  # type: ignore[no-untyped-def]
        try:
            return await call
        except StoreUnavailable as exc:
            raise HTTPException(status_code=503, detail=f"Redis unavailable: {exc}") from exc

    def rule_json(rule: Rule) -> dict[str, object]:
        return {**msgspec.to_builtins(rule), "active": rule.active(ed.clock())}

    @api.get("/v1/rules")
    async def list_rules(active: bool = Query(False)) -> JSONResponse:
        rules = await guarded(ed.rules_store.list())
        now = ed.clock()
        shown = [r for r in rules if r.active(now)] if active else rules
        return JSONResponse({"now_ms": now, "rules": [rule_json(r) for r in shown]})

    @api.post("/v1/rules", status_code=201)
    async def add_rule(body: RuleIn) -> JSONResponse:
        now = ed.clock()
        if (body.expires_ms is None) == (body.ttl_s is None):
            raise HTTPException(status_code=422, detail="give exactly one of expires_ms and ttl_s")
        expires = body.expires_ms if body.expires_ms is not None else now + 1000 * int(body.ttl_s or 0)
        rule = Rule(
            rule_id=body.rule_id or ed.new_id(),
            action=body.action,
            target=body.target,
            value=body.value,
            expires_ms=expires,
            created_ms=now,
            author=body.author,
            why=body.why,
            position=body.position,
            weight=body.weight,
        )
        try:
            validate_rule(rule, set(ed.catalog.index), set(ed.catalog.artist_of))
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        await guarded(ed.rules_store.add(rule, actor=body.author))
        return JSONResponse(rule_json(rule), status_code=201)

    @api.delete("/v1/rules/{rule_id}")
    async def remove_rule(
        rule_id: str, actor: str = Query(min_length=1, max_length=64), why: str = Query("", max_length=500)
    ) -> JSONResponse:
        removed = await guarded(ed.rules_store.remove(rule_id, actor=actor, why=why))
        if removed is None:
            raise HTTPException(status_code=404, detail=f"no rule {rule_id!r}: list them with GET /v1/rules")
        return JSONResponse(rule_json(removed))

    @api.get("/v1/rules/audit")
    async def audit(limit: int = Query(100, ge=1, le=10_000)) -> JSONResponse:
        entries = await guarded(ed.rules_store.audit(limit))
        return JSONResponse({"entries": [msgspec.to_builtins(e) for e in entries]})

    @api.get("/v1/users/{user_id}/preferences")
    async def get_preferences(user_id: str) -> JSONResponse:
        (prefs,) = await guarded(ed.preferences.get_many([user_id]))
        if prefs is None:
            raise HTTPException(status_code=404, detail=f"no preferences set for {user_id!r}: (0, 0) applies")
        return JSONResponse({"user_id": user_id, "exploration": prefs.exploration, "diversity": prefs.diversity})

    @api.put("/v1/users/{user_id}/preferences")
    async def put_preferences(user_id: str, body: PreferencesIn) -> JSONResponse:
        prefs = Preferences(body.exploration, body.diversity)
        await guarded(ed.preferences.put(user_id, prefs))
        return JSONResponse({"user_id": user_id, "exploration": prefs.exploration, "diversity": prefs.diversity})

    @api.delete("/v1/users/{user_id}/preferences")
    async def delete_preferences(user_id: str) -> JSONResponse:
        found = await guarded(ed.preferences.delete(user_id))
        return JSONResponse({"user_id": user_id, "deleted": found})


def editorial_from(
    redis: RedisSettings, store: Store, catalog: Catalog, rescorer: Rescorer, provider: str, rules_refresh_s: float
) -> Editorial:
    """The API's ``Editorial`` on Redis."""
    rules_store = RedisRulesStore.connect(redis)
    return Editorial(
        rules_store=rules_store,
        rules=RulesCache(rules_store, catalog.index, catalog.artist_of, rules_refresh_s),
        preferences=RedisPreferencesStore.connect(redis),
        store=store,
        catalog=catalog,
        rescorer=rescorer,
        model_version=catalog.model_version,
        provider=provider,
        clock=lambda: time.time_ns() // 1_000_000,
    )
