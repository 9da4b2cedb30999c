"""``egressmail demo``: the seed's scenario end to end on this machine (see ``scenario.py``)."""

from egressmail.demo.errors import DemoError
from egressmail.demo.scenario import (
    CommandRun,
    DemoOptions,
    DemoResult,
    StepReport,
    run_demo,
    subprocess_runner,
)
from egressmail.demo.seed import PACKAGED_SEED, Seed, load_seed

__all__ = [
    "PACKAGED_SEED",
    "CommandRun",
    "DemoError",
    "DemoOptions",
    "DemoResult",
    "Seed",
    "StepReport",
    "load_seed",
    "run_demo",
    "subprocess_runner",
]
