"""`egressmail demo`: Run the seed's scenario end to end on this machine."""

from __future__ import annotations

import click

from egressmail.errors import EgressMailError


@click.command()
def demo() -> None:
    """Run the seed's scenario end to end on this machine."""
    raise EgressMailError("`egressmail demo` is not available yet in this version")
