"""A run = dataset + backbone + model options + plug-in + training options. Its key hashes all of
that plus the data's content hash (and the token sources' sha256), so the same run always lands
in the same directory, and an interrupted one resumes there."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from mltfrkit.data import load_dataset
from mltfrkit.models import build_backbone, make_config
from mltfrkit.paths import cache_dir, ensure_directory
from mltfrkit.train import TrainConfig, fit, seed_everything, write_result

PLUGINS = ("none", "mltfr", "te", "re")


@dataclass
class RunSpec:
    dataset: str
    backbone: str = "sasrec"
    model: dict = field(default_factory=dict)  # backbone config overrides
    train: TrainConfig = field(default_factory=TrainConfig)
    plugin: str = "none"  # "mltfr", or "te" / "re" (LLM-TE / LLM-RE of Fig. 1)
    plugin_options: dict = field(default_factory=dict)  # MLTFRConfig fields, or {"llm": ..., "assignment_seed": ...}
    # Backbones without a plug-in only: "two_round" / "two_round_restart" train MLTFR's two-round schedule with no
    # plug-in (the schedule-matched baseline, "W/O 2-round"; mltfrkit/train/schedule.py). Left out of the key at
    # "single", so stored runs keep theirs.
    schedule: str = "single"
    round_selection: str = "both"  # for a two-round schedule: as MLTFRConfig.round_selection

    def __post_init__(self):
        if self.plugin not in PLUGINS:
            raise ValueError(f"unknown plugin {self.plugin!r}; valid: {', '.join(PLUGINS)}")
        from mltfrkit.train.schedule import SCHEDULES

        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, not {self.schedule!r}")
        if self.schedule != "single" and self.plugin != "none":
            raise ValueError("schedule applies to backbones without a plug-in (MLTFR has its own rounds: "
                             "MLTFRConfig.round2 / round_selection)")
        if self.round_selection not in ("both", "round2"):
            raise ValueError(f"round_selection must be 'both' or 'round2', not {self.round_selection!r}")
        from mltfrkit.data import DATASETS

        registered = DATASETS.get(str(self.dataset).lower())
        if registered is not None:  # "pantry" and "Pantry" are one dataset, so one store entry
            self.dataset = registered.name

    def mltfr_config(self):
        from mltfrkit.mltfr import AUTHOR_DEFAULTS, MLTFRConfig

        known = {f.name for f in fields(MLTFRConfig)}
        unknown = sorted(set(self.plugin_options) - known)
        if unknown:
            raise TypeError(f"MLTFR has no option(s) {unknown}; its options are {sorted(known)}")
        options = {**AUTHOR_DEFAULTS.get(self.backbone.lower(), {}), **self.plugin_options}
        return MLTFRConfig(**options)

    def token_sources(self) -> list[str]:
        if self.plugin == "mltfr":
            from mltfrkit.mltfr.tables import expert_sources

            config = self.mltfr_config()
            return expert_sources(config.llms, config.n_experts)
        if self.plugin in ("te", "re"):
            return [self.plugin_options.get("llm", "all-MiniLM-L6-v2")]
        return []

    def to_dict(self, data_sha256: str = "") -> dict:
        out = asdict(self)
        out["train"] = self.train.to_dict()
        out["model"] = make_config(self.backbone, **self.model).to_dict()  # resolved defaults, not just overrides
        out["backbone"] = self.backbone.lower()
        out["data_sha256"] = data_sha256
        if self.schedule == "single":  # added after runs were stored: left out at its default
            del out["schedule"], out["round_selection"]
        if self.plugin == "mltfr":
            out["plugin_options"] = self.mltfr_config().to_dict()
        if self.plugin != "none":
            from mltfrkit.mltfr.tables import table_reference

            out["token_tables"] = [table_reference(name) for name in self.token_sources()]
        return out

    def key(self, data_sha256: str) -> str:
        payload = json.dumps(self.to_dict(data_sha256), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def authors_configuration(spec: RunSpec) -> RunSpec:
    """The paper as its authors ran it, on our data readers and token tables: their split (no validation,
    every item but the last trains), test-set selection (``test_oracle``), and for MLTFR runs every behaviour
    of their code (:data:`mltfrkit.mltfr.plugin.AUTHOR_BEHAVIOURS`: batch-wide keys, E-computed output added
    after block 0, ``w / sum(w)`` token scaling, expert dropout 0.1, noise at evaluation, trainable tables,
    round 2 restarted and reported alone) with their per-backbone alpha, K and expert count. These replace
    the spec's own values (a ladder switches one back afterwards); everything else, such as the vocabulary
    cap, the token sources and the Fisher sample, stays the spec's (ours: offline sources, a CPU budget)."""
    from dataclasses import replace

    from mltfrkit.mltfr.plugin import AUTHOR_BEHAVIOURS, AUTHOR_DEFAULTS, AUTHOR_EXPERTS

    # Plain patience, as every authors'-configuration run here was trained (REFERENCE does not record their
    # stopping rule; whatever it is, their selection reads the test curve).
    train = replace(spec.train, holdout="test", test_every_epoch=True, patience_relative=0.0)
    if spec.plugin != "mltfr":
        return replace(spec, train=train)
    backbone = spec.backbone.lower()
    options = {**spec.plugin_options, **AUTHOR_BEHAVIOURS, **AUTHOR_DEFAULTS.get(backbone, {}),
               "n_experts": AUTHOR_EXPERTS.get(backbone, 4), "precision": "float32"}
    return replace(spec, train=train, plugin_options=options)


