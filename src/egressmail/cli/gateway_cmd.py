"""`egressmail gateway`: The proxy.tunnel egress gateway."""

from __future__ import annotations

import click


@click.group()
def gateway() -> None:
    """The proxy.tunnel egress gateway."""
