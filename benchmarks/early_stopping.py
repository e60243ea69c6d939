"""How often does early stopping stop on a plateau, and which stopping rule fixes it?

Trains each (dataset, seed) once with no early stopping (``patience = epochs``) and the test split
evaluated after every epoch, then replays stopping rules on the stored curves. The replay is exact:
training is deterministic given the seed and the epoch, so a run stopped by a rule at epoch e has
exactly the first e epochs of the full run, and its selected epoch is the best validation epoch
among them. Test figures at each rule's selected epoch are therefore what that rule would report.

    python benchmarks/early_stopping.py --datasets ml-100k Pantry Beauty --seeds 0 1 2 \\
        --data-dir ../shared/data --epochs 100 --threads 1

Runs go to the result store (``--runs-dir``, else ``$MLTFR_RUNS_DIR``), so a second invocation
trains nothing and an interrupted one resumes. A "plateau stop" is a rule whose selected validation
NDCG@20 is below ``--plateau`` (default 0.95) of the best validation NDCG@20 the full curve reaches.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Rule:
    name: str
    stop: Callable[[list[float]], int]  # validation curve -> the epoch (1-based) training stops after


def patience_rule(patience: int, min_epochs: int = 0, smooth: float | None = None,
                  relative: float | None = None) -> Callable[[list[float]], int]:
    """Stop after ``patience`` epochs without improving the best (raw, or EMA-smoothed with weight
    ``smooth`` on the newest epoch) validation value, never before ``min_epochs``. ``relative``: the
    patience grows to ``relative x best epoch`` when that is larger."""
    if smooth is None:  # the trainer's own rule, so the replay cannot drift from what training does
        from mltfrkit.train import TrainConfig

        config = TrainConfig(patience=patience, patience_relative=relative or 0.0, min_epochs=min_epochs)

        def stop_as_trained(curve: list[float]) -> int:
            best, best_epoch = -np.inf, 0
            for epoch, value in enumerate(curve, start=1):
                if value > best:
                    best, best_epoch = value, epoch
                if config.should_stop(epoch, best_epoch):
                    return epoch
            return len(curve)
        return stop_as_trained

    def stop(curve: list[float]) -> int:
        best, best_epoch, level = -np.inf, 0, None
        for epoch, value in enumerate(curve, start=1):
            level = value if level is None or smooth is None else smooth * value + (1 - smooth) * level
            if level > best:
                best, best_epoch = level, epoch
            wait = patience if relative is None else max(patience, int(np.ceil(relative * best_epoch)))
            if epoch - best_epoch >= wait and epoch >= min_epochs:
                return epoch
        return len(curve)
    return stop


RULES = [
    Rule("patience 10 (plain; the default before)", patience_rule(10)),
    Rule("patience 20", patience_rule(20)),
    Rule("min 20 epochs, patience 10", patience_rule(10, min_epochs=20)),
    Rule("min 30 epochs, patience 10", patience_rule(10, min_epochs=30)),
    Rule("patience 10 on EMA(0.3)", patience_rule(10, smooth=0.3)),
    Rule("patience max(10, best epoch) (default)", patience_rule(10, relative=1.0)),
]


def replay(result: dict, rule: Rule, metric: str = "NDCG@20") -> dict:
    epochs = result["epochs"]
    curve = [e["valid"][metric] for e in epochs]
    stopped = rule.stop(curve)
    seen = curve[:stopped]
    selected = int(np.argmax(seen)) + 1  # the first of equal values, as the trainer's strict improvement
    return {"stopped": stopped, "selected": selected, "valid": seen[selected - 1],
            "test": epochs[selected - 1]["test"][metric], "best_valid_full": max(curve)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "Pantry", "Beauty"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--backbone", default="sasrec")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--runs-dir", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plateau", type=float, default=0.95)
    parser.add_argument("--train-only", action="store_true", help="train missing runs, print no analysis")
    parser.add_argument("--out", default=None, help="CSV of every (run, rule) replay")
    args = parser.parse_args(argv)

    import torch

    from mltfrkit.runs import RunSpec
    from mltfrkit.store import ResultStore
    from mltfrkit.train import TrainConfig

    torch.set_num_threads(args.threads)
    store = ResultStore(args.runs_dir, data_dir=args.data_dir, progress=False)
    rows = []
    for dataset in args.datasets:
        for seed in args.seeds:
            # No early stopping: patience = epochs under plain patience (the relative default would wait as
            # long; plain keeps the keys of the curves stored before it became the default)
            spec = RunSpec(dataset, args.backbone, train=TrainConfig(epochs=args.epochs, patience=args.epochs,
                                                                      patience_relative=0.0, seed=seed,
                                                                      test_every_epoch=True))
            result = store.ensure(spec)
            if args.train_only:
                continue
            for rule in RULES:
                rows.append({"dataset": dataset, "seed": seed, "rule": rule.name, **replay(result, rule)})
    if args.train_only:
        return
    frame = pd.DataFrame(rows)
    frame["plateau stop"] = frame["valid"] < args.plateau * frame["best_valid_full"]
    if args.out:
        frame.to_csv(args.out, index=False)
    pd.set_option("display.width", 200)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.5f}"))
    summary = frame.groupby(["rule", "dataset"], sort=False).agg(
        plateau_stops=("plateau stop", "sum"), runs=("seed", "size"), epochs_trained=("stopped", "mean"),
        selected_epoch=("selected", "mean"), test_mean=("test", "mean"), test_std=("test", "std"))
    print()
    print(summary.to_string(float_format=lambda v: f"{v:.5f}"))


if __name__ == "__main__":
    main()