CONFIGURATIONS = ("ours", "authors")


def configured(spec: RunSpec, configuration: str = "ours") -> RunSpec:
    """``spec`` under a named configuration: ``ours`` (as it is) or ``authors``."""
    if configuration not in CONFIGURATIONS:
        raise ValueError(f"configuration must be one of {list(CONFIGURATIONS)}, not {configuration!r}")
    return authors_configuration(spec) if configuration == "authors" else spec


def runs_root(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get("MLTFR_RUNS_DIR") or cache_dir("runs"))


def store_root(explicit: str | os.PathLike | None = None) -> Path:
    """Where the result store keeps runs of this code version: ``<runs root>/mltfrkit-<version>``.
    The command line trains into the same place, so a notebook finds runs started by hand."""
    from mltfrkit import __version__

    return runs_root(explicit) / f"mltfrkit-{__version__}"


def build_model(spec: RunSpec, n_items: int):
    """A seeded model with its plug-in attached; returns (model, plugin or None)."""
    seed_everything(spec.train.seed)
    model = build_backbone(spec.backbone, n_items, **spec.model)
    plugin = None
    if spec.plugin == "mltfr":
        from mltfrkit.mltfr import MLTFRPlugin
        from mltfrkit.mltfr.tables import load_expert_table

        config = spec.mltfr_config()
        tables = [(name, *load_expert_table(name, config.exclude_classes, config.max_vocab, config.precision))
                  for name in spec.token_sources()]
        if config.tables == "random":  # MLTFR-RE: the same shapes and row norms, no LLM semantics
            from mltfrkit.mltfr.tables import random_rows_like

            tables = [(name, random_rows_like(rows, 1000 + index), keep)
                      for index, (name, rows, keep) in enumerate(tables)]
        plugin = MLTFRPlugin(tables, model.config.hidden_size, config)
        model.attach_plugin(plugin, config.placement)
    elif spec.plugin in ("te", "re"):
        from mltfrkit.mltfr import ItemTokenInjection
        from mltfrkit.mltfr.tables import load_expert_table

        vocab, keep = load_expert_table(spec.token_sources()[0])
        plugin = ItemTokenInjection(n_items, vocab, keep, model.config.hidden_size, random_rows=spec.plugin == "re",
                                    assignment_seed=int(spec.plugin_options.get("assignment_seed", 0)))
        model.attach_plugin(plugin, "input")
    return model, plugin


def run_dir_for(spec: RunSpec, split, root: str | os.PathLike | None = None) -> Path:
    """The directory a run lives in: ``<root>/<dataset>-<backbone>-<plugin>-<key>`` (no training);
    without a root, the result store's (so library calls, the command line and notebooks agree)."""
    return (Path(root) if root is not None else store_root()) / f"{split.name}-{spec.backbone.lower()}-{spec.plugin}-{spec.key(split.source_sha256)}"


def run_training(spec: RunSpec, data_dir: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                 root: str | os.PathLike | None = None, progress: bool = True, log=print, split=None) -> dict:
    """Train (or resume) a run; ``split`` is an already loaded dataset (saves re-reading it).

    The run's lock (:mod:`mltfrkit.locks`) is held while it trains, so the same run is never trained
    by two processes at once: a second caller waits, then returns the result the first one wrote."""
    from mltfrkit.locks import run_lock
    from mltfrkit.store import read_result

    split = split if split is not None else load_dataset(spec.dataset, data_dir)
    run_dir = run_dir_for(spec, split, root)
    ensure_directory(run_dir, "the run directory (--runs-dir / MLTFR_RUNS_DIR)")  # before training and the lock
    with run_lock(run_dir, log=log):
        stored = run_dir / "result.json"
        result = read_result(stored)  # None when missing, or invalid (named in a warning): resumed below
        if result is not None:  # finished while we waited for the lock (or before): read, never retrain
            result["run_dir"] = str(run_dir)
            if log:
                log(f"{run_dir.name}: already trained, result read from {stored}")
            if out:
                write_result(out, result)
            return result
        return _train_unlocked(spec, data_dir, out, root, progress, log, split)


