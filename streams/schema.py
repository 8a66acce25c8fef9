"""The JSON Schema of event contract v1, generated from ``streams.records``.

    python -m streams.schema > docs/schema/events-v1.schema.json

A test fails if the committed file and the records disagree.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from streams.records import Event

SCHEMA_ID = "https://segue.dev/schema/events-v1.schema.json"


def event_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) for one v1 event."""
    schema = msgspec.json.schema(Event)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "segue event v1",
        "description": "One listener event (play, skip or like), sent as JSON to the events topic keyed by user_id.",
        **schema,
    }


def render() -> str:
    return json.dumps(event_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
