"""The crash proof at CI scale (``EGRESSMAIL_PROOF_SCALE``: ci by default, or full, or N,K,O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .crash import run_proof, scale_from_env


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_message_is_lost_and_only_unknown_ones_are_duplicated(tmp_path: Path):
    messages, kills, outages = scale_from_env()
    result = run_proof(messages, kills, outages, tmp_path, deadline_s=240)
    print(result.summary())
    assert not result.missing, f"lost: {result.missing[:10]} (logs in {tmp_path})"
    assert not result.unexplained_duplicates, (
        f"duplicated without an unknown attempt: {result.unexplained_duplicates[:10]}")
    assert result.counts == {"sent": messages}, result.counts
