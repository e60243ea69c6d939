"""A result archive: a store's finished runs without their weights, to carry results between machines.

A paper-profile grid takes many hours on a laptop CPU (the Pantry ladder: about 8 h with two workers), more
than one machine may keep its store. :func:`export_results` copies every finished run's small files
(``result.json``, ``train.log``, cached relevance tables and pool evaluations) into a folder that can be
committed or shared; :func:`import_results` puts them into another store, where the tables and notebooks
read them as if trained there, and the grid commands train only what is still missing.

Weights (``*.pt``: checkpoints, best weights, the Fisher estimate) are never archived. So an imported run
answers every table, but a tool that needs its model (the inspector, ``diagnose``, ``evaluate``, a new
relevance measure) says it was imported and how to train it here. Each archived result must hash to its
directory's name (the store's key, :meth:`mltfrkit.runs.RunSpec.key`): a result whose config was edited,
or that lies under another run's name, is refused with a message naming it, and the rest still import.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from mltfrkit.paths import atomic_write_with
from mltfrkit.store import RESULT, read_result
from mltfrkit.train import write_result

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
SKIPPED_NAMES = (".lock",)
IMPORTED = "imported"  # the key an imported result carries: where from, when, and that it has no weights


class ArchiveWarning(UserWarning):
    """An archived run that was not imported (its result is invalid, or does not hash to its name)."""


@dataclass
class ArchiveReport:
    """What an export or import did: run directory names per outcome, and why each refusal happened."""
    copied: list[str] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    def summary(self, verb: str) -> str:
        text = f"{verb} {len(self.copied)} run(s); {len(self.already_there)} already there"
        if self.refused:
            text += f"; {len(self.refused)} refused: " + "; ".join(f"{k}: {v}" for k, v in self.refused.items())
        return text


def config_key(config: dict) -> str:
    """The store key of a stored config, computed exactly as :meth:`RunSpec.key` computes it."""
    payload = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _problem(run_dir: Path) -> str | None:
    """Why ``run_dir`` cannot be archived or imported (None: it can)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = read_result(run_dir / RESULT)
    if result is None:
        return "no valid result.json (an unfinished or broken run)"
    key = config_key(result["config"])
    if not run_dir.name.endswith("-" + key):
        return (f"its config hashes to key {key}, not to its directory's name: the config was edited or the "
                f"directory renamed, so no grid would ever look it up")
    return None


def _small_files(run_dir: Path):
    """The files of a run worth carrying: everything but weights and locks, result.json last."""
    files = [p for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != RESULT
             and not p.name.endswith(WEIGHT_SUFFIXES) and not p.name.endswith(SKIPPED_NAMES)
             and not p.name.startswith(".")]
    return files + [run_dir / RESULT]


def _copy(source: Path, target: Path) -> None:
    with open(source, "rb") as handle:
        data = handle.read()
    atomic_write_with(target, lambda out: out.write(data))


def _run_dirs(root: Path) -> list[Path]:
    """Every run directory, finished or not (an unfinished one is reported, never copied)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def export_results(store_root: str | os.PathLike, destination: str | os.PathLike) -> ArchiveReport:
    """Copy every finished run of ``store_root`` (a code version's store, ``<runs>/mltfrkit-<version>``)
    into ``destination/<its name>/``, weights left out. A run already in the archive is rewritten only
    when its result differs; unfinished runs are refused and named."""
    store_root, destination = Path(store_root), Path(destination) / Path(store_root).name
    report = ArchiveReport()
    for run_dir in _run_dirs(store_root):
        problem = _problem(run_dir)
        if problem:
            report.refused[run_dir.name] = problem
            continue
        target = destination / run_dir.name
        if (target / RESULT).exists() and (target / RESULT).read_bytes() == (run_dir / RESULT).read_bytes():
            report.already_there.append(run_dir.name)
            continue
        for path in _small_files(run_dir):
            _copy(path, target / path.relative_to(run_dir))
        report.copied.append(run_dir.name)
    return report


def import_results(archive: str | os.PathLike, store_root: str | os.PathLike) -> ArchiveReport:
    """Put the archived runs of ``store_root``'s code version into that store.

    ``archive`` is the folder :func:`export_results` wrote to (holding ``mltfrkit-<version>/``), or that
    version folder itself. A run the store already has is left alone (the store's own result wins); a run
    that does not hash to its name, or has no valid result, is refused with an :class:`ArchiveWarning`
    naming it, and the others still import. The imported result records where it came from and that its
    weights stayed behind; a w/o SC result recorded from a full run points at that run in this store."""
    archive, store_root = Path(archive), Path(store_root)
    source = archive if archive.name == store_root.name else archive / store_root.name
    if not source.is_dir():
        others = sorted(p.name for p in archive.glob("mltfrkit-*") if p.is_dir()) if archive.is_dir() else []
        hint = (f"it holds {', '.join(others)}: results of another code version, which this version's grids "
                f"never look up" if others else "export a store there first (mltfrkit store export)")
        raise FileNotFoundError(f"{archive}: no {store_root.name}/ folder of archived runs; {hint}")
    report = ArchiveReport()
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for run_dir in _run_dirs(source):
        problem = _problem(run_dir)
        if problem:
            report.refused[run_dir.name] = problem
            warnings.warn(f"{run_dir}: not imported, {problem}", ArchiveWarning, stacklevel=2)
            continue
        target = store_root / run_dir.name
        if (target / RESULT).exists():
            report.already_there.append(run_dir.name)
            continue
        for path in _small_files(run_dir)[:-1]:
            destination = target / path.relative_to(run_dir)
            if not destination.exists():
                _copy(path, destination)
        result = json.loads((run_dir / RESULT).read_text(encoding="utf-8"))
        result.pop("run_dir", None)
        if result.get("derived_from"):
            result["derived_from"] = str(store_root / Path(result["derived_from"]).name)
        result[IMPORTED] = {"from": str(run_dir), "at": stamp, "weights": False}
        write_result(target / RESULT, result)  # last: the run counts as stored only once all its files are in
        report.copied.append(run_dir.name)
    return report


def imported_without_weights(run_dir: str | os.PathLike) -> str | None:
    """The message a weight-needing tool gives for an imported run (None: the run was trained here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = read_result(Path(run_dir) / RESULT)
    if not result or not result.get(IMPORTED):
        return None
    return (f"{run_dir} was imported from a result archive ({result[IMPORTED].get('from')}) without its weights: "
            f"its metrics answer every table, but its model cannot be loaded; to train it here, delete the "
            f"directory and run its grid or `mltfrkit train` again (the same seed gives the same run)")

