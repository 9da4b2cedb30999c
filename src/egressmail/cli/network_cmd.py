"""`egressmail network`: Advanced networking: kinds, portForwards and nonProxyHosts."""

from __future__ import annotations

import click


@click.group()
def network() -> None:
    """Advanced networking: kinds, portForwards and nonProxyHosts."""
