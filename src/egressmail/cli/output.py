"""Printing helpers shared by the commands: one stdout console, one stderr console."""

from __future__ import annotations

from rich.console import Console

# Plain output when not on a terminal keeps pipes and tests free of escape codes.
stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """Print a warning line on stderr."""
    stderr.print(f"[yellow]warning:[/] {message}", markup=True)
