"""Which run-mode folder's file wins for each PID.

A config root (``.../osgiconfig``) holds folders ``config``, ``config.<mode>`` and
``config.<mode1>.<mode2>...``. For each PID the candidates are the folders whose modes are all
active; the one with the most modes wins, and its file is used whole (properties are never merged
across folders). Two candidates with as many modes are ambiguous: an error names both files.
``preview`` is not a run mode of its own: the preview service takes the publish values, so a
``config.preview`` folder (or ``preview`` among the active modes) is an error saying so.

:func:`select_run_mode_files` is pure (it works on a list of paths); :func:`load_configurations`
reads the disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from egressmail.config.cfgjson import SUFFIX, ConfigFile, pid_of, read_cfg_json
from egressmail.config.errors import ConfigFileError, RunModeError

__all__ = ["folder_run_modes", "load_configurations", "parse_run_modes", "select_run_mode_files"]

_FOLDER = re.compile(r"config((?:\.[^.]+)*)")
_PREVIEW_HINT = ("the preview service takes the publish values: put the file in config.publish "
                 "(and select it with --run-modes publish)")


def parse_run_modes(text: str | Iterable[str] | None) -> frozenset[str]:
    """``"author,dev"`` (or several such strings) -> ``{"author", "dev"}``.

    Raises:
        RunModeError: ``preview`` among them.
    """
    if text is None:
        return frozenset()
    items = [text] if isinstance(text, str) else list(text)
    modes = frozenset(m.strip() for item in items for m in item.split(",") if m.strip())
    if "preview" in modes:
        raise RunModeError("'preview' is not a run mode of its own", hint=_PREVIEW_HINT)
    return modes


def folder_run_modes(folder_name: str) -> frozenset[str] | None:
    """The run modes of a folder name (``config.author.dev`` -> ``{author, dev}``), or ``None``
    when the name is not a config folder."""
    match = _FOLDER.fullmatch(folder_name)
    if match is None:
        return None
    return frozenset(m for m in match.group(1).split(".") if m)


def select_run_mode_files(files: Iterable[Path], run_modes: Iterable[str]) -> dict[str, Path]:
    """Choose, for every PID, the file of the most specific folder whose modes are all active.

    Args:
        files: ``.cfg.json`` paths, each directly inside a ``config[.<mode>...]`` folder.
        run_modes: the active run modes.

    Returns:
        PID -> chosen file, sorted by PID.

    Raises:
        RunModeError: a ``preview`` folder, or two equally specific candidates for one PID.
    """
    active = frozenset(run_modes)
    best: dict[str, tuple[int, Path]] = {}
    ties: dict[str, Path] = {}
    for path in sorted(files):
        modes = folder_run_modes(path.parent.name)
        if modes is None:
            continue
        if "preview" in modes:
            raise RunModeError(f"{path.parent}: there is no preview run-mode folder", hint=_PREVIEW_HINT)
        if not modes <= active:
            continue
        pid = pid_of(path)
        rank = len(modes)
        current = best.get(pid)
        if current is None or rank > current[0]:
            best[pid] = (rank, path)
            ties.pop(pid, None)
        elif rank == current[0]:
            ties[pid] = path
    for pid, other in ties.items():
        raise RunModeError(
            f"two equally specific files configure {pid}: {best[pid][1]} and {other}",
            hint="keep one, or make one folder more specific (config.author.dev beats config.dev)")
    return {pid: best[pid][1] for pid in sorted(best)}


def _config_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder_run_modes(folder.name) is None:
            continue
        files.extend(sorted(f for f in folder.iterdir() if f.name.endswith(SUFFIX) and f.is_file()))
    return files


def load_configurations(root_or_file: Path | str, run_modes: Sequence[str] | str | None = None
                        ) -> dict[str, ConfigFile]:
    """Read the configurations that apply: PID -> :class:`ConfigFile`.

    A single ``.cfg.json`` file is read as it is (no run-mode selection); a directory is a config
    root whose ``config*`` folders are chosen by ``run_modes``.

    Raises:
        ConfigFileError: the path does not exist, is not a config root, or a file is bad.
        RunModeError: see :func:`select_run_mode_files`.
    """
    path = Path(root_or_file)
    modes = parse_run_modes(run_modes)
    if path.is_file():
        config = read_cfg_json(path)
        return {config.pid: config}
    if not path.is_dir():
        raise ConfigFileError("no such file or directory", file=path)
    if folder_run_modes(path.name) is not None and not any(
            folder_run_modes(p.name) is not None for p in path.iterdir() if p.is_dir()):
        raise ConfigFileError(
            "this is a run-mode folder, not a config root", file=path,
            hint=f"pass its parent ({path.parent}) so that run modes can choose the folder")
    files = _config_files(path)
    if not files:
        raise ConfigFileError("no config or config.<runmode> folder with .cfg.json files here", file=path,
                              hint="pass the osgiconfig folder (holding config/, config.author/, ...) "
                                   "or one .cfg.json file")
    chosen = select_run_mode_files(files, modes)
    return {pid: read_cfg_json(file) for pid, file in chosen.items()}
