"""The demo's one error: which step failed, and why."""

from __future__ import annotations

from typing import Any

from egressmail.errors import EgressMailError


class DemoError(EgressMailError):
    """A step of ``egressmail demo`` failed; ``step`` names it (``seed``, ``secrets``, ``gateway``, …)."""

    def __init__(self, step: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"demo step {step!r} failed: {message}", hint=hint)
        self.step = step
        self.reason = message
        self.result: Any = None  # the DemoResult so far, attached by run_demo
