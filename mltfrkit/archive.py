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
import re
import shutil
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


class WeightsNotArchived(FileNotFoundError):
    """A run imported from a result archive was asked for its model, which the archive never holds."""


@dataclass
class ArchiveReport:
    """What an export or import did: run directory names per outcome, and why each was left out."""
    copied: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)  # same result, new cached tables (pools, relevance, MRR)
    already_there: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # still training (or interrupted): nothing to carry yet
    left_out: dict[str, str] = field(default_factory=dict)  # not runs of this kind: why they stay behind
    refused: dict[str, str] = field(default_factory=dict)  # runs that would be read wrongly: why

    def summary(self, verb: str) -> str:
        text = f"{verb} {len(self.copied)} run(s); {len(self.already_there)} already there"
        if self.updated:
            text += f"; {len(self.updated)} with new cached tables"
        if self.unfinished:
            text += f"; {len(self.unfinished)} unfinished (not carried)"
        for label, reasons in (("left out", self.left_out), ("refused", self.refused)):
            if reasons:
                text += f"; {len(reasons)} {label}: " + "; ".join(f"{k}: {v}" for k, v in reasons.items())
        return text


def config_key(config: dict) -> str:
    """The store key of a stored config, computed exactly as :meth:`RunSpec.key` computes it. A two-round
    run's result carries the ``round`` its final model came from in its config (the trainer adds it to each
    round's config); the directory's key is the run's, without it (as :func:`mltfrkit.runs.load_trained` reads)."""
    payload = json.dumps({k: v for k, v in config.items() if k != "round"}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _read(path: Path) -> dict | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_result(path)


def _has_weights(run_dir: Path) -> bool:
    return any(p.name.endswith(WEIGHT_SUFFIXES) for p in run_dir.rglob("*") if p.is_file())


def _problem(run_dir: Path) -> str | None:
    """Why ``run_dir``'s result cannot be archived or imported (None: it can)."""
    result = _read(run_dir / RESULT)
    if result is None:
        return "its result.json is unreadable or lacks its config / test metrics"
    key = config_key(result["config"])
    if not run_dir.name.endswith("-" + key):
        return (f"its config hashes to key {key}, not to its directory's name: the config was edited or the "
                f"directory renamed, so no grid would ever look it up")
    return None


def _carried(path: Path) -> bool:
    """A small finished file: not weights, a lock, a hidden or temporary file, or a partial answer."""
    name = path.name
    return (path.is_file() and not name.endswith(WEIGHT_SUFFIXES) and not name.endswith(SKIPPED_NAMES)
            and not name.startswith(".") and ".tmp" not in name and not name.endswith(".partial.json"))


def _small_files(run_dir: Path):
    """The files of a run worth carrying: everything but weights and locks, result.json last."""
    files = [p for p in sorted(run_dir.rglob("*")) if p.name != RESULT and _carried(p)]
    return files + [run_dir / RESULT]


def _sync(source: Path, target: Path, names) -> bool:
    """Copy each of ``names`` (paths under ``source``) that ``target`` lacks or holds differently."""
    changed = False
    for path in names:
        destination = target / path.relative_to(source)
        if not destination.exists() or destination.read_bytes() != path.read_bytes():
            _copy(path, destination)
            changed = True
    return changed


def _copy(source: Path, target: Path) -> None:
    with open(source, "rb") as handle:
        data = handle.read()
    atomic_write_with(target, lambda out: out.write(data))


SHARED_CACHES = ("pools", "benchmarks")  # store-level folders: cached LLM answers (Table 4), the overhead benchmark
RUN_NAME = re.compile(r"^.+-[0-9a-f]{16}$")  # <dataset>-<backbone>-<plugin>-<key>, as mltfrkit.runs.run_dir_for names it


def _sort(store_root: Path, report: ArchiveReport) -> list[Path]:
    """The store's run directories with a result to carry; the others are sorted into the report."""
    runs = []
    for path in sorted(p for p in store_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if path.name in SHARED_CACHES:
            continue
        if (path / "search.json").exists():
            report.left_out[path.name] = ("a MixRec search log: it names its trials' run directories on this machine; "
                                          "its trials are archived as runs, re-run the search to rebuild it")
        elif (path / RESULT).exists():
            runs.append(path)
        elif RUN_NAME.match(path.name):
            report.unfinished.append(path.name)
        else:
            report.left_out[path.name] = "not a run directory of this store"
    return runs


def _sync_shared(source_root: Path, target_root: Path, overwrite: bool) -> None:
    for folder in SHARED_CACHES:
        for path in sorted((source_root / folder).rglob("*")) if (source_root / folder).is_dir() else []:
            destination = target_root / folder / path.relative_to(source_root / folder)
            if _carried(path) and (overwrite or not destination.exists()):
                if not destination.exists() or destination.read_bytes() != path.read_bytes():
                    _copy(path, destination)


def export_results(store_root: str | os.PathLike, destination: str | os.PathLike) -> ArchiveReport:
    """Copy every finished run of ``store_root`` (a code version's store, ``<runs>/mltfrkit-<version>``)
    into ``destination/<its name>/``, weights left out, with the store's cached LLM answers (``pools/``)
    and overhead benchmark (``benchmarks/``).

    A run already archived with the same result gets the cached tables computed since (pool evaluations,
    relevance, MixRec's MRR). A run the archive holds from another training (another machine, or trained
    again here: the same run, other timings) keeps the archive's copy, with the caches computed from its
    weights, and is reported under ``refused``. Runs imported from an archive are not exported again."""
    store_root, destination = Path(store_root), Path(destination) / Path(store_root).name
    report = ArchiveReport()
    for run_dir in _sort(store_root, report):
        problem = _problem(run_dir)
        if problem:
            report.refused[run_dir.name] = problem
            continue
        if is_imported(_read(run_dir / RESULT)):
            report.already_there.append(run_dir.name)
            continue
        target = destination / run_dir.name
        if (target / RESULT).exists() and (target / RESULT).read_bytes() == (run_dir / RESULT).read_bytes():
            (report.updated if _sync(run_dir, target, _small_files(run_dir)[:-1]) else report.already_there).append(
                run_dir.name)
            continue
        if _read(target / RESULT) is not None:
            report.refused[run_dir.name] = ("the archive holds another training of this run (kept, with its cached "
                                            "tables); delete its folder in the archive to replace it with this one")
            continue
        if target.exists():  # a broken archived copy: replaced whole
            shutil.rmtree(target)
        _sync(run_dir, target, _small_files(run_dir))  # result.json last
        report.copied.append(run_dir.name)
    _sync_shared(store_root, destination, overwrite=True)
    return report


def import_results(archive: str | os.PathLike, store_root: str | os.PathLike) -> ArchiveReport:
    """Put the archived runs of ``store_root``'s code version into that store.

    ``archive`` is the folder :func:`export_results` wrote to (holding ``mltfrkit-<version>/``), or that
    version folder itself. A run the store trained itself is left alone (the store's own result wins); a
    run imported before gets the archive's cached tables added since. A run that does not hash to its name,
    or has no valid result, is refused with an :class:`ArchiveWarning` naming it, as is one this store is
    training right now (its lock is held) or holds an unfinished training of (checkpoints): the others still
    import. The imported result records where it came from and that its weights stayed behind; a w/o SC
    result recorded from a full run points at that run in this store."""
    from filelock import Timeout

    from mltfrkit.locks import holder, run_lock_for

    archive, store_root = Path(archive), Path(store_root)
    source = archive if archive.name == store_root.name else archive / store_root.name
    if not source.is_dir():
        others = sorted(p.name for p in archive.glob("mltfrkit-*") if p.is_dir()) if archive.is_dir() else []
        hint = (f"it holds {', '.join(others)}: results of another code version, which this version's grids "
                f"never look up" if others else "export a store there first (mltfrkit store export)")
        raise FileNotFoundError(f"{archive}: no {store_root.name}/ folder of archived runs; {hint}")
    report = ArchiveReport()
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    def refuse(name: str, problem: str) -> None:
        report.refused[name] = problem
        warnings.warn(f"{source / name}: not imported, {problem}", ArchiveWarning, stacklevel=3)

    for run_dir in _sort(source, report):
        problem = _problem(run_dir)
        if problem:
            refuse(run_dir.name, problem)
            continue
        target = store_root / run_dir.name
        local = _read(target / RESULT)
        if local is not None:
            if is_imported(local) and _sync(run_dir, target, _small_files(run_dir)[:-1]):
                report.updated.append(run_dir.name)
            else:
                report.already_there.append(run_dir.name)
            continue
        lock = run_lock_for(target)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            refuse(run_dir.name, f"this store is training it right now ({holder(target)}); import again when it "
                                 f"has finished (or let it finish: it trains the same run)")
            continue
        try:
            if _has_weights(target):
                refuse(run_dir.name, "this store holds an unfinished training of the same run (its checkpoints): "
                                     "its weights would be read as the archived result's; let its sweep finish "
                                     "it, or delete the directory and import again")
                continue
            _sync(run_dir, target, _small_files(run_dir)[:-1])
            result = json.loads((run_dir / RESULT).read_text(encoding="utf-8"))
            result.pop("run_dir", None)
            if result.get("derived_from"):
                result["derived_from"] = str(store_root / Path(result["derived_from"]).name)
            result[IMPORTED] = {"from": str(run_dir), "at": stamp, "weights": False}
            write_result(target / RESULT, result)  # last: the run counts as stored once all its files are in
            report.copied.append(run_dir.name)
        finally:
            lock.release()
    _sync_shared(source, store_root, overwrite=False)  # cached answers are keyed by what they answer
    return report


def is_imported(result: dict | None) -> bool:
    """Whether a stored result came from a result archive, without its weights."""
    return bool(result and result.get(IMPORTED) and not result[IMPORTED].get("weights", False))


def refuse_if_imported(run_dir: str | os.PathLike) -> None:
    """Raise :class:`WeightsNotArchived` for a run imported without weights (whatever files lie beside it):
    what every loader of a run's model calls first."""
    result = _read(Path(run_dir) / RESULT)
    if is_imported(result):
        raise WeightsNotArchived(
            f"{run_dir} was imported from a result archive ({result[IMPORTED].get('from')}) without its weights: "
            f"its metrics answer the tables, but its model cannot be loaded; to train it here, delete the "
            f"directory and run its sweep (or `mltfrkit train`) again: the same seed trains the same run")

