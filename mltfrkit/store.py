"""The result store: every run is looked up on disk before anything is trained.

A run's identity is the hash of its full configuration and of the data's content
(:meth:`mltfrkit.runs.RunSpec.key`), inside a directory per code version
(``<root>/mltfrkit-<version>/``), so a change of ``mltfrkit.__version__`` never mixes results of
different code. The store does not train by itself: it asks :func:`mltfrkit.runs.run_training`,
which checkpoints every epoch, so an interrupted sweep resumes where it stopped and a re-executed
notebook trains nothing.

    >>> store = ResultStore()                       # $MLTFR_RUNS_DIR, else <cache>/runs
    >>> result = store.ensure(RunSpec("ml-100k"))   # trains only if result.json is missing
    >>> store.records()                             # every stored run as a pandas table
"""

from __future__ import annotations

import json
import math
import os
import traceback
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
from tqdm.auto import tqdm

from mltfrkit.data import load_dataset
from mltfrkit.executors import (LOG_FILE, GridDeferred, GridFailed, RunDeferred, RunFailure, RunJob, make_executor,
                                store_id)
from mltfrkit.runs import RunSpec, run_dir_for, run_training, store_root
from mltfrkit.train import TrainConfig, write_result

RESULT = "result.json"
METRICS = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20")


class InvalidResultWarning(UserWarning):
    """A stored result.json is unreadable or lacks what a table needs; it is treated as missing."""


def _result_problem(result) -> str | None:
    """What a result dict lacks for the tables (None: nothing)."""
    if not isinstance(result, dict):
        return f"a JSON {type(result).__name__}, not an object"
    config = result.get("config")
    if not isinstance(config, dict):
        return "no 'config' object"
    missing = [k for k in ("dataset", "backbone", "train") if k not in config]
    if missing:
        return f"its config lacks {missing}"
    if not isinstance(config["train"], dict) or not {"seed", "epochs"} <= set(config["train"]):
        return "its config's 'train' lacks seed / epochs"
    if "test" not in result or not isinstance(result["test"], (dict, type(None))):  # None: authors' holdout
        return "no 'test' metrics object"
    for key in ("best_valid", "test_oracle"):
        if not isinstance(result.get(key), (dict, type(None))):
            return f"'{key}' is not an object"
    return None


def read_result(path: str | os.PathLike) -> dict | None:
    """A stored result.json, or None (with an :class:`InvalidResultWarning` naming the file) when it is
    truncated, not JSON or lacks the config / test metrics: such a run counts as unfinished, so the
    store resumes it from its checkpoint and rewrites the file."""
    path = Path(path)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        problem = _result_problem(result)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        problem = f"unreadable ({type(error).__name__}: {error})"
    if problem:
        warnings.warn(f"{path}: invalid result file, {problem}; treated as missing (the run is resumed from its "
                      f"checkpoint when needed; delete the file to silence this)", InvalidResultWarning, stacklevel=3)
        return None
    return result


