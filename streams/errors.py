"""The one exception tree of segue.

``SegueError`` is the root. Caller errors (bad data, bad configuration) are kept apart from
retryable ones (a store or broker that is unreachable for now), so callers can decide what to do
with a single ``except`` clause.
"""

from __future__ import annotations


class SegueError(Exception):
    """Root of every error segue raises on purpose."""


class ConfigError(SegueError):
    """A setting is missing or inconsistent; the message says which and how to fix it."""


class InvalidEvent(SegueError):
    """An event failed validation; ``reason`` is a stable machine-readable code for dead letters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class InvalidSteer(SegueError):
    """A steering request (prompt, strength, expiry) or a stored steer is unusable; the message says why."""


class InvalidImport(SegueError):
    """A listening-history export file is not one this code reads; the message says which file and why."""


class ModelError(SegueError):
    """A model bundle is missing, unreadable or has a signature this code cannot serve."""


class StateFormatError(SegueError):
    """A stored session state or recommendation list could not be decoded (corrupt, or a newer format)."""


class UnknownUser(SegueError):
    """No state is known for the requested user."""


class RetryableError(SegueError):
    """A transient failure of an external service; the operation may succeed if retried."""


class StoreUnavailable(RetryableError):
    """Redis (or another state store) could not be reached or timed out."""


class BrokerUnavailable(RetryableError):
    """The Kafka-protocol broker could not be reached or timed out."""


class StackError(SegueError):
    """The embedded local stack could not start a service; the message says which and why."""
