"""The producer SDK and ``segue-send`` against the real broker."""

from __future__ import annotations

import io
import json
import time

import pytest

from streams.errors import BrokerUnavailable, InvalidEvent
from streams.records import Play, decode_event
from streams.sdk import EventProducer
from streams.send import main as send_main
from tests.integration.helpers import read_topic


def test_sdk_validates_before_sending_and_keys_by_user(embedded_stack, unique_topics):
    now = time.time_ns() // 1_000_000
    with EventProducer.connect(embedded_stack.kafka, topic=unique_topics.events) as producer:
        sent = [producer.play(f"user-{u}", "trk-00001", played_ms=1000, ts_ms=now) for u in range(8)]
        sent.append(producer.like("user-3", "trk-00002"))
        with pytest.raises(InvalidEvent) as info:
            producer.skip("user-1", "trk-00003", played_ms=-1)
        assert info.value.reason == "invalid_field"
        with pytest.raises(InvalidEvent):
            producer.send({"type": "play", "user_id": "u"})
        producer.flush()
    messages = read_topic(embedded_stack.kafka.bootstrap_servers, unique_topics.events, 4, expected=len(sent))
    assert sorted(decode_event(m.value).event_id for m in messages) == sorted(e.event_id for e in sent)
    partition_of = {}
    for m in messages:
        assert m.key.decode() == decode_event(m.value).user_id
        assert partition_of.setdefault(m.key, m.partition) == m.partition
    assert isinstance(sent[0], Play)


def test_send_command_reports_bad_lines(embedded_stack, unique_topics, tmp_path, capsys):
    now = time.time_ns() // 1_000_000
    lines = [
        json.dumps({"type": "like", "event_id": f"l{i}", "user_id": "u", "track_id": "t", "ts_ms": now})
        for i in range(5)
    ]
    lines.insert(2, "{broken")
    lines.insert(4, json.dumps({"type": "like", "event_id": "x", "user_id": "u", "ts_ms": now}))
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n\n")
    rc = send_main(
        [str(path), "--bootstrap", embedded_stack.kafka.bootstrap_servers, "--topic", unique_topics.events, "--quiet"]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert "line 3: malformed_json" in err and "line 5: missing_field" in err
    assert "sent 5 events" in err
    assert len(read_topic(embedded_stack.kafka.bootstrap_servers, unique_topics.events, 4, expected=5)) == 5


def test_unreachable_broker_is_a_clear_error():
    from infra.ports import free_port

    with pytest.raises(BrokerUnavailable, match="no Kafka broker answered"):
        EventProducer.connect(f"127.0.0.1:{free_port()}", connect_timeout_s=1.0)


def test_send_from_stdin(embedded_stack, unique_topics, monkeypatch):
    now = time.time_ns() // 1_000_000
    line = json.dumps({"type": "like", "event_id": "s1", "user_id": "u", "track_id": "t", "ts_ms": now})
    monkeypatch.setattr("sys.stdin", io.StringIO(line + "\n"))
    rc = send_main(
        ["-", "--bootstrap", embedded_stack.kafka.bootstrap_servers, "--topic", unique_topics.events, "--quiet"]
    )
    assert rc == 0
