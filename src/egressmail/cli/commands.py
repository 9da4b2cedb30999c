"""The list of top-level commands; each lives in its own module."""

from __future__ import annotations

import click


def all_commands() -> list[click.Command]:
    """Every top-level command and group, in the order ``--help`` shows them."""
    from egressmail.cli import (
        cloudmanager_cmd,
        config_cmd,
        demo_cmd,
        doctor_cmd,
        env_cmd,
        gateway_cmd,
        network_cmd,
        outbox_cmd,
        send_cmd,
    )

    return [
        config_cmd.config,
        env_cmd.env,
        network_cmd.network,
        gateway_cmd.gateway,
        send_cmd.send,
        outbox_cmd.outbox,
        doctor_cmd.doctor,
        demo_cmd.demo,
        *cloudmanager_cmd.commands(),
    ]
