"""What a grid still needs, and how long it will take here, before anything is trained.

:meth:`mltfrkit.store.ResultStore.plan` (``Experiment.plan``, ``mltfrkit sweep NAME ... --plan``) counts
the runs of a grid exactly as :meth:`~mltfrkit.store.ResultStore.ensure_many` would train them (both
read :meth:`~mltfrkit.store.ResultStore.needs`): stored runs, w/o SC runs recorded from their full run's
round 1, and the run directories left to train, some of which resume from a checkpoint.

Each run to train gets an estimate: the median measured ``seconds`` of the stored runs in the same store
that are most like it, found by falling back through :data:`ESTIMATE_LEVELS` from specific to general.
After the first level, the same backbone measured here under other settings is scaled to these
(:data:`SETTINGS_SCALED_LEVEL`, :meth:`Estimator.resettled`), by how the other backbones' times per epoch here
change between the two settings. Between the last two levels, a backbone measured on another dataset is scaled to this one
(:data:`SCALED_LEVEL`, :meth:`Estimator.scaled`), by the runs of the same plug-in on both; after the last,
by the runs of any plug-in on both (:data:`SCALED_ANY_PLUGIN_LEVEL`), and last by the two datasets' sizes
(:data:`SIZE_SCALED_LEVEL`). A run with no stored run like it at any level has no estimate (NaN, "no stored run to estimate from"):
nothing is invented for it, and the totals say how many such runs they leave out.

The wall time with N workers simulates the process and Ray executors: they start runs in
:func:`mltfrkit.executors.longest_first` order (its rough cost, not our estimates: the executor does
not know them) and each worker takes the next run when it frees (list scheduling, which for runs sorted
by duration is the longest-processing-time rule). The whole grid's time (``GridPlan.whole_grid_text``) adds
the grid's stored runs at their measured ``seconds`` to the estimates: what the grid takes from an empty
store, measured as far as it has run.

Caution: a stored ``seconds`` is the wall time that run took under whatever else ran beside it. Ours were
measured as two one-thread runs side by side on 2 cores, so the estimate holds for that setup; with more
runs per core (or more threads per run) every run is slower, with fewer it may be faster. A resumed run
counts what is left of it (:func:`time_left`): its estimate less the training seconds its checkpoints hold.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import pandas as pd

if TYPE_CHECKING:
    from mltfrkit.runs import RunSpec
    from mltfrkit.store import ResultStore

# What a run's training time depends on, from the most specific match to the most general. `rounds` is in
# every level: a full MLTFR run with a consensus expert or a two-round schedule trains twice, a w/o SC run, an
# MLTFR run without two experts of one width or a single schedule once, so mixing them would put a factor of
# about two into the median. `test_every_epoch` adds a test evaluation per epoch; `max_vocab`, `n_experts` and
# `trainable_tables` set the cost of the MLTFR plug-in; `epochs` (the cap) and `patience` how long early
# stopping lets a run go on.
ESTIMATE_LEVELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("same kind", ("dataset", "backbone", "plugin", "schedule", "rounds", "n_experts", "max_vocab",
                   "trainable_tables", "test_every_epoch", "epochs", "patience")),
    ("dataset, backbone, plug-in, schedule", ("dataset", "backbone", "plugin", "schedule", "rounds")),
    ("dataset, backbone, plug-in", ("dataset", "backbone", "plugin", "rounds")),
    ("dataset, plug-in, encoding", ("dataset", "plugin", "rounds", "encoding")),
)
NO_ESTIMATE = "no stored run to estimate from"
SCALED_LEVEL = "backbone on another dataset, scaled"  # tried before the last level (Estimator.scaled)
# tried after the first level: the same backbone on this dataset under other settings (the authors' configuration's
# per-epoch test evaluation and trainable tables, another number of experts), scaled by how those settings change
# the other backbones' times here (Estimator.resettled)
SETTINGS_SCALED_LEVEL = "backbone under other settings, scaled"
# tried after the last level: the dataset's size effect from runs of any plug-in (Estimator.scaled, any_plugin)
SCALED_ANY_PLUGIN_LEVEL = "backbone on another dataset, scaled by other plug-ins"
# the last resort: the same backbone and plug-in on another dataset, its time per epoch scaled by the two datasets'
# sizes in what its epoch grows with, for every epoch of the cap (Estimator.sized: an upper bound)
SIZE_SCALED_LEVEL = "backbone on another dataset, scaled by data size, at the epoch cap"
# what sets an epoch's cost among runs of one backbone, plug-in and number of rounds (ESTIMATE_LEVELS' first level
# without the dataset and the stopping rule, epochs and patience): Estimator.sized prefers runs that share them
PER_EPOCH_COST = ("schedule", "n_experts", "max_vocab", "trainable_tables", "test_every_epoch")
# what the first level adds to the second: the settings Estimator.resettled scales across
SETTINGS = tuple(key for key in ESTIMATE_LEVELS[0][1] if key not in ESTIMATE_LEVELS[1][1])
MAX_LEN = 50  # the training window (the paper's and every profile's maximum length), for epoch_units
CHECKPOINTS = ("checkpoint.pt", "round1/checkpoint.pt", "round2/checkpoint.pt")  # any of them: the run resumes
# what is left of a resumed run is never estimated below this share of its whole estimate: a run that has trained
# longer than its estimate has not ended, and nothing tells how much more it needs
MIN_LEFT_SHARE = 0.1
TIMING_CAUTION = ("Estimates are the measured training times of the stored runs, taken under whatever concurrency "
                  "those runs had (this project's store: two one-thread runs side by side on 2 cores); they hold "
                  "for the same setup, not for more runs or threads per core. Runs imported from a result archive "
                  "count with the times measured on the machine that trained them.")


def cost_fields(config: dict) -> dict:
    """The fields of a run's configuration (a stored result's ``config``, or ``RunSpec.to_dict``) that
    :data:`ESTIMATE_LEVELS` match on."""
    from mltfrkit.store import trains_consensus_round

    options = config.get("plugin_options") or {}
    plugin = config.get("plugin", "none")
    schedule = config.get("schedule", "single")
    mltfr = plugin == "mltfr"
    train = config.get("train") or {}
    two_rounds = trains_consensus_round(config) or schedule != "single"
    return {"dataset": config["dataset"], "backbone": config["backbone"], "plugin": plugin, "schedule": schedule,
            "rounds": 2 if two_rounds else 1,
            "n_experts": options.get("n_experts") if mltfr else None,
            "max_vocab": options.get("max_vocab") if mltfr else None,
            "trainable_tables": options.get("trainable_tables") if mltfr else None,
            "test_every_epoch": bool(train.get("test_every_epoch", False)),
            "epochs": train.get("epochs"), "patience": train.get("patience"),
            "encoding": backbone_encoding(config["backbone"])}


def backbone_encoding(name: str) -> str:
    """What a backbone's training time grows with: "prefix windows" for the backbones that encode one window
    per training prefix (FMLP-Rec, BSARec: ``PrefixEncodedMixin``, so interactions), "sequences" for the rest
    (users); text models (MixRec, LLMRec) get one of their own. Times are only compared across backbones of one
    encoding: an FMLP-Rec epoch with MLTFR takes several times longer on ml-100k than on Pantry (2.4 times the
    windows), while a SASRec epoch is about 10 times shorter there (943 users against Pantry's 7,123)."""
    from mltfrkit.models import backbone_class
    from mltfrkit.models.base import PrefixEncodedMixin

    try:
        return "prefix windows" if issubclass(backbone_class(name), PrefixEncodedMixin) else "sequences"
    except (KeyError, ValueError):
        return f"model {name}"  # a text model or an unregistered name: compared with itself only


def epoch_units(split) -> dict:
    """What an epoch's cost grows with on a dataset (a :class:`~mltfrkit.data.split.SplitData`), per
    :func:`backbone_encoding`: ``sequences``, one training sequence a user; ``prefix windows``, one encoded window
    per training position, at most :data:`MAX_LEN` a user (FMLP-Rec and BSARec). Rough: the holdout and windowing
    options shift these by a little."""
    import numpy as np

    lengths = np.array([len(sequence) for sequence in split.sequences])
    return {"sequences": float(len(lengths)), "prefix windows": float(np.clip(lengths - 3, 0, MAX_LEN).sum())}


@dataclass
class TimedRun:
    """A stored run with a measured training time: what estimates are made from."""

    run_dir: str
    seconds: float
    fields: dict
    epochs_trained: int | None = None  # every round's epochs (:func:`trained_epochs`); None: not known


def trained_epochs(result: dict) -> int | None:
    """How many epochs a stored run trained, over its rounds (round 1 and 2 of a two-round run), or None."""
    rounds = [result[name] for name in ("round1", "round2") if isinstance(result.get(name), dict)] or [result]
    counts = [len(part["epochs"]) for part in rounds if isinstance(part.get("epochs"), list)]
    return sum(counts) if len(counts) == len(rounds) and sum(counts) > 0 else None


def measured_seconds(result: dict | None) -> float | None:
    """A stored result's measured training time (its positive ``seconds``), or None when it has none."""
    seconds = None if result is None else result.get("seconds")
    ok = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0
    return float(seconds) if ok else None


def timed_runs(store: "ResultStore | str | Path") -> list[TimedRun]:
    """Every stored run of ``store`` (or of a store's version folder) with a positive measured ``seconds``. A
    w/o SC run recorded from a full run carries that run's round 1 time: what training it alone takes (the
    same computation)."""
    from mltfrkit.store import RESULT, read_result

    files = store.result_files() if hasattr(store, "result_files") else sorted(Path(store).glob(f"*/{RESULT}"))
    runs = []
    for path in files:
        result = read_result(path)  # an invalid file is skipped, with a warning naming it
        seconds = measured_seconds(result)
        if seconds is not None:
            runs.append(TimedRun(str(path.parent), seconds, cost_fields(result["config"]), trained_epochs(result)))
    return runs


def _median(runs: Iterable[TimedRun]) -> float:
    return float(pd.Series([run.seconds for run in runs]).median())


def _settings_group(fields: dict) -> tuple:
    """The second level's key without the backbone: the runs :meth:`Estimator.resettled` compares settings in."""
    return tuple(fields[k] for k in ESTIMATE_LEVELS[1][1] if k != "backbone")


def _setting_pairs(by_backbone: dict, target: tuple, settings: tuple, skip: str | None = None) -> list[tuple]:
    """(runs under ``target``, runs under ``settings``) of each backbone but ``skip`` measured under both, with
    epoch counts to compare per epoch (:meth:`Estimator.resettled`)."""
    return [(per[target], per[settings]) for backbone, per in by_backbone.items()
            if backbone != skip and target in per and settings in per
            and _per_epoch(per[settings]) > 0 and not math.isnan(_per_epoch(per[target]))]


def _per_epoch(runs: Iterable[TimedRun]) -> float:
    """The median seconds per trained epoch of the runs with an epoch count (NaN: none has one)."""
    values = [run.seconds / run.epochs_trained for run in runs if run.epochs_trained]
    return float(pd.Series(values).median()) if values else math.nan


def _epochs(runs: Iterable[TimedRun]) -> float:
    """The median number of epochs the runs with an epoch count trained (NaN: none has one)."""
    values = [run.epochs_trained for run in runs if run.epochs_trained]
    return float(pd.Series(values).median()) if values else math.nan


class Estimator:
    """Median stored time of the most similar stored runs (:data:`ESTIMATE_LEVELS`), with one step between
    "dataset, backbone, plug-in" and "dataset, plug-in, encoding": :data:`SCALED_LEVEL`, the same backbone and
    plug-in measured on another dataset, scaled by how the two datasets compare on the backbones of its encoding
    (and plug-in and rounds) both have; their medians mix schedules and epoch caps, so it is rough. Without it a
    backbone never run on this dataset would get the median of the others': FMLP-Rec and BSARec (one encoded
    window per training prefix) take several times SASRec's time, and a time budget (``--finish-by``) trusting
    that median would start a run hours longer than its estimate."""

    def __init__(self, runs: Iterable[TimedRun], sizes: Callable[[str], dict | None] | None = None,
                 size_cache: dict | None = None):
        # sizes(dataset) -> epoch_units(...) of that dataset, or None: for the last level only, asked lazily and
        # kept in size_cache (one dict several estimators share asks each dataset once: held_out_check)
        self.sizes, self._sizes = sizes, ({} if size_cache is None else size_cache)
        self.index: list[dict[tuple, list[TimedRun]]] = [{} for _ in ESTIMATE_LEVELS]
        self.by_backbone: dict[tuple, dict[str, list[TimedRun]]] = {}  # (plugin, rounds, backbone) -> dataset -> runs
        # the second level's key without the backbone -> backbone -> settings (SETTINGS) -> runs
        self.by_settings: dict[tuple, dict[str, dict[tuple, list[TimedRun]]]] = {}
        for run in runs:
            per_backbone = self.by_settings.setdefault(_settings_group(run.fields), {})
            per_backbone.setdefault(run.fields["backbone"], {}).setdefault(
                tuple(run.fields[k] for k in SETTINGS), []).append(run)
            for level, (_, keys) in enumerate(ESTIMATE_LEVELS):
                self.index[level].setdefault(tuple(run.fields[k] for k in keys), []).append(run)
            kind = (run.fields["plugin"], run.fields["rounds"], run.fields["backbone"])
            self.by_backbone.setdefault(kind, {}).setdefault(run.fields["dataset"], []).append(run)

    def estimate(self, fields: dict) -> tuple[float, str, list[TimedRun]]:
        """(seconds, which level matched, the stored runs used); (NaN, :data:`NO_ESTIMATE`, []) when none."""
        for level, (label, keys) in enumerate(ESTIMATE_LEVELS):
            if level == len(ESTIMATE_LEVELS) - 1:  # before the last level, "dataset, plug-in, encoding"
                seconds, matched = self.scaled(fields)
                if matched:
                    return seconds, SCALED_LEVEL, matched
            if level == 1:  # after "same kind": this backbone here under other settings, scaled
                seconds, matched = self.resettled(fields)
                if matched:
                    return seconds, SETTINGS_SCALED_LEVEL, matched
            matched = self.index[level].get(tuple(fields[k] for k in keys))
            if matched:
                return _median(matched), label, matched
        seconds, matched = self.scaled(fields, any_plugin=True)
        if matched:
            return seconds, SCALED_ANY_PLUGIN_LEVEL, matched
        seconds, matched = self.sized(fields)
        if matched:
            return seconds, SIZE_SCALED_LEVEL, matched
        return math.nan, NO_ESTIMATE, []

    def resettled(self, fields: dict) -> tuple[float, list[TimedRun]]:
        """:data:`SETTINGS_SCALED_LEVEL`: for each of :data:`SETTINGS` S' under which this backbone ran here (same
        dataset, plug-in, schedule and rounds): its median time per epoch under S', times the median, over the
        other backbones here measured under both S' and these settings S, of (their median time per epoch under S
        / under S'), times the median number of epochs it trained under S'; the median of those over S'.
        Backbones of the same encoding (:func:`backbone_encoding`) are preferred as the ratios' source, others
        used when none has both. Why: the second level's median mixes settings that change an epoch's cost
        several-fold (a test evaluation every epoch, trainable token tables, six experts instead of four: the
        authors' configuration), so without it a kind of run under the authors' configuration was estimated from
        its backbone's runs under ours, often several times too short (:func:`held_out_check`). Per epoch,
        because how long early stopping lets a run go on differs from backbone to backbone far more than what a
        setting adds to an epoch: scaling whole-run times put fewer held-out kinds within a factor of 2
        (:func:`held_out_check`) than leaving the level out, per-epoch scaling more. The epoch cap and patience
        are among :data:`SETTINGS`, but a different stopping rule is not scaled: the epochs trained under S' are
        only capped at this run's cap (per round). This backbone's runs without an epoch count are left out (the
        others' too, from their per-epoch medians). When no other backbone here was measured under both, the ratio
        comes from the other datasets (:meth:`_setting_pairs_elsewhere`): the authors' configuration on a new
        dataset was otherwise estimated from our configuration's runs there (Beauty's SASRec + MLTFR at 1.3 h,
        whose epochs took about 150 s against our configuration's 40 s: six experts and a test evaluation every
        epoch), and a time budget started a run far longer than its estimate. (NaN, [])
        when none is left, or no backbone anywhere was measured under both."""
        by_backbone = self.by_settings.get(_settings_group(fields), {})
        target = tuple(fields[k] for k in SETTINGS)
        cap = fields["epochs"] * fields["rounds"] if fields.get("epochs") else math.inf
        estimates, used = [], []
        for settings, runs in by_backbone.get(fields["backbone"], {}).items():
            runs = [run for run in runs if run.epochs_trained]
            if settings == target or not runs:
                continue  # the first level's match (not reached when it has runs), or no epoch counts
            own_epoch, own_epochs = _per_epoch(runs), min(_epochs(runs), cap)
            pairs = _setting_pairs(by_backbone, target, settings, skip=fields["backbone"])
            alike = [pair for pair in pairs if pair[0][0].fields["encoding"] == fields["encoding"]] or pairs
            if not alike:
                alike = self._setting_pairs_elsewhere(fields, target, settings)
            if alike:
                ratio = float(pd.Series([_per_epoch(now) / _per_epoch(before) for now, before in alike]).median())
                estimates.append(own_epoch * ratio * own_epochs)
                used += runs + [run for now, before in alike for run in now + before if run.epochs_trained]
        if not estimates:
            return math.nan, []
        return float(pd.Series(estimates).median()), list({run.run_dir: run for run in used}.values())

    def _setting_pairs_elsewhere(self, fields: dict, target: tuple, settings: tuple) -> list[tuple]:
        """For :meth:`resettled` when no other backbone on this dataset was measured under both settings (the
        authors' configuration on a dataset where only this backbone has run yet): the same change of settings on
        the other datasets (same plug-in, schedule and rounds), from this backbone there if it has both, else
        from the backbones of its encoding, else from any."""
        group = _settings_group(fields)
        ranked: list[list[tuple]] = [[], [], []]
        for key, by_backbone in self.by_settings.items():
            if key[1:] != group[1:] or key[0] == group[0]:
                continue
            for pair in _setting_pairs(by_backbone, target, settings):
                backbone = pair[0][0].fields["backbone"]
                same_encoding = pair[0][0].fields["encoding"] == fields["encoding"]
                ranked[0 if backbone == fields["backbone"] else 1 if same_encoding else 2].append(pair)
        return next((pairs for pairs in ranked if pairs), [])

    def _size(self, dataset: str, encoding: str) -> float | None:
        if dataset not in self._sizes:
            try:
                self._sizes[dataset] = self.sizes(dataset) if self.sizes is not None else None
            except Exception:  # advice only: a dataset that cannot be read here leaves the level out
                self._sizes[dataset] = None
        units = self._sizes[dataset]
        value = units.get(encoding) if units else None
        return float(value) if value else None

    def sized(self, fields: dict) -> tuple[float, list[TimedRun]]:
        """:data:`SIZE_SCALED_LEVEL`: for each other dataset D where this backbone ran with this plug-in and number
        of rounds, its median time per epoch there times (this dataset's size / D's) in the unit its epoch grows
        with (:func:`epoch_units`), times every epoch the run may train (its cap, per round): meant as an upper
        bound, as early stopping may end it sooner (without a cap or the epoch counts: the median time, as if as
        many epochs), though a rough one: the runs there that share :data:`PER_EPOCH_COST` are preferred, and the
        sizes are counted roughly. The median over D. Reached only when every earlier level failed (FMLP-Rec and
        BSARec on a dataset where no run of their encoding pairs with another dataset's); generous on purpose, as
        a time budget (``--finish-by``) trusting a short guess would start a run hours longer than it, and a
        worker replaces it by a real estimate once a run of the kind has finished there
        (:attr:`mltfrkit.executors.RunJob.estimate_bound`). It may load the other datasets (to count them).
        (NaN, []) when no dataset has what it needs, or no sizes were given."""
        here = self._size(fields["dataset"], fields["encoding"])
        if here is None:
            return math.nan, []
        cap = fields["epochs"] * fields["rounds"] if fields.get("epochs") else None
        estimates, used = [], []
        for other, runs in self.by_backbone.get((fields["plugin"], fields["rounds"], fields["backbone"]), {}).items():
            there = self._size(other, fields["encoding"]) if other != fields["dataset"] else None
            if there:
                # the runs there of the same kind but for the dataset and the stopping rule, if any: a per-epoch
                # test evaluation or a larger MLTFR setting costs more per epoch than the backbone's other runs
                alike = [run for run in runs if all(run.fields[k] == fields[k] for k in PER_EPOCH_COST)] or runs
                per_epoch = _per_epoch(alike)
                seconds = per_epoch * cap if cap and not math.isnan(per_epoch) else _median(alike)
                estimates.append(seconds * here / there)
                used += alike
        if not estimates:
            return math.nan, []
        return float(pd.Series(estimates).median()), used

    def scaled(self, fields: dict, any_plugin: bool = False) -> tuple[float, list[TimedRun]]:
        """:data:`SCALED_LEVEL`: for each other dataset D where this backbone ran with this plug-in and number
        of rounds, its median time there times the median, over the backbones of its encoding
        (:func:`backbone_encoding`) run on both datasets, of (their median time here / there); the median of
        those over D. (NaN, []) when no dataset has what it needs.

        ``any_plugin`` (:data:`SCALED_ANY_PLUGIN_LEVEL`, after the last of :data:`ESTIMATE_LEVELS`): the ratios come from runs of any
        plug-in and number of rounds of that encoding, this backbone's own W/O runs included: how much longer
        an epoch takes on this dataset, when no run of this plug-in has been made here yet (LLM-TE on Beauty,
        say, where SASRec W/O and SASRec + MLTFR are measured on both Beauty and Pantry). Rougher still: it
        assumes the plug-in's cost grows with the dataset as the backbone's does."""
        plugin, rounds, dataset = fields["plugin"], fields["rounds"], fields["dataset"]
        estimates, used = [], []
        for other, runs in self.by_backbone.get((plugin, rounds, fields["backbone"]), {}).items():
            if other == dataset:
                continue
            ratios = []
            for (p, r, backbone), per_dataset in self.by_backbone.items():
                # a kind measured on this dataset; the run's own kind never is (else an earlier level matched)
                same_kind = any_plugin or ((p, r) == (plugin, rounds) and backbone != fields["backbone"])
                if same_kind and dataset in per_dataset and other in per_dataset \
                        and per_dataset[other][0].fields["encoding"] == fields["encoding"]:
                    there = _median(per_dataset[other])
                    if there > 0:
                        ratios.append(_median(per_dataset[dataset]) / there)
                        used += per_dataset[dataset] + per_dataset[other]
            if ratios:
                estimates.append(_median(runs) * float(pd.Series(ratios).median()))
                used += runs
        if not estimates:
            return math.nan, []
        return float(pd.Series(estimates).median()), list({run.run_dir: run for run in used}.values())


def checkpointed_seconds(run_dir: str | Path) -> float:
    """The training seconds an unfinished run's checkpoints hold, over its rounds (each round's checkpoint records
    its own epochs' seconds): 0 when it has none, or none readable."""
    from mltfrkit.train.checkpoint import trained_seconds

    return float(sum(trained_seconds(Path(run_dir) / name) for name in CHECKPOINTS
                     if (Path(run_dir) / name).exists()))


def time_left(estimate: float, trained: float) -> float:
    """What is left of a run estimated at ``estimate`` seconds whose checkpoints hold ``trained`` seconds: the
    difference, and at least :data:`MIN_LEFT_SHARE` of the estimate (NaN stays NaN: no estimate). The run resumes
    from its last checkpoint (exactly, :func:`mltfrkit.train.fit`), so the epochs it holds are not trained again."""
    if estimate != estimate:
        return estimate
    return max(float(estimate) - max(float(trained), 0.0), MIN_LEFT_SHARE * float(estimate))


def simulated_wall(durations: Sequence[float], workers: int, order: Sequence[int] | None = None) -> float:
    """The makespan of running ``durations`` on ``workers`` workers that each take the next run, in
    ``order`` (positions into ``durations``; default: longest first, the LPT rule), as soon as they free.
    This is how the process pool and Ray executors hand out runs, and it is not ``sum / workers``: one long
    run, or a poor split, keeps a worker busy after the others are idle. E.g. [5, 4, 3, 3, 3] on 2 workers
    takes 10 in LPT order (5+3 on one, 4+3+3 on the other), though a perfect split (5+4, 3+3+3) takes 9."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if order is None:
        order = sorted(range(len(durations)), key=lambda index: -durations[index])
    free_at = [0.0] * min(workers, max(1, len(order)))
    for index in order:
        heapq.heappush(free_at, heapq.heappop(free_at) + float(durations[index]))
    return max(free_at)


@dataclass
class GridPlan:
    """What a grid needs (:meth:`mltfrkit.store.ResultStore.plan`); counts are grid entries (positions in
    the specs) except ``to_train`` / ``resumable``, which are run directories.

    ``runs``: one row per run directory to train: ``run_dir``, ``dataset``, ``backbone``, ``plugin``,
    ``schedule``, ``seed``, the :func:`cost_fields`, ``options`` (the settings that tell it from the other
    runs to train), ``entries`` (grid entries it answers), ``wo_sc_after`` (w/o SC entries recorded from it
    afterwards), ``resumes`` (a checkpoint exists), ``estimate_s`` (the whole run's estimate; NaN: none),
    ``trained_s`` (the seconds its checkpoints hold), ``left_s`` (:func:`time_left`: what the serial and wall
    totals count), ``estimate_from`` (the :data:`ESTIMATE_LEVELS` label that matched, or :data:`NO_ESTIMATE`),
    ``estimate_runs`` (stored runs in the median)."""

    runs: pd.DataFrame
    grid: int  # grid entries
    stored: int  # answered by a stored run
    recorded_from_stored: int  # w/o SC recorded from a stored full run's round 1 (nothing trained)
    recorded_after: int  # w/o SC recorded from a full run this grid trains
    workers: int
    serial_seconds: float  # the sum of what is left of each run (time_left; runs with no estimate left out)
    wall_seconds: float  # simulated with `workers` workers in the executor's order (runs with none left out)
    estimate_sources: int  # distinct stored runs the estimates were made from
    root: str = ""
    # The grid's stored runs (distinct run directories; a w/o SC result recorded from a full run of the grid is not
    # a run of its own): their measured training seconds, how many had a time, and how many had none
    stored_seconds: float = 0.0
    stored_timed: int = 0
    stored_untimed: int = 0
    # The whole grid as if trained from an empty store: the stored runs' measured times plus the estimates (runs
    # with none left out), serial and simulated with `workers` workers in the executor's order
    whole_serial_seconds: float = 0.0
    whole_wall_seconds: float = 0.0
    # One row per run directory of the whole grid (stored and to train): ``run_dir`` (its name), ``seconds``
    # (measured, else the estimate, NaN: neither), ``measured``, ``order`` (its place in the executor's order
    # among the runs with seconds): what :func:`batch_totals` adds up over several grids without counting twice
    whole_runs: pd.DataFrame | None = None

    @property
    def to_train(self) -> int:
        return len(self.runs)

    @property
    def resumable(self) -> int:
        return int(self.runs["resumes"].sum()) if len(self.runs) else 0

    @property
    def may_be_answered(self) -> int:
        """Runs trained last, and only if the grid's plain-patience run of the same spec does not stop alike
        (:attr:`mltfrkit.store.GridNeeds.deferred`): counted in every total, so the totals are an upper bound."""
        return int(self.runs["may_be_answered"].sum()) if len(self.runs) else 0

    @property
    def unestimated(self) -> int:
        return int(self.runs["estimate_s"].isna().sum()) if len(self.runs) else 0

    @property
    def recorded(self) -> int:
        return self.recorded_from_stored + self.recorded_after

    def summary(self) -> pd.DataFrame:
        """The runs to train grouped by (backbone, plugin, schedule): how many, how many resume, how many have
        no estimate, and their estimated hours (serial, the sum of what is left of the group's estimated runs)."""
        columns = ["backbone", "plugin", "schedule", "runs", "resume", "no estimate", "estimated h", "estimated from"]
        if not len(self.runs):
            return pd.DataFrame(columns=columns)
        grouped = self.runs.groupby(["backbone", "plugin", "schedule"], sort=True)
        out = grouped.agg(runs=("run_dir", "size"), resume=("resumes", "sum"),
                          **{"no estimate": ("estimate_s", lambda s: int(s.isna().sum())),
                             "estimated h": ("left_s", lambda s: s.sum(min_count=1) / 3600),
                             "estimated from": ("estimate_from", lambda s: "; ".join(
                                 f"{label} ({count})" for label, count in s.value_counts().items()))})
        return out.reset_index()[columns]

    def whole_grid_text(self) -> str:
        """What the whole grid takes, stored runs at their measured times and the rest at their estimates:
        ``the whole grid: 12.1 h serial, 6.2 h wall with 2 workers (7.9 h measured on 30 stored runs)``, naming
        what it leaves out (stored runs without a time, runs without an estimate); empty when no stored run is
        counted and no run resumes (the estimate is then the whole grid). Runs that may be answered are counted:
        an upper bound."""
        resumed = bool(len(self.runs)) and "trained_s" in self.runs and bool((self.runs["trained_s"] > 0).any())
        if not (self.stored_timed or self.stored_untimed or resumed):
            return ""
        workers = f"{self.workers} worker{'s' if self.workers != 1 else ''}"
        runs = f"{self.stored_timed} stored run{'s' if self.stored_timed != 1 else ''}"
        left_out = [f"{n} {what} left out" for n, what in ((self.stored_untimed, "stored without a time"),
                                                           (self.unestimated, "without an estimate")) if n]
        measured = [f"{self.stored_seconds / 3600:.1f} h measured on {runs}"] if self.stored_timed else []
        notes = ", ".join(measured + left_out)
        return (f"the whole grid: {self.whole_serial_seconds / 3600:.1f} h serial, "
                f"{self.whole_wall_seconds / 3600:.1f} h wall with {workers}" + (f" ({notes})" if notes else ""))

    def totals_line(self, label: str) -> str:
        """One line, e.g. ``claims on Pantry: 248 runs, 36 stored, 212 to train (5 resume); estimated 41.3 h
        serial, 20.9 h wall with 2 workers (from 36 stored runs' measured times; 3 runs have no estimate); the
        whole grid: 49.2 h serial, 24.8 h wall with 2 workers (7.9 h measured on 36 stored runs)``."""
        whole = self.whole_grid_text()
        return self._totals_line(label) + (f"; {whole}" if whole else "")

    def _totals_line(self, label: str) -> str:
        parts = [f"{self.grid} runs", f"{self.stored} stored"]
        if self.recorded:
            parts.append(f"{self.recorded} w/o SC recorded from full runs")
        entries = int(self.runs["entries"].sum()) if len(self.runs) else 0
        train = f"{self.to_train} to train"
        if entries != self.to_train:
            train += f" for {entries} grid entries"
        maybe = self.may_be_answered
        parts.append(f"{train} ({self.resumable} resume"
                     f"{f', {maybe} may be answered by a plain-patience run of this grid, counted' if maybe else ''})")
        text = f"{label}: {', '.join(parts)}"
        if not self.to_train:
            return text + "; nothing to train"
        missing = f"; {self.unestimated} run{'s have' if self.unestimated != 1 else ' has'} no estimate" \
            if self.unestimated else ""
        if self.unestimated == self.to_train:
            return text + f"; no estimate: {NO_ESTIMATE} in {self.root or 'this store'}"
        sources = (f"{self.estimate_sources} stored run's measured time" if self.estimate_sources == 1
                   else f"{self.estimate_sources} stored runs' measured times")
        return (text + f"; estimated {self.serial_seconds / 3600:.1f} h serial, {self.wall_seconds / 3600:.1f} h wall "
                f"with {self.workers} worker{'s' if self.workers != 1 else ''} (from {sources}{missing})")

    def report(self, label: str) -> str:
        """The per-kind summary, the totals line and the timing caution, as ``mltfrkit sweep --plan`` prints."""
        lines = []
        summary = self.summary()
        if len(summary):
            lines.append(summary.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
        lines.append(self.totals_line(label))
        if self.to_train:
            if self.unestimated:
                lines.append(f"The serial and wall hours leave out the {self.unestimated} run(s) without an "
                             f"estimate: the grid takes longer than that.")
            if self.resumable:
                trained = float(self.runs["trained_s"].sum()) if "trained_s" in self.runs else 0.0
                lines.append(f"A resumed run counts what is left of it: its estimate less the training its "
                             f"checkpoints hold ({trained / 3600:.1f} h over {self.resumable} run(s)), at least "
                             f"{MIN_LEFT_SHARE:.0%} of its estimate.")
            lines.append(TIMING_CAUTION)
        return "\n".join(lines)


def _distinguishing(specs: list["RunSpec"]) -> list[str]:
    """For each run, the settings whose values differ among the runs of its kind (backbone, plug-in,
    schedule) in the list, as ``key=value`` text: what tells it from its neighbours in the summary (the
    number of experts of an expert sweep, the token source of an LLM-TE run), and nothing they share."""
    settings = [_settings(spec) for spec in specs]
    kinds: dict[tuple, list[int]] = {}
    for index, spec in enumerate(specs):
        kinds.setdefault((spec.backbone.lower(), spec.plugin, spec.schedule), []).append(index)
    out = [""] * len(specs)
    for members in kinds.values():
        keys = sorted({key for index in members for key in settings[index]} - {"train.seed"})  # seed: a column
        varying = [key for key in keys if len({repr(settings[index].get(key)) for index in members}) > 1]
        for index in members:
            out[index] = " ".join(f"{key}={_text(settings[index].get(key))}" for key in varying)
    return out


def _settings(spec: "RunSpec") -> dict:
    """A run's plug-in options (MLTFR's resolved) and training options, flat, for :func:`_distinguishing`."""
    options = spec.mltfr_config().to_dict() if spec.plugin == "mltfr" else dict(spec.plugin_options)
    train = spec.train.to_dict()
    return {**options, **{f"train.{k}": v for k, v in train.items()},
            "schedule": spec.schedule, **({"model": spec.model} if spec.model else {})}


def _text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def plan_grid(store: "ResultStore", specs: Iterable["RunSpec"], workers: int | None = None) -> GridPlan:
    """:meth:`mltfrkit.store.ResultStore.plan`: reads the store, trains and writes nothing."""
    from mltfrkit.executors import RunJob, concurrent_runs, longest_first

    workers = concurrent_runs(store.executor) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    needs = store.needs(specs)
    estimator = Estimator(timed_runs(store), sizes=lambda dataset: epoch_units(store.split(dataset)))
    train_specs = [needs.job_specs[run_dir] for run_dir in needs.to_train]
    distinguishing = _distinguishing(train_specs)
    rows, used = [], set()
    for (run_dir, positions), spec, options in zip(needs.to_train.items(), train_specs, distinguishing):
        split = store.split(spec.dataset)
        fields = cost_fields(spec.to_dict(split.source_sha256))
        seconds, level, matched = estimator.estimate(fields)
        used.update(run.run_dir for run in matched)
        resumes = any((Path(run_dir) / name).exists() for name in CHECKPOINTS)
        trained = checkpointed_seconds(run_dir) if resumes else 0.0
        rows.append({"run_dir": Path(run_dir).name, **fields, "seed": spec.train.seed,
                     "options": options,
                     "entries": len(positions), "wo_sc_after": len(needs.derived_later.get(run_dir, [])),
                     "resumes": resumes, "may_be_answered": run_dir in needs.deferred,
                     "estimate_s": seconds, "trained_s": trained, "left_s": time_left(seconds, trained),
                     "estimate_from": level, "estimate_runs": len(matched)})
    columns = ["run_dir", "dataset", "backbone", "plugin", "schedule", "rounds", "n_experts", "max_vocab",
               "trainable_tables", "test_every_epoch", "epochs", "patience", "seed", "options", "entries",
               "wo_sc_after", "resumes", "may_be_answered", "estimate_s", "trained_s", "left_s", "estimate_from",
               "estimate_runs"]
    runs = pd.DataFrame(rows, columns=columns)
    jobs = [RunJob(spec, str(store.root), None, str(run_dir)) for run_dir, spec in zip(needs.to_train, train_specs)]
    known = [index for index in longest_first(jobs) if not math.isnan(rows[index]["estimate_s"])]
    durations = [row["estimate_s"] for row in rows]  # whole runs: the grid from an empty store below
    left = [row["left_s"] for row in rows]  # what is still to train: a resumed run's remainder
    serial = float(sum(left[index] for index in known))
    wall = simulated_wall(left, workers, order=known) if known else 0.0
    # The whole grid from an empty store: the stored runs at their own measured times, the rest at their
    # estimates, in the executor's order. A w/o SC result recorded from a full run of this grid trained nothing
    # of its own; one recorded from a full run outside the grid counts its round 1 time (its ``seconds``).
    grid_dirs = {str(result.get("run_dir")) for result in needs.stored.values() if not result.get("derived_from")}
    grid_dirs |= {str(run_dir) for run_dir in needs.to_train}
    stored_runs: dict[str, tuple[int, dict]] = {}
    for index, result in needs.stored.items():
        if result.get("derived_from") and str(result["derived_from"]) in grid_dirs:
            continue
        # (a result without its directory, which the store never returns, gets a key no other grid shares)
        stored_runs.setdefault(str(result.get("run_dir") or f"#{id(needs)}-{index}"), (index, result))
    outside = {str(full.get("run_dir")) for index, full in needs.from_stored_full.items()} - grid_dirs
    timed = [(index, measured_seconds(result)) for index, result in stored_runs.values()
             if measured_seconds(result) is not None]
    whole_jobs = [RunJob(needs.specs[index], str(store.root), None, "") for index, _ in timed] + \
        [jobs[index] for index in known]
    whole = [seconds for _, seconds in timed] + [durations[index] for index in known]
    whole_order = longest_first(whole_jobs)
    timed_dirs = [name for name, (index, result) in stored_runs.items() if measured_seconds(result) is not None]
    untimed_dirs = [name for name, (index, result) in stored_runs.items() if measured_seconds(result) is None]
    untimed_dirs += sorted(outside)
    unknown = [index for index in range(len(rows)) if math.isnan(durations[index])]
    whole_runs = pd.DataFrame({  # stored with a time, to train with an estimate, to train without, stored without
        "run_dir": [Path(name).name for name in timed_dirs] + [rows[i]["run_dir"] for i in known]
        + [rows[i]["run_dir"] for i in unknown] + [Path(name).name for name in untimed_dirs],
        "seconds": whole + [math.nan] * (len(unknown) + len(untimed_dirs)),
        "measured": [True] * len(timed) + [False] * (len(known) + len(unknown)) + [True] * len(untimed_dirs),
        "order": [whole_order.index(i) for i in range(len(whole))] + [-1] * (len(unknown) + len(untimed_dirs)),
        # an estimate at the last level is an upper bound by design (Estimator.sized): batch totals say how much
        "bound": [False] * len(timed) + [rows[i]["estimate_from"] == SIZE_SCALED_LEVEL for i in known]
        + [False] * (len(unknown) + len(untimed_dirs))})
    return GridPlan(runs=runs, grid=len(needs.specs), stored=len(needs.stored),
                    recorded_from_stored=len(needs.from_stored_full),
                    recorded_after=sum(len(v) for v in needs.derived_later.values()), workers=workers,
                    serial_seconds=serial, wall_seconds=wall, estimate_sources=len(used), root=str(store.root),
                    stored_seconds=float(sum(whole[:len(timed)])), stored_timed=len(timed),
                    stored_untimed=len(stored_runs) - len(timed) + len(outside),
                    whole_serial_seconds=float(sum(whole)),
                    whole_wall_seconds=simulated_wall(whole, workers, order=whole_order) if whole else 0.0,
                    whole_runs=whole_runs)


@dataclass
class BatchTotals:
    """Several grids trained one after another (a batch such as ``scripts/paper_batch.py``'s queue), each run
    directory counted once, in the first grid that holds it (a later grid finds it stored): ``serial_seconds``
    the sum of the runs' seconds (measured or estimated), ``wall_seconds`` the sum of each grid's simulated wall
    time over its own new runs (a grid starts when the one before has ended, as the batch runs them)."""

    grids: int
    runs: int
    measured: int
    estimated: int
    unestimated: int  # runs to train without an estimate
    stored_untimed: int  # stored runs without a measured time
    measured_seconds: float
    serial_seconds: float
    wall_seconds: float
    workers: int
    bounded: int = 0  # estimated runs whose estimate is an upper bound (SIZE_SCALED_LEVEL)
    bounded_seconds: float = 0.0  # their estimated seconds, part of serial_seconds

    def text(self, label: str) -> str:
        workers = f"{self.workers} worker{'s' if self.workers != 1 else ''}"
        missing = [f"{n} {what}" for n, what in ((self.unestimated, "without an estimate"),
                                                 (self.stored_untimed, "stored without a time")) if n]
        left_out = f"; left out: {' and '.join(missing)}, so it takes longer than that" if missing else ""
        bound = (f" ({self.bounded} of them, {self.bounded_seconds / 3600:.1f} h serial, at an upper bound: "
                 f"every epoch of the cap, no run of their kind measured on their dataset)" if self.bounded else "")
        return (f"{label} ({self.grids} grids, {self.runs} distinct runs): {self.serial_seconds / 3600:.1f} h serial, "
                f"{self.wall_seconds / 3600:.1f} h wall with {workers}; {self.measured_seconds / 3600:.1f} h "
                f"measured on {self.measured} stored run{'s' if self.measured != 1 else ''}, {self.estimated} "
                f"estimated{bound}{left_out}")


def batch_totals(plans: Sequence[GridPlan]) -> BatchTotals:
    """The whole-grid times of ``plans`` (in the order they run) as one batch: :class:`BatchTotals`."""
    seen: set[str] = set()
    runs = measured = estimated = unestimated = untimed = bounded = 0
    measured_s = serial = wall = bounded_s = 0.0
    for plan in plans:
        table = plan.whole_runs if plan.whole_runs is not None else \
            pd.DataFrame({"run_dir": [], "seconds": [], "measured": [], "order": []})
        if "bound" not in table:  # a plan made without the column: no estimate known to be a bound
            table = table.assign(bound=False)
        new = table[~table["run_dir"].isin(seen)].drop_duplicates("run_dir")
        seen.update(new["run_dir"])
        timed = new[new["seconds"].notna()].sort_values("order")
        runs += len(new)
        measured += int(timed["measured"].sum())
        estimated += int((~timed["measured"].astype(bool)).sum())
        unestimated += int((new["seconds"].isna() & ~new["measured"].astype(bool)).sum())
        untimed += int((new["seconds"].isna() & new["measured"].astype(bool)).sum())
        measured_s += float(timed.loc[timed["measured"].astype(bool), "seconds"].sum())
        serial += float(timed["seconds"].sum())
        bound = timed[timed["bound"].astype(bool) & ~timed["measured"].astype(bool)]
        bounded += len(bound)
        bounded_s += float(bound["seconds"].sum())
        if len(timed):
            wall += simulated_wall(list(timed["seconds"]), plan.workers, order=range(len(timed)))
    workers = plans[0].workers if plans else 1
    return BatchTotals(grids=len(plans), runs=runs, measured=measured, estimated=estimated, unestimated=unestimated,
                       stored_untimed=untimed, measured_seconds=measured_s, serial_seconds=serial, wall_seconds=wall,
                       workers=workers, bounded=bounded, bounded_seconds=bounded_s)


@dataclass
class HeldOutCheck:
    """How good the estimates are on this store (:func:`held_out_check`): ``kinds``, one row per kind of stored
    run (the first level's fields): ``runs`` (stored runs of it), ``measured_s`` (their median seconds),
    ``estimate_s`` (from the other kinds only; NaN: none), ``estimate_from`` (the level that matched) and
    ``ratio`` (measured / estimate)."""

    kinds: pd.DataFrame
    factor: float = 2.0

    def text(self) -> str:
        """One line: how many held-out kinds' measured times fell within :attr:`factor` of their estimates,
        weighted by runs too, and the measured / estimated totals: what the plan's hours are worth."""
        rated = self.kinds[self.kinds["estimate_s"].notna()]
        if not len(rated):
            return "estimates checked on the stored runs: no kind of stored run could be estimated from the others"
        within = rated["ratio"].between(1 / self.factor, self.factor)
        total = (rated["measured_s"] * rated["runs"]).sum() / (rated["estimate_s"] * rated["runs"]).sum()
        low, high = rated["ratio"].quantile([0.1, 0.9])
        return (f"estimates checked on the stored runs, each kind of run held out in turn and estimated from the "
                f"others (as a kind not yet run is): within a factor of {self.factor:g} of its measured median for "
                f"{int(within.sum())} of {len(rated)} kinds ({int(rated.loc[within, 'runs'].sum())} of "
                f"{int(rated['runs'].sum())} runs); measured / estimated {low:.2f} to {high:.2f} (10th to 90th "
                f"percentile), {total:.2f} over all their runs"
                + (f"; {len(self.kinds) - len(rated)} kind(s) had no estimate" if len(rated) < len(self.kinds) else ""))


def held_out_check(runs: Sequence[TimedRun], sizes: Callable[[str], dict | None] | None = None,
                   factor: float = 2.0) -> HeldOutCheck:
    """Each kind of stored run (all its seeds: the first of :data:`ESTIMATE_LEVELS`) held out in turn and
    estimated by an :class:`Estimator` of the other kinds' runs, as a kind the store has never run is: the
    estimates a plan's hours rest on for runs not like any stored one, checked against what was measured. A
    new seed of a stored kind is estimated from its own kind, which this does not test (its spread is the
    seeds')."""
    keys = ESTIMATE_LEVELS[0][1]
    size_cache: dict = {}  # each dataset's sizes asked once over all the estimators, not once per kind
    kinds: dict[tuple, list[TimedRun]] = {}
    for run in runs:
        kinds.setdefault(tuple(run.fields[k] for k in keys), []).append(run)
    rows = []
    for kind, members in kinds.items():
        estimator = Estimator([run for run in runs if tuple(run.fields[k] for k in keys) != kind], sizes=sizes,
                              size_cache=size_cache)
        seconds, level, _ = estimator.estimate(members[0].fields)
        measured = _median(members)
        rows.append({**members[0].fields, "runs": len(members), "measured_s": measured, "estimate_s": seconds,
                     "estimate_from": level, "ratio": measured / seconds if seconds > 0 else math.nan})
    columns = [*keys, "runs", "measured_s", "estimate_s", "estimate_from", "ratio"]
    return HeldOutCheck(pd.DataFrame(rows, columns=columns), factor=factor)


__all__ = ["BatchTotals", "ESTIMATE_LEVELS", "Estimator", "GridPlan", "HeldOutCheck", "NO_ESTIMATE",
           "SCALED_ANY_PLUGIN_LEVEL", "SCALED_LEVEL", "SETTINGS_SCALED_LEVEL", "SIZE_SCALED_LEVEL", "TIMING_CAUTION",
           "MIN_LEFT_SHARE", "backbone_encoding", "batch_totals", "checkpointed_seconds", "cost_fields", "epoch_units",
           "held_out_check", "plan_grid", "simulated_wall", "time_left", "timed_runs", "trained_epochs"]