def _train_unlocked(spec: RunSpec, data_dir: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                    root: str | os.PathLike | None = None, progress: bool = True, log=print, split=None) -> dict:
    """The training itself; only :func:`run_training` calls it, with the run's lock held."""
    split = split if split is not None else load_dataset(spec.dataset, data_dir)
    config = spec.to_dict(split.source_sha256)
    run_dir = run_dir_for(spec, split, root)  # checked (ensure_directory) by run_training, before its lock
    model, plugin = build_model(spec, split.n_items)
    if log:
        stats = split.stats()
        log(f"{split.name}: {stats['users']} users, {stats['items']} items, avg length {stats['avg_length']:.2f}; "
            f"{spec.backbone}{'+' + spec.plugin if plugin else ''}: "
            f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,} trainable parameters; run dir {run_dir}")
    if spec.plugin == "mltfr":
        from mltfrkit.mltfr import train_two_rounds

        built = [(model, plugin)]

        def build():
            return built.pop() if built else build_model(spec, split.n_items)

        result = train_two_rounds(build, split, spec.train, spec.mltfr_config(), run_dir, config,
                                  progress=progress, log=log)
    elif spec.schedule != "single":
        from mltfrkit.train.schedule import train_backbone_two_rounds

        built = [model]

        def build():
            return built.pop() if built else build_model(spec, split.n_items)[0]

        result = train_backbone_two_rounds(build, split.with_holdout(spec.train.holdout), spec.train, spec.schedule,
                                           run_dir, config, spec.round_selection, progress=progress, log=log)
    else:
        result = fit(model, split, spec.train, run_dir=run_dir, run_config=config, progress=progress, log=log)
    result["run_dir"] = str(run_dir)
    write_result(run_dir / "result.json", result)
    if out:
        write_result(out, result)
    return result


def spec_from_config(config: dict) -> RunSpec:
    """Rebuild a RunSpec from a stored result's (or checkpoint's) config."""
    train = dict(config["train"])
    train["ks"] = tuple(train["ks"])
    train.setdefault("patience_relative", 0.0)  # stored before the option existed (or at 0.0): plain patience
    return RunSpec(dataset=config["dataset"], backbone=config["backbone"], model=dict(config["model"]),
                   train=TrainConfig(**train), plugin=config.get("plugin", "none"),
                   plugin_options=dict(config.get("plugin_options") or {}),
                   schedule=config.get("schedule", "single"), round_selection=config.get("round_selection", "both"))


def load_trained(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None, rounds: int = 2):
    """(spec, split, model) of a finished or interrupted run, with its selected (best) weights:
    nothing is retrained. For MLTFR runs the consensus expert is rebuilt from round 1's weights
    and the stored Fisher estimate, then round 2's weights are loaded (``rounds=1``: stop after
    round 1). A w/o SC run recorded from a full run (``derived_from``) is that run's round 1."""
    from mltfrkit.train.checkpoint import load_checkpoint, load_torch

    run_dir = Path(run_dir)
    recorded = run_dir / "result.json"
    from mltfrkit.store import read_result

    stored = read_result(recorded)  # None when missing or invalid (named in a warning): the checkpoints alone
    if not (run_dir / "checkpoint.pt").exists() and stored and stored.get("derived_from"):
        _, split, model = load_trained(stored["derived_from"], data_dir, rounds=1)  # refuses if that was imported
        return spec_from_config(stored["config"]), split, model
    from mltfrkit.archive import refuse_if_imported

    refuse_if_imported(run_dir)  # an archived result has no weights, whatever checkpoints lie beside it
    if stored and stored.get("selected_round") == 1:  # round 1's checkpoint won over both rounds
        rounds = 1
    stages = [run_dir / "round1", run_dir / "round2"] if (run_dir / "round1").exists() else [run_dir]
    stages = stages[:rounds]
    stages = [s for s in stages if (s / "checkpoint.pt").exists()]
    if not stages:
        raise FileNotFoundError(f"no checkpoint under {run_dir}: train the run first (mltfrkit train ...)")
    first = load_checkpoint(stages[0] / "checkpoint.pt", map_location="cpu")
    spec = spec_from_config({k: v for k, v in first["config"].items() if k != "round"})
    split = load_dataset(spec.dataset, data_dir)
    trained_on = first["config"].get("data_sha256")
    if trained_on and trained_on != split.source_sha256:
        raise ValueError(f"{run_dir} was trained on another version of {spec.dataset}'s data file (sha256 "
                         f"{trained_on[:12]}..., the file read now: {split.source_sha256[:12]}...): point --data-dir "
                         f"at the file it was trained on, or train the run again on this one")
    split = split.with_holdout(spec.train.holdout)
    model, plugin = build_model(spec, split.n_items)
    for index, stage in enumerate(stages):
        saved = first if index == 0 else load_checkpoint(stage / "checkpoint.pt", map_location="cpu")
        if index == 1 and spec.plugin == "mltfr":
            from mltfrkit.mltfr import build_consensus

            fishers = load_torch(run_dir / "fisher.pt", what="Fisher estimate",
                                 remedy="delete it and re-run the training command, which recomputes it")
            plugin.set_consensus(build_consensus(plugin, fishers))
        model.load_state_dict(saved["state"]["best_state"] or saved["model"])
    model.eval()
    return spec, split, model
