"""`egressmail send`: Send one message through the configured mail service."""

from __future__ import annotations

import click

from egressmail.errors import EgressMailError


@click.command()
def send() -> None:
    """Send one message through the configured mail service."""
    raise EgressMailError("`egressmail send` is not available yet in this version")
