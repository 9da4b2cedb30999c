"""Fixtures of the mail integration tests: the fake provider (tests/servers/fake_smtpd.py)."""

from __future__ import annotations

import pytest

from tests.servers.fake_smtpd import register_marker, smtp_ca, smtpd

__all__ = ["smtp_ca", "smtpd"]


def pytest_configure(config: pytest.Config) -> None:
    register_marker(config)