def read_json(path: str | os.PathLike) -> dict | None:
    """A cached JSON object (pool evaluations, LLM results), or None when missing; an unreadable one counts
    as missing (it is recomputed and rewritten atomically) with an :class:`InvalidResultWarning` naming it."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        warnings.warn(f"{path}: unreadable ({type(error).__name__}: {error}); recomputed", InvalidResultWarning,
                      stacklevel=2)
        return None
    return value if isinstance(value, dict) else None


def pool_evaluation(run_dir: str | os.PathLike, pool, data_dir: str | os.PathLike | None = None) -> dict:
    """A finished run's metrics on candidate pools (:mod:`mltfrkit.train.pools`), with per-user ranks: its
    stored weights are loaded (nothing is retrained) and the answer is cached in ``<run dir>/pools/<pool
    key>.json``, so every later call reads it. A MixRec run (``backbone = "mixrec"``) is scored by
    :func:`mltfrkit.mixrec.train.mixrec_pool_evaluation`: its full-ranking scores restricted to the pool."""
    from mltfrkit.paths import atomic_write_json
    from mltfrkit.runs import load_trained
    from mltfrkit.train.pools import evaluate_on_pools, make_pools

    run_dir = Path(run_dir)
    result = read_result(run_dir / RESULT)
    if result is None:
        raise FileNotFoundError(f"{run_dir} has no finished result ({RESULT}): train the run first "
                                f"(mltfrkit train ..., or the notebook's train_missing=True)")
    if result["config"].get("backbone") == "mixrec":
        from mltfrkit.mixrec.train import mixrec_pool_evaluation

        return mixrec_pool_evaluation(run_dir, pool, data_dir)
    path = run_dir / "pools" / f"{pool.key(result['config'].get('data_sha256', ''))}.json"
    cached = read_json(path)
    if cached is not None and "ranks" in cached:
        return cached
    _, split, model = load_trained(run_dir, data_dir)
    evaluation = {**evaluate_on_pools(model, make_pools(split, pool)), "run_dir": str(run_dir),
                  "dataset": split.name, "data_sha256": split.source_sha256}
    atomic_write_json(path, evaluation)
    return evaluation


def trains_consensus_round(config: dict) -> bool:
    """Whether an MLTFR run of this configuration (``RunSpec.to_dict``, or a stored result's ``config``) trains a
    round 2 and so has a round 1 for its w/o SC ablation: only with a consensus expert, which needs two experts of
    one width (``MLTFRPlugin.consensus_group``); the widths are in the key's token table references."""
    options = config.get("plugin_options") or {}
    widths = [table.get("d") for table in config.get("token_tables") or []]
    return bool(config.get("plugin") == "mltfr" and options.get("consensus", True)
                and (len(widths) != len(set(widths)) if widths else True))


@dataclass
class GridNeeds:
    """What a grid needs from a store (:meth:`ResultStore.needs`), by grid position (index in ``specs``)."""

    specs: list[RunSpec]
    stored: dict[int, dict] = field(default_factory=dict)  # answered by a stored result
    # w/o SC specs whose full run is stored: recorded from its round 1 (the full run's result)
    from_stored_full: dict[int, dict] = field(default_factory=dict)
    run_dirs: dict[int, Path] = field(default_factory=dict)  # every other position -> the run that answers it
    job_specs: dict[Path, RunSpec] = field(default_factory=dict)  # run dir -> the spec trained there
    to_train: dict[Path, list[int]] = field(default_factory=dict)  # run dir to train -> positions it answers
    derived_later: dict[Path, list[int]] = field(default_factory=dict)  # full run to train -> its w/o SC positions
    # runs to train (keys of to_train) that a plain-patience run trained in the same grid may answer (get replays
    # the stopping rule on it): ensure_many trains them after it, and only if it does not stop alike
    deferred: dict[Path, Path] = field(default_factory=dict)  # deferred run dir -> the run that may answer it


class ResultStore:
    """Results on disk, keyed by configuration + data + code version; trains what is missing."""

    def __init__(self, root: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
                 progress: bool = True, log: Callable[[str], None] | None = print, derive_ablation: bool = True,
                 executor="local"):
        self.root = store_root(root)
        self.data_dir = data_dir
        self.progress = progress
        self.log = log
        self.derive_ablation = derive_ablation
        # Who trains the missing runs of ensure_many: a name (local, processes, ray, auto) or an executor
        # from mltfrkit.executors.make_executor (with its workers / threads / Ray address).
        self.executor = make_executor(executor)
        self.finish_by: float | None = None  # ensure_many's default finish-by time (time.time()); None: no limit
        self._splits: dict[str, object] = {}

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r})"

    # -- lookup ------------------------------------------------------------------------
    def split(self, dataset: str):
        """The prepared dataset (loaded once per store); raises the library's missing-file error."""
        if dataset.lower() not in self._splits:
            self._splits[dataset.lower()] = load_dataset(dataset, self.data_dir)
        return self._splits[dataset.lower()]

    def run_dir(self, spec: RunSpec) -> Path:
        return run_dir_for(spec, self.split(spec.dataset), self.root)

    def get(self, spec: RunSpec) -> dict | None:
        """The stored result, or None if the run has not finished (or never started).

        A run trained with ``test_every_epoch`` answers for the same spec without it: the per-epoch test
        evaluations read the test split without changing training (``tests/test_authors.py`` checks that
        ``test`` is identical), so its result is a superset; nothing is trained twice for it. Its extra
        ``test_oracle`` is ignored by every default table.

        A run trained under plain patience (``patience_relative=0``, the rule before the default changed)
        answers for the same spec under ``patience_relative`` when replaying the new rule on its stored
        validation curves stops every round at the same epoch: training is deterministic given the seed
        and the epoch, so that run is exactly what the new rule would train (``equivalent_stopping`` says
        so in the result). Where every round's best epoch is at most the patience, this always holds."""
        legacy = self._plain_patience(spec)
        candidates = [(spec, False), (self._tracked(spec), False)]
        if legacy is not None:
            candidates += [(legacy, True), (self._tracked(legacy), True)]
        for candidate, replayed in candidates:
            if candidate is None:
                continue
            path = self.run_dir(candidate) / RESULT
            result = read_result(path)
            if result is None:
                continue
            if replayed:
                if not stops_alike(result, spec.train):
                    continue
                result["equivalent_stopping"] = (f"trained with plain patience {spec.train.patience}; "
                                                 f"patience_relative={spec.train.patience_relative:g} stops every "
                                                 f"round at the same epoch")
            result["run_dir"] = str(path.parent)
            return result
        return None

    @staticmethod
    def _tracked(spec: RunSpec) -> RunSpec | None:
        """The same run with the test split evaluated after every epoch (None if it already is)."""
        if spec.train.test_every_epoch:
            return None
        return replace(spec, train=replace(spec.train, test_every_epoch=True))

    @staticmethod
    def _plain_patience(spec: RunSpec) -> RunSpec | None:
        """The same run under plain patience (None if it already is)."""
        if spec.train.patience_relative == 0:
            return None
        return replace(spec, train=replace(spec.train, patience_relative=0.0))

    def has(self, spec: RunSpec) -> bool:
        return self.get(spec) is not None

    # -- training ----------------------------------------------------------------------
    def ensure(self, spec: RunSpec) -> dict:
        """The stored result, training (or resuming) the run first if it is missing."""
        result = self.get(spec)
        if result is not None:
            return result
        result = self._without_consensus_from_full_run(spec)
        if result is not None:
            return result
        return self.train_here(spec)

    def train_here(self, spec: RunSpec) -> dict:
        """Train (or resume) a run in this process, its lock held; its log goes to the store's log and
        to ``<run dir>/train.log`` (where the other executors' workers write theirs too)."""
        self.root.mkdir(parents=True, exist_ok=True)
        run_dir = self.run_dir(spec)
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / LOG_FILE, "a", buffering=1) as handle:
            def log(message: str) -> None:
                handle.write(message + "\n")
                if self.log:
                    self.log(message)

            try:
                return run_training(spec, data_dir=self.data_dir, root=self.root, progress=self.progress,
                                    log=log, split=self.split(spec.dataset))
            except Exception:
                traceback.print_exc(file=handle)
                raise

    def _without_consensus_from_full_run(self, spec: RunSpec) -> dict | None:
        """The w/o SC ablation is, seed for seed, round 1 of the full run: the same initialisation,
        data order and random stream (``tests/test_store.py`` trains both and compares). So when
        the full run is stored, its round 1 is recorded as the ablation instead of training it again;
        ``derived_from`` names the run it came from."""
        full = self._stored_full_run(spec)
        return None if full is None else self._record_without_consensus(spec, full)

    def _stored_full_run(self, spec: RunSpec) -> dict | None:
        """The stored full run whose round 1 a w/o SC spec can be recorded from (None: not such a spec,
        the full run is not stored, or it has no round 1 to record). Reads only."""
        full = self._full_run_of(spec)
        if full is None:
            return None
        result = self.get(full)
        return result if result is not None and "round1" in result else None

    def _record_without_consensus(self, spec: RunSpec, full: dict) -> dict:
        """Write ``full``'s round 1 as the result of the w/o SC ``spec`` (see
        :meth:`_without_consensus_from_full_run`)."""
        split = self.split(spec.dataset)
        result = {**full["round1"], "config": spec.to_dict(split.source_sha256), "rounds": 1,
                  "consensus": "disabled", "stopped_early": full["round1"].get("stopped_early"),
                  "device": full.get("device"), "versions": full.get("versions"),
                  "derived_from": full["run_dir"],
                  **({"imported": full["imported"]} if full.get("imported") else {})}  # no weights here either
        run_dir = self.run_dir(spec)
        write_result(run_dir / RESULT, result)
        if self.log:
            self.log(f"w/o SC = round 1 of {full['run_dir']} (recorded in {run_dir}, nothing trained)")
        result["run_dir"] = str(run_dir)
        return result

    def needs(self, specs: Iterable[RunSpec]) -> GridNeeds:
        """What a grid still needs from this store, computed without writing anything: the rule
        :meth:`ensure_many` trains by and :meth:`plan` counts by, so the two can never disagree.

        Stored runs answer their specs (:meth:`get`: also a per-epoch-test twin or a run that stops
        alike). A w/o SC spec whose full run is stored is recorded from its round 1. Of the rest,
        identical specs are one run; a spec whose per-epoch-test twin is trained too is answered by
        that twin; a w/o SC spec whose full run is trained in the same grid is recorded from it
        afterwards, not trained, unless no two of its experts share a width (no round 1 to record:
        :func:`trains_consensus_round`), when it is trained like any other run. (A full run whose result
        still lacks a round 1 has its ablation trained in a second pass.)"""
        specs = list(specs)
        needs = GridNeeds(specs)
        waiting: list[int] = []
        for index, spec in enumerate(specs):
            result = self.get(spec)
            if result is not None:
                needs.stored[index] = result
                continue
            full = self._stored_full_run(spec)
            if full is not None:
                needs.from_stored_full[index] = full
            else:
                waiting.append(index)
        run_dirs = {index: self.run_dir(specs[index]) for index in waiting}
        waiting_dirs = set(run_dirs.values())
        needs.job_specs = {run_dirs[index]: specs[index] for index in waiting}
        for index in waiting:  # a spec whose per-epoch-test twin is trained too is answered by it (see get)
            twin = self._tracked(specs[index])
            if twin is not None and self.run_dir(twin) in waiting_dirs:
                run_dirs[index] = self.run_dir(twin)
        needs.run_dirs = run_dirs
        for index in waiting:
            needs.to_train.setdefault(run_dirs[index], []).append(index)
        # A waiting spec's own directory -> the run that answers it: how a w/o SC spec finds the run its full
        # run is trained as (the full spec itself, or its per-epoch-test twin, which answers for it as in get).
        answered_by = {self.run_dir(specs[index]): run_dirs[index] for index in waiting}
        for index in waiting:
            # The full run of the spec this position's run trains (its per-epoch-test twin when redirected above):
            # a plain ablation answered by a tracked one needs the tracked full run, which a plain one cannot give.
            full = self._full_run_of(needs.job_specs[run_dirs[index]])
            if full is None or not trains_consensus_round(full.to_dict(self.split(full.dataset).source_sha256)):
                continue
            candidates = [full] + [twin for twin in [self._tracked(full)] if twin is not None]
            full_dir = next((answered_by[d] for d in map(self.run_dir, candidates)
                             if answered_by.get(d) in needs.to_train), None)
            if full_dir is None:
                continue
            # Every position this ablation's run answers (identical specs, its plain twin) is recorded from
            # the full run: none of them is left without an answer.
            group = needs.to_train.pop(run_dirs[index], None)
            if group:
                needs.derived_later.setdefault(full_dir, []).extend(group)
        # A run under the relative patience rule is answered by its plain-patience run when that stops alike (get):
        # with both in the grid, training both at once could waste a whole run, so the former waits for the latter.
        for run_dir in needs.to_train:
            legacy = self._plain_patience(needs.job_specs[run_dir])
            if legacy is None:
                continue
            for candidate in (legacy, self._tracked(legacy)):
                if candidate is not None and self.run_dir(candidate) in needs.to_train:
                    needs.deferred[run_dir] = self.run_dir(candidate)
                    break
        return needs

    def ensure_many(self, specs: Iterable[RunSpec], desc: str = "runs", executor=None,
                    finish_by: float | None = None) -> list[dict]:
        """Results for several specs, in order. Stored runs are read (never sent anywhere); the missing
        ones go to the executor (``executor``, else the store's), with one progress bar over runs.

        Identical specs are trained once. A w/o SC spec whose full run is stored, or is trained in the
        same grid, is recorded from that full run's round 1 instead of being trained (:meth:`needs`
        decides; :meth:`plan` counts the same way without training). When runs fail, the others still
        finish and :class:`~mltfrkit.executors.GridFailed` names each failed run and its log (running
        the grid again retries only those).

        ``finish_by`` (a ``time.time()``; else the store's ``finish_by``, None: no limit): a worker does not
        start a run whose estimate (:mod:`mltfrkit.plan`, the stored runs' measured times) would take it past
        that time, nor any run once it has passed; runs in flight finish. The runs not started raise
        :class:`~mltfrkit.executors.GridDeferred` at the end (after the rest are stored): a budget for a
        session, so that no run is cut off half-trained."""
        finish_by = self.finish_by if finish_by is None else finish_by
        needs = self.needs(specs)
        specs = needs.specs
        executor = self.executor if executor is None else make_executor(executor)
        results: list[dict | None] = [None] * len(specs)
        for index, result in needs.stored.items():
            results[index] = result
        recorded: dict[Path, dict] = {}  # identical w/o SC specs are recorded once
        for index, full in needs.from_stored_full.items():
            run_dir = self.run_dir(specs[index])
            if run_dir not in recorded:
                recorded[run_dir] = self._record_without_consensus(specs[index], full)
            results[index] = recorded[run_dir]
        run_dirs, job_specs = needs.run_dirs, needs.job_specs
        to_train, derived_later = needs.to_train, needs.derived_later
        if self.log and specs:
            later = sum(len(v) for v in derived_later.values())
            self.log(f"{desc}: {len(specs)} runs, {len(specs) - len(run_dirs)} stored, {len(to_train)} to train"
                     f"{f' ({later} w/o SC recorded from their full runs)' if later else ''}"
                     f"{f' ({len(needs.deferred)} after the plain-patience runs that may answer them)' if needs.deferred else ''}"
                     f" with {executor!r} in "
                     f"{self.root}")
        failures: list[RunFailure] = []
        deferred: list[RunDeferred] = []
        budget = self._budget(finish_by)
        # Runs a plain-patience run of this grid may answer wait for the first pass (needs.deferred).
        waiting_for_answer = {run_dir: to_train.pop(run_dir) for run_dir in needs.deferred}
        answerable_later = {run_dir: derived_later.pop(run_dir) for run_dir in list(derived_later)
                            if run_dir in waiting_for_answer}
        while to_train or waiting_for_answer:
            if not to_train:  # the runs that may answer them are done: read what they answer, train the rest
                for run_dir, positions in waiting_for_answer.items():
                    answer = self.get(job_specs[run_dir])
                    if answer is None:
                        to_train[run_dir] = positions
                        if run_dir in answerable_later:
                            derived_later[run_dir] = answerable_later[run_dir]
                        continue
                    for index in positions:
                        results[index] = answer
                    for index in answerable_later.get(run_dir, []):
                        results[index] = self._without_consensus_from_full_run(specs[index])
                        if results[index] is None:
                            to_train.setdefault(run_dirs[index], []).append(index)
                waiting_for_answer = {}
                if not to_train:
                    break
            self.root.mkdir(parents=True, exist_ok=True)
            token = store_id(self.root) if executor.remote else None
            order = list(to_train)
            jobs = [RunJob(job_specs[d], str(self.root), _as_str(self.data_dir), str(d), token, **budget(job_specs[d]))
                    for d in order]
            bar = tqdm(total=len(jobs), desc=desc, unit="run", disable=not self.progress)
            undecided: dict[Path, list[int]] = {}  # w/o SC whose full run had no round 1 to record
            try:
                for position, outcome in executor.run(jobs, self):
                    run_dir = order[position]
                    if isinstance(outcome, RunDeferred):
                        deferred.append(outcome)
                        bar.set_postfix(failed=len(failures), deferred=len(deferred), refresh=False)
                    elif isinstance(outcome, RunFailure):
                        failures.append(outcome)
                        failures += [RunFailure(specs[i], str(run_dirs[i]), "its full run failed")
                                     for i in derived_later.get(run_dir, [])]
                        bar.set_postfix(failed=len(failures), deferred=len(deferred), refresh=False)
                    else:
                        outcome = {**outcome, "run_dir": str(run_dir)}
                        for index in to_train[run_dir]:
                            results[index] = outcome
                        for index in derived_later.get(run_dir, []):
                            results[index] = self._without_consensus_from_full_run(specs[index])
                            if results[index] is None:
                                undecided.setdefault(run_dirs[index], []).append(index)
                    bar.update(1)
            finally:
                bar.close()
            to_train, derived_later = undecided, {}
        if failures:
            error = GridFailed(desc, failures, results, deferred)
            if self.log:
                self.log(str(error))
            raise error
        if deferred:
            error = GridDeferred(desc, deferred, results)
            if self.log:
                self.log(str(error))
            raise error
        return results

    def _budget(self, finish_by: float | None) -> Callable[[RunSpec], dict]:
        """The finish-by fields of each run's job: the time, as this (the driver's) clock shows it, the run's
        cost fields and its estimate from this store's measured runs now (:meth:`_estimates`; a worker
        re-estimates from the cost fields when a run starts, counting the runs finished meanwhile, and takes off
        the training its checkpoints hold then: :func:`mltfrkit.executors.deferral`)."""
        if finish_by is None:
            return lambda spec: {}
        import datetime as _dt

        from mltfrkit.plan import SIZE_SCALED_LEVEL, cost_fields

        text = _dt.datetime.fromtimestamp(finish_by).strftime("%H:%M")
        estimate = self._estimates(with_level=True)

        def fields(spec: RunSpec) -> dict:
            cost = cost_fields(spec.to_dict(self.split(spec.dataset).source_sha256))
            seconds, level = estimate(cost)
            return {"finish_by": finish_by, "finish_by_text": text, "cost": cost, "estimate": seconds,
                    "estimate_bound": level == SIZE_SCALED_LEVEL}

        return fields

    def _estimates(self, with_level: bool = False) -> Callable[[dict], float]:
        """A run's estimated seconds from its cost fields and this store's measured runs (NaN: none alike);
        ``with_level``: (seconds, the :data:`mltfrkit.plan.ESTIMATE_LEVELS` label or other level that matched)."""
        from mltfrkit.plan import Estimator, epoch_units, timed_runs

        # the datasets' sizes for the last level (a backbone alone in its encoding on a dataset): read lazily, and
        # only for datasets the store has runs of or is asked about
        estimator = Estimator(timed_runs(self), sizes=lambda dataset: epoch_units(self.split(dataset)))
        if with_level:
            return lambda cost: estimator.estimate(cost)[:2]
        return lambda cost: estimator.estimate(cost)[0]

    def plan(self, specs: Iterable[RunSpec], workers: int | None = None):
        """What training ``specs`` would take here, training nothing and writing nothing: a
        :class:`mltfrkit.plan.GridPlan` with one row per run to train (counted by :meth:`needs`, exactly
        as :meth:`ensure_many` would train them), each with an estimate from this store's measured run
        times, and the totals, including the wall time with ``workers`` workers (None: as many as this
        store's executor runs at once). The stored times were measured under whatever concurrency those
        runs had (ours: two one-thread runs side by side on 2 cores), so the estimate holds for that setup."""
        from mltfrkit.plan import plan_grid

        return plan_grid(self, specs, workers)

    def _full_run_of(self, spec: RunSpec) -> RunSpec | None:
        """The full MLTFR run a w/o SC spec can be recorded from, or None if it is not such a spec."""
        if not self.derive_ablation or spec.plugin != "mltfr" or spec.mltfr_config().consensus:
            return None
        return replace(spec, plugin_options={**spec.plugin_options, "consensus": True})

    def epoch_capped(self, specs: Iterable[RunSpec]) -> tuple[set[str], set[str]]:
        """(run directories of ``specs`` stored, those of them at their epoch cap: :func:`at_epoch_cap`, by each
        spec's own stopping rule). A w/o SC
        run not stored but recordable from its stored full run counts as stored, judged by that run's round 1.
        Reads results only; trains nothing."""
        stored, capped = set(), set()
        for spec in specs:
            result = self._stored_or_recordable(spec)
            if result is not None:
                run_dir = str(self.run_dir(spec))
                stored.add(run_dir)
                if at_epoch_cap(result, spec.train):
                    capped.add(run_dir)
        return stored, capped

    def stalled(self, specs: Iterable[RunSpec]) -> set[str]:
        """Run directories of the stored ``specs`` that stalled (:func:`stalled_runs`: stopped early with a best
        selection metric under :data:`STALL_FRACTION` of the best other stored seed's of the same configuration
        among ``specs``). A w/o SC run not stored but recordable from its full run is judged by that run's round 1, as
        in :meth:`epoch_capped`. Reads results only; trains nothing."""
        members = {}
        for spec in specs:
            result = self._stored_or_recordable(spec)
            if result is not None:
                sibling_key = str(self.run_dir(replace(spec, train=replace(spec.train, seed=0))))
                members[str(self.run_dir(spec))] = (sibling_key, result, spec.train)
        return stalled_runs(members)

    def _stored_or_recordable(self, spec: RunSpec) -> dict | None:
        """The stored result of ``spec``, or for a w/o SC spec not stored, its stored full run's round 1."""
        result = self.get(spec)
        if result is None:
            full = self._full_run_of(spec)
            full_result = self.get(full) if full is not None else None
            result = full_result.get("round1") if isinstance(full_result, dict) else None
        return result if isinstance(result, dict) else None

    # -- tables ------------------------------------------------------------------------
    def result_files(self) -> list[Path]:
        return sorted(self.root.glob(f"*/{RESULT}")) if self.root.exists() else []

    def records(self, results: Iterable[dict] | None = None) -> pd.DataFrame:
        """One row per run (every stored run, or the given results): identity, options, metrics."""
        if results is None:
            results = []
            for path in self.result_files():
                result = read_result(path)  # an invalid file is skipped with a warning naming it
                if result is not None:
                    result["run_dir"] = str(path.parent)
                    results.append(result)
        rows = [flatten(result) for result in results]
        return pd.DataFrame(rows)


