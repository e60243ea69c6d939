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
from mltfrkit.paths import cache_dir
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

    def __post_init__(self):
        if self.plugin not in PLUGINS:
            raise ValueError(f"unknown plugin {self.plugin!r}; valid: {', '.join(PLUGINS)}")
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
        if self.plugin == "mltfr":
            out["plugin_options"] = self.mltfr_config().to_dict()
        if self.plugin != "none":
            from mltfrkit.mltfr.tables import table_reference

            out["token_tables"] = [table_reference(name) for name in self.token_sources()]
        return out

    def key(self, data_sha256: str) -> str:
        payload = json.dumps(self.to_dict(data_sha256), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


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

    split = split if split is not None else load_dataset(spec.dataset, data_dir)
    run_dir = run_dir_for(spec, split, root)
    with run_lock(run_dir, log=log):
        stored = run_dir / "result.json"
        if stored.exists():  # finished while we waited for the lock (or before): read, never retrain
            result = json.loads(stored.read_text())
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
    run_dir = run_dir_for(spec, split, root)
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
    return RunSpec(dataset=config["dataset"], backbone=config["backbone"], model=dict(config["model"]),
                   train=TrainConfig(**train), plugin=config.get("plugin", "none"),
                   plugin_options=dict(config.get("plugin_options") or {}))


def load_trained(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None, rounds: int = 2):
    """(spec, split, model) of a finished or interrupted run, with its selected (best) weights:
    nothing is retrained. For MLTFR runs the consensus expert is rebuilt from round 1's weights
    and the stored Fisher estimate, then round 2's weights are loaded (``rounds=1``: stop after
    round 1). A w/o SC run recorded from a full run (``derived_from``) is that run's round 1."""
    import torch

    run_dir = Path(run_dir)
    recorded = run_dir / "result.json"
    if not (run_dir / "checkpoint.pt").exists() and recorded.exists():
        stored = json.loads(recorded.read_text())
        if stored.get("derived_from"):
            _, split, model = load_trained(stored["derived_from"], data_dir, rounds=1)
            return spec_from_config(stored["config"]), split, model
    stages = [run_dir / "round1", run_dir / "round2"] if (run_dir / "round1").exists() else [run_dir]
    stages = stages[:rounds]
    stages = [s for s in stages if (s / "checkpoint.pt").exists()]
    if not stages:
        raise FileNotFoundError(f"no checkpoint under {run_dir}: train the run first (mltfrkit train ...)")
    first = torch.load(stages[0] / "checkpoint.pt", map_location="cpu", weights_only=False)
    spec = spec_from_config({k: v for k, v in first["config"].items() if k != "round"})
    split = load_dataset(spec.dataset, data_dir)
    trained_on = first["config"].get("data_sha256")
    if trained_on and trained_on != split.source_sha256:
        raise ValueError(f"{run_dir} was trained on another version of {spec.dataset}'s data file (sha256 "
                         f"{trained_on[:12]}..., the file read now: {split.source_sha256[:12]}...): point --data-dir "
                         f"at the file it was trained on, or train the run again on this one")
    model, plugin = build_model(spec, split.n_items)
    for index, stage in enumerate(stages):
        saved = first if index == 0 else torch.load(stage / "checkpoint.pt", map_location="cpu", weights_only=False)
        if index == 1:
            from mltfrkit.mltfr import build_consensus

            plugin.set_consensus(build_consensus(plugin, torch.load(run_dir / "fisher.pt", weights_only=True)))
        model.load_state_dict(saved["state"]["best_state"] or saved["model"])
    model.eval()
    return spec, split, model
