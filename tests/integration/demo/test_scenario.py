"""The demo's scenario in-process (the default runner: real `python -m egressmail` subprocesses)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from egressmail.demo import DemoError, DemoOptions, StepReport, load_seed, run_demo
from egressmail.demo.seed import mask_command
from tests.conftest import EXAMPLES

SECRET = "password123"


def _host() -> str:
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def _everything_shown(step: StepReport) -> str:
    parts = [step.key, step.title, *step.lines, *(c.line + c.output for c in step.commands),
             *(" ".join(row) for row in step.table), *(label + text for label, text in step.blocks)]
    return "\n".join(parts)


async def test_scenario_with_real_subprocesses(tmp_path: Path) -> None:
    seen: list[StepReport] = []
    result = await run_demo(DemoOptions(seed=EXAMPLES, proxy_host=_host(), keep_home=tmp_path / "home"),
                            on_step=seen.append)
    assert [s.key for s in seen][-1] == "stop" and result.failed_step is None
    assert result.message is not None and result.message.tls and result.message.authenticated
    shown = "\n".join(_everything_shown(s) for s in seen) + repr(result) + str(result.to_dict())
    assert SECRET not in shown
    assert result.home == tmp_path / "home" and (tmp_path / "home").is_dir()


async def test_a_failing_command_names_its_step(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    shutil.copytree(EXAMPLES, seed)
    # a valid line for the seed parser, refused by the command itself (a reserved AEM_ name)
    (seed / "set-secrets.sh").write_text(
        "egressmail cloudmanager:set-environment-variables --programId=1001 2002 --strict "
        f"--secret AEM_SECRET x --secret EMAIL_PASSWORD {SECRET}\n")
    with pytest.raises(DemoError) as info:
        await run_demo(DemoOptions(seed=seed, proxy_host=_host()))
    assert info.value.step == "secrets"
    assert "exited with" in info.value.message and SECRET not in info.value.message
    assert info.value.result.failed_step == "secrets"
    assert info.value.result.home is not None and not info.value.result.home.exists()


def test_seed_reading_and_masking() -> None:
    seed = load_seed(EXAMPLES)
    assert (seed.program, seed.environment) == ("1001", "2002")
    assert set(seed.secrets) == {"EMAIL_USERNAME", "EMAIL_PASSWORD"}
    assert SECRET not in repr(seed) and SECRET not in seed.display_command()
    assert mask_command(["egressmail", "a b", "s3"], ["s3"]) == "egressmail 'a b' ****"


@pytest.mark.parametrize("text, expected", [
    ("egressmail cloudmanager:list-environment-variables --programId=1001 2002\n", "not cloudmanager:set"),
    ("egressmail cloudmanager:set-environment-variables 2002 --secret A b\n", "--programId=PROGRAM"),
    ("egressmail cloudmanager:set-environment-variables --programId=1 2 --secret A\n", "MALFORMED"),
    ("egressmail 'unclosed\n", "cannot read the command line"),
])
def test_bad_seed_lines_are_explained(tmp_path: Path, text: str, expected: str) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "seed")
    (tmp_path / "seed" / "set-secrets.sh").write_text(text)
    with pytest.raises(DemoError) as info:
        load_seed(tmp_path / "seed")
    assert info.value.step == "seed" and expected in info.value.message