def at_epoch_cap(result: dict, train: TrainConfig | None = None) -> bool:
    """Whether a stored run ran to its epoch cap in a round it trained (round 1 or 2 of a two-round run, else the
    run) without early stopping: the model may still have been improving, so a comparison of such runs is one at
    that epoch budget (the paper's 100 at the paper profile), not at convergence.

    With ``train`` (the spec the result answers), each round is judged by that spec's stopping rule replayed on
    the stored curve: a round is at the cap if it trained ``train.epochs`` epochs and the rule would not have
    stopped it at the last one. That matters when the result is a twin run stored under another rule (a plain
    patience twin answering a relative-patience spec, :func:`stops_alike`): its own ``stopped_early`` flag
    answers for its rule, not the spec's. Without ``train``, or for a round whose curve lacks the selection
    metric, the stored flag decides."""
    rounds = [result[name] for name in ("round1", "round2") if isinstance(result.get(name), dict)] or [result]
    return any(_round_at_cap(part, train) for part in rounds)


# A run "stalled" when early stopping ended it far below what its other seeds reached: it stopped early (not
# at its epoch cap, :func:`at_epoch_cap`) with a best selection metric under this fraction of the best other
# seed's. ml-100k BERT4Rec at the paper profile shows why: a seed can sit on a validation plateau until patience
# runs out while the same configuration's other seeds train past it (ml-100k-bert4rec-te-0e2730ab8c81ea8b and
# ml-100k-bert4rec-mltfr-c910bf0ba6ced219, both seed 0, against their seeds 1 and 2).
STALL_FRACTION = 0.5


