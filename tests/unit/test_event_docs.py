"""The documented contract, the JSON Schema file and the records agree."""

import json
import re
from pathlib import Path

import jsonschema

from streams.records import decode_event
from streams.schema import render

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schema_matches_the_records():
    committed = (ROOT / "docs/schema/events-v1.schema.json").read_text()
    assert committed == render(), "regenerate it: python -m streams.schema > docs/schema/events-v1.schema.json"


def test_every_documented_example_is_valid_for_schema_and_worker():
    text = (ROOT / "docs/events.md").read_text()
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]
    assert len(examples) == 3
    validator = jsonschema.Draft202012Validator(json.loads((ROOT / "docs/schema/events-v1.schema.json").read_text()))
    for example in examples:
        validator.validate(example)
        assert decode_event(json.dumps(example).encode()).event_id == example["event_id"]


def test_schema_rejects_what_the_worker_rejects():
    validator = jsonschema.Draft202012Validator(json.loads(render()))
    bad = [
        {"type": "pause", "event_id": "e", "user_id": "u", "track_id": "t", "ts_ms": 1763900000000},
        {"type": "play", "event_id": "e", "user_id": "u", "track_id": "t", "ts_ms": 1763900000000},
        {"type": "like", "event_id": "e", "user_id": "", "track_id": "t", "ts_ms": 1763900000000},
        {"type": "like", "event_id": "e", "user_id": "u\n", "track_id": "t", "ts_ms": 1763900000000},
        {"type": "skip", "event_id": "e", "user_id": "u", "track_id": "t", "ts_ms": 5, "played_ms": 1},
    ]
    for event in bad:
        assert not validator.is_valid(event), event
