"""Which topics segue creates, and the partition check against existing topics."""

from __future__ import annotations

import pytest

from streams.errors import ConfigError
from streams.settings import TopicSettings
from streams.topics import TopicSpec, check_partitions, dead_letter_partitions, topic_specs


@pytest.mark.parametrize(("partitions", "expected"), [(1, 1), (3, 3), (4, 4), (8, 4), (64, 4)])
def test_dead_letters_get_few_partitions(partitions: int, expected: int) -> None:
    assert dead_letter_partitions(partitions) == expected


def test_topic_specs_follow_the_settings() -> None:
    topics = TopicSettings(events="a.ev", recommendations="a.rec", dead_letters="a.dlq", partitions=8)
    assert topic_specs(topics) == [TopicSpec("a.ev", 8), TopicSpec("a.rec", 8), TopicSpec("a.dlq", 4)]


def test_existing_topics_with_enough_partitions_pass() -> None:
    wanted = [TopicSpec("a", 4), TopicSpec("b", 4)]
    check_partitions(wanted, {"a": 4, "b": 6})
    check_partitions(wanted, {})


def test_existing_topic_with_too_few_partitions_names_topic_and_fix() -> None:
    with pytest.raises(ConfigError, match=r"a has 2 partitions, 4 configured.*SEGUE_TOPICS__PARTITIONS"):
        check_partitions([TopicSpec("a", 4), TopicSpec("b", 4)], {"a": 2, "b": 4})
