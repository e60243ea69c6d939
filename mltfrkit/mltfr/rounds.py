"""Two-round training (Algorithm 1): round 1 trains backbone, experts and gate; the Fisher
information of each expert is estimated and the consensus expert built; round 2 trains again
with the consensus expert frozen. By default round 2 continues from round 1's selected weights
(Algorithm 1 runs the rounds one after the other); ``round2="restart"`` re-initialises everything
but the consensus expert, as the authors' code does. Each round is an ordinary resumable
``fit`` in its own directory, and the Fisher estimate is stored between them, so an interrupted
run resumes in whichever round it stopped.

The final model (``round_selection="both"``, default) is the best validation checkpoint over both
rounds: Algorithm 1 does not ask to discard round 1's optimum, and round 2 that starts from it with a
fresh optimiser often only over-trains. The result records ``selected_round`` and that round's best
epoch. ``round_selection="round2"`` reports round 2's best only (the authors' code). Under the
authors' holdout (no validation split) the same choice is made on the test curve."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import torch

from mltfrkit.mltfr.consensus import build_consensus, expert_fisher, fisher_samples
from mltfrkit.mltfr.plugin import MLTFRConfig, MLTFRPlugin
from mltfrkit.train import TrainConfig, fit
from mltfrkit.train.checkpoint import CheckpointError, load_torch, save_torch
from mltfrkit.train.schedule import merge_rounds


def _stored_fisher(path: Path, log) -> list | None:
    """The stored Fisher estimate, or None (recomputed) when it is unreadable: it is derived data."""
    try:
        fishers = load_torch(path, what="Fisher estimate", remedy="it is recomputed")
        if isinstance(fishers, (list, dict)):  # one {parameter name: tensor} per expert
            return fishers
        problem = f"{path}: not a Fisher estimate (a {type(fishers).__name__}); it is recomputed"
    except CheckpointError as error:
        problem = str(error)
    warnings.warn(problem, stacklevel=3)
    if log:
        log(problem)
    return None


def train_two_rounds(build: Callable[[], tuple[torch.nn.Module, MLTFRPlugin]], split, train: TrainConfig,
                     config: MLTFRConfig, run_dir: str | Path | None, run_config: dict, progress: bool = True,
                     log=print) -> dict:
    """``build()`` returns a freshly initialised (model, plugin) with the plug-in attached."""
    run_dir = Path(run_dir) if run_dir else None
    model, plugin = build()
    split = split.with_holdout(train.holdout)
    first = fit(model, split, train, run_dir=run_dir / "round1" if run_dir else None,
                run_config={**run_config, "round": 1}, progress=progress, log=log)
    group = plugin.consensus_group()
    if not config.consensus or not group:
        first["rounds"] = 1
        first["consensus"] = None if config.consensus else "disabled"
        if config.consensus and log:
            log("no two experts share a width: no consensus expert, one round only")
        return first

    fisher_file = run_dir / "fisher.pt" if run_dir else None
    fishers = _stored_fisher(fisher_file, log) if fisher_file and fisher_file.exists() else None
    if fishers is None:
        histories, targets = fisher_samples(split.train_sequences(), config.fisher_samples, model.config.max_len,
                                            seed=train.seed)
        fishers = expert_fisher(model, plugin, histories, targets, labels=config.fisher_labels, seed=train.seed)
        if fisher_file:
            save_torch(fisher_file, fishers)  # unique temporary name, fsync, rename
    consensus = build_consensus(plugin, fishers)
    if log:
        names = [plugin.experts[m].name for m in consensus.members]
        shown = first["test"] or first["test_oracle"]["metrics"]
        log(f"round 1 done (test NDCG@20 {shown['NDCG@20']:.5f}); consensus expert over {names}")
    if config.round2 == "restart":
        model, plugin = build()
    plugin.set_consensus(consensus)
    second = fit(model, split, train, run_dir=run_dir / "round2" if run_dir else None,
                 run_config={**run_config, "round": 2}, progress=progress, log=log)
    result = merge_rounds(first, second, train, config.round_selection, log)
    result["consensus"] = {"members": [plugin.experts[m].name for m in consensus.members],
                           "fisher_mean": [float(sum(float(f.detach().sum()) for f in fishers[m].values()) /
                                                 sum(f.numel() for f in fishers[m].values()))
                                           for m in consensus.members]}
    return result
