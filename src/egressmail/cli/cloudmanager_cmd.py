"""The Cloud Manager CLI's commands, verbatim: ``egressmail cloudmanager:set-environment-variables …``."""

from __future__ import annotations

import click


def commands() -> list[click.Command]:
    """The ``cloudmanager:*`` commands and their aliases."""
    return []
