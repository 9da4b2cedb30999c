"""`egressmail outbox`: The durable outbox of messages waiting for delivery."""

from __future__ import annotations

import click


@click.group()
def outbox() -> None:
    """The durable outbox of messages waiting for delivery."""