def best_selection(result: dict, metric: str) -> float | None:
    """The best value of the selection ``metric`` over every round a stored run trained (validation, or the
    test curve under the authors' holdout); None when a round lacks the curve or holds a non-finite value."""
    rounds = [result[name] for name in ("round1", "round2") if isinstance(result.get(name), dict)] or [result]
    values = []
    for summary in rounds:
        curve = _selection_curve(summary, metric)
        if curve is None or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in curve):
            return None
        values.extend(curve)
    return max(values)


def stalled_runs(members: dict) -> set[str]:
    """Which runs stalled, of ``members``: run name -> (sibling key, result, TrainConfig), where runs with one
    sibling key are one configuration's seeds. A run stalled when it stopped early (by its own stopping rule,
    :func:`at_epoch_cap`) with a best selection metric (:func:`best_selection`) under :data:`STALL_FRACTION`
    of the best other seed's: so two stalled seeds of three are both found. A run with no other seed stored,
    or without a finite curve, is never judged. The rule flags a run; it changes no figure (a stalled seed is
    what the protocol produced, and tables keep it)."""
    best = {name: best_selection(result, train.valid_metric) for name, (_, result, train) in members.items()}
    out = set()
    for name, (key, result, train) in members.items():
        others = [best[other] for other, (other_key, _, _) in members.items()
                  if other != name and other_key == key and best[other] is not None]
        if best[name] is None or not others or at_epoch_cap(result, train):
            continue
        if best[name] < STALL_FRACTION * max(others):
            out.add(name)
    return out


