"""Fixtures of the outbox integration tests: an outbox file with a hand-moved clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from egressmail.mail.outbox import Outbox
from tests.unit.outbox.helpers import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def outbox(tmp_path: Path, clock: Clock) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.db", clock=clock) as box:
        yield box
