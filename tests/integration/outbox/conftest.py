"""Fixtures of the outbox integration tests: an outbox file with a hand-moved clock."""

from tests.unit.outbox.helpers import clock, outbox

__all__ = ["clock", "outbox"]