def _round_at_cap(summary: dict, train: TrainConfig | None) -> bool:
    curve = _selection_curve(summary, train.valid_metric) if train is not None else None
    if curve is None:
        return summary.get("stopped_early") is False
    return len(curve) >= train.epochs and not _replayed_stops(curve, train)[-1]


def _selection_curve(summary: dict, metric: str) -> list[float] | None:
    """A round's stored curve of ``metric`` as the trainer selected by it (validation, or the test curve under
    the authors' holdout); None if the round has no epochs or an epoch lacks the metric."""
    values = [(entry.get("valid") or entry.get("test") or {}).get(metric) for entry in summary.get("epochs") or []]
    return values if values and None not in values else None


def _replayed_stops(curve: list[float], train: TrainConfig) -> list[bool]:
    """``train.should_stop`` after each epoch of ``curve``, the best epoch tracked as the trainer does (a strictly
    better value improves)."""
    stops, best, best_epoch = [], float("-inf"), 0
    for epoch, value in enumerate(curve, start=1):
        if value > best:
            best, best_epoch = value, epoch
        stops.append(train.should_stop(epoch, best_epoch))
    return stops


def stops_alike(result: dict, train: TrainConfig) -> bool:
    """Whether ``train``'s stopping rule, replayed on the stored curves of ``result`` (every round), stops
    each round after exactly the epochs it trained: never earlier, and at its end unless the round ran
    to ``train.epochs``. The curve is what the trainer selects by: validation, or the test curve under
    the authors' holdout."""
    rounds = [result[name] for name in ("round1", "round2") if name in result] or [result]
    for summary in rounds:
        curve = _selection_curve(summary, train.valid_metric)
        if curve is None:
            return False
        stops = _replayed_stops(curve, train)
        if any(stops[:-1]):
            return False  # the rule would have stopped this round earlier
        if not stops[-1] and len(curve) < train.epochs:
            return False  # the rule would have trained this round on
    return True


