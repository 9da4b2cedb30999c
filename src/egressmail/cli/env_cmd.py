"""`egressmail env`: Programs, environments, variables and secrets."""

from __future__ import annotations

import click


@click.group()
def env() -> None:
    """Programs, environments, variables and secrets."""
