"""HTTP routes for steering by prompt (docs/steering.md, docs/api.md).

* ``POST   /v1/users/{user_id}/steer`` ``{"prompt": "upbeat workout", "strength": 1.0, "ttl_s": 3600}``: reads the
  prompt, stores the steer (it expires after ``ttl_s``), re-ranks the user and answers how the prompt was read
  (matched descriptors with their similarity, the target feature direction) and when the steer expires.
* ``DELETE /v1/users/{user_id}/steer``: removes the steer and re-ranks the user.

The text model is loaded on the first steer request (about a second), not at start-up.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from serving.steering import FeatureMap, PromptReader, make_steer
from streams.errors import InvalidSteer, ModelError, StoreUnavailable
from streams.records import Id, Recommendations
from streams.steer_store import SteerStore


class SteerRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of ``POST /v1/users/{user_id}/steer``; ``ttl_s`` None: the API's default."""

    prompt: str
    strength: float = 1.0
    ttl_s: int | None = None


@dataclass
class Steering:
    """What the steering routes need. ``load_reader`` builds the prompt reader (loads the text model)."""

    load_reader: Callable[[], PromptReader]
    fmap: FeatureMap
    store: SteerStore
    model_version: str
    default_ttl_s: int
    clock: Callable[[], int]
    _reader: PromptReader | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reader(self) -> PromptReader:
        with self._lock:
            if self._reader is None:
                self._reader = self.load_reader()
            return self._reader


def register_steering(
    api: FastAPI, steering: Steering, rerank: Callable[[str], Awaitable[Recommendations | None]]
) -> None:
    """Add the steering routes to ``api``; ``rerank(user)`` refreshes a user's recommendations."""
    user_id_check = msgspec.json.Decoder(Id)

    def check_user(user_id: str) -> None:
        try:
            user_id_check.decode(msgspec.json.encode(user_id))
        except msgspec.ValidationError as exc:
            raise HTTPException(status_code=422, detail=f"invalid user id: {exc}") from exc

    @api.post("/v1/users/{user_id}/steer")
    async def steer(user_id: str, request: Request) -> JSONResponse:
        check_user(user_id)
        try:
            body = msgspec.json.decode(await request.body(), type=SteerRequest)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:  # the last: not UTF-8
            raise HTTPException(
                status_code=400,
                detail=f'body must be {{"prompt": str, "strength": float, "ttl_s": int}}: {exc}',
            ) from exc
        try:
            reader = await asyncio.to_thread(steering.reader)
            reading = await asyncio.to_thread(reader.read, body.prompt)
            ttl = body.ttl_s if body.ttl_s is not None else steering.default_ttl_s
            now = steering.clock()
            record = make_steer(reading, steering.fmap, body.strength, now, ttl, steering.model_version)
            await steering.store.put_steer(user_id, record, now)
            await rerank(user_id)
        except InvalidSteer as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        except ModelError as exc:
            raise HTTPException(status_code=503, detail=f"steering is unavailable: {exc}") from exc
        except StoreUnavailable as exc:
            raise HTTPException(status_code=503, detail=f"state store unavailable: {exc}") from exc
        return JSONResponse(
            {
                "user_id": user_id,
                **reading.as_dict(),
                "strength": record.strength,
                "ttl_s": ttl,
                "expires_ms": record.expires_ms,
                "model_version": record.model_version,
            }
        )

    @api.delete("/v1/users/{user_id}/steer")
    async def unsteer(user_id: str) -> JSONResponse:
        check_user(user_id)
        try:
            removed = await steering.store.delete_steer(user_id)
            if removed:
                await rerank(user_id)
        except StoreUnavailable as exc:
            raise HTTPException(status_code=503, detail=f"state store unavailable: {exc}") from exc
        return JSONResponse({"user_id": user_id, "removed": removed}, status_code=200 if removed else 404)