def _as_str(path) -> str | None:
    return None if path is None else str(path)


def flatten(result: dict) -> dict:
    """A result JSON as one table row."""
    config = result["config"]
    options = config.get("plugin_options", {})
    row = {"dataset": config["dataset"], "backbone": config["backbone"], "plugin": config.get("plugin", "none"),
           "seed": config["train"]["seed"], "epochs": config["train"]["epochs"],
           "llms": _as_text(options.get("llms")) if config.get("plugin") == "mltfr" else options.get("llm"),
           "n_experts": options.get("n_experts"), "top_k": options.get("top_k"),
           "noise": options.get("noise"), "consensus": options.get("consensus"),
           "rounds": result.get("rounds"), "selected_round": result.get("selected_round"),
           "best_epoch": result.get("best_epoch"), "holdout": config["train"].get("holdout", "valid_test"),
           "seconds": result.get("seconds"), "data_sha256": config.get("data_sha256"),
           "imported": bool(result.get("imported")),  # from a result archive: metrics only, no weights
           "run_dir": result.get("run_dir")}
    oracle = result.get("test_oracle") or {}
    for metric in METRICS:
        # `test` is validation-selected; None under the authors' holdout (no validation split to select with).
        row[metric] = (result.get("test") or {}).get(metric)
        row[f"valid {metric}"] = (result.get("best_valid") or {}).get(metric)
        # Test-selected (the authors' protocol, optimistic): never read by a default table.
        row[f"oracle {metric}"] = (oracle.get("metrics") or {}).get(metric)
    row["oracle epoch"] = oracle.get("epoch")
    return row


def _as_text(value) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else ",".join(value)
