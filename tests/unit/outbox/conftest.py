"""Fixtures of the outbox unit tests: a real SQLite outbox file in tmp_path with a hand-moved clock."""

from tests.unit.outbox.helpers import clock, outbox

__all__ = ["clock", "outbox"]
