"""Run-mode folder selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from egressmail.config import ConfigFileError, RunModeError, load_configurations, select_run_mode_files
from egressmail.config.runmodes import folder_run_modes, parse_run_modes
from tests.conftest import SEED_CONFIG_ROOT

R = Path("/root")


def _files(*folders: str, pid: str = "p") -> list[Path]:
    return [R / folder / f"{pid}.cfg.json" for folder in folders]


@pytest.mark.parametrize(("folders", "modes", "winner"), [
    (("config",), set(), "config"),
    (("config", "config.author"), {"author"}, "config.author"),
    (("config", "config.author"), {"publish"}, "config"),
    (("config", "config.author", "config.author.dev"), {"author", "dev"}, "config.author.dev"),
    (("config.author", "config.author.dev"), {"author"}, "config.author"),
    (("config.dev.author", "config.author"), {"dev", "author", "prod"}, "config.dev.author"),
    (("config.author.dev",), {"author"}, None),
])
def test_most_specific_active_folder_wins(folders: tuple[str, ...], modes: set[str],
                                          winner: str | None) -> None:
    chosen = select_run_mode_files(_files(*folders), modes)
    assert chosen.get("p") == (R / winner / "p.cfg.json" if winner else None)


def test_equally_specific_candidates_name_both_files() -> None:
    with pytest.raises(RunModeError) as info:
        select_run_mode_files(_files("config.author", "config.dev"), {"author", "dev"})
    assert "config.author/p.cfg.json" in str(info.value) and "config.dev/p.cfg.json" in str(info.value)
    with pytest.raises(RunModeError):
        select_run_mode_files(_files("config.author.dev", "config.dev.author"), {"author", "dev"})


def test_preview_folder_and_mode_are_errors() -> None:
    with pytest.raises(RunModeError, match="preview") as info:
        select_run_mode_files(_files("config.preview"), {"publish"})
    assert info.value.hint and "publish" in info.value.hint
    with pytest.raises(RunModeError, match="preview"):
        parse_run_modes("publish,preview")


def test_parse_and_folder_names() -> None:
    assert parse_run_modes(" author , dev,") == {"author", "dev"}
    assert parse_run_modes(None) == frozenset()
    assert folder_run_modes("config.author.dev") == {"author", "dev"}
    assert folder_run_modes("config") == frozenset()
    assert folder_run_modes("install") is None
    assert folder_run_modes("configx") is None


def test_properties_are_not_merged(tmp_path: Path) -> None:
    for folder, body in (("config", '{"a": 1, "b": 2}'), ("config.author", '{"a": 10}')):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "p.cfg.json").write_text(body)
    (tmp_path / "config" / "other.cfg.json").write_text('{"x": true}')
    (tmp_path / "config" / "ignored.txt").write_text("not config")
    configs = load_configurations(tmp_path, "author")
    assert dict(configs["p"].properties) == {"a": 10}
    assert dict(configs["other"].properties) == {"x": True}


def test_seed_root_and_bad_paths(tmp_path: Path) -> None:
    assert list(load_configurations(SEED_CONFIG_ROOT, ["author", "dev"])) == [
        "com.day.cq.mailer.DefaultMailService"]
    with pytest.raises(ConfigFileError, match="no such file"):
        load_configurations(tmp_path / "nope")
    with pytest.raises(ConfigFileError, match="no config"):
        load_configurations(tmp_path)
    with pytest.raises(ConfigFileError, match="run-mode folder, not a config root"):
        load_configurations(SEED_CONFIG_ROOT / "config")
