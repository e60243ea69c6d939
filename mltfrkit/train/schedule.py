"""Two rounds of training and the choice of the final model, shared by MLTFR (Algorithm 1) and the
schedule-matched baseline (issue "Where the paper's gain comes from", 2b): the backbone alone trained
with exactly MLTFR's schedule (round 1; round 2 from round 1's selected weights, or restarted, with
a fresh optimiser and the same stopping rule), so that a gain of MLTFR over W/O can be told apart
from a gain of a second round of training.

The final model is the best checkpoint over both rounds (``selection="both"``), or round 2's best
(``"round2"``, the MLTFR authors' code). Round 2 must beat round 1 strictly to replace it. The
value compared is the selection curve's best: validation NDCG@20, or the test curve under the
authors' holdout (which has no validation split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from mltfrkit.train.trainer import TrainConfig, fit

SCHEDULES = ("single", "two_round", "two_round_restart")


def round_summary(result: dict) -> dict:
    keep = ("best_epoch", "best_valid", "test", "test_oracle", "seconds", "epochs", "stopped_early")
    return {k: result[k] for k in keep if k in result}


def selection_value(result: dict, train: TrainConfig) -> float:
    """The value a round's best epoch was selected by (validation, or test under the authors' holdout)."""
    if train.holdout == "test":
        return result["test_oracle"]["metrics"][train.valid_metric]
    return result["best_valid"][train.valid_metric]


def merge_rounds(first: dict, second: dict, train: TrainConfig, selection: str = "both", log=None) -> dict:
    """One result from two rounds: the final model's figures, both rounds' summaries, and the test-selected
    figure (``test_oracle``) among the same candidates as the selection's."""
    if selection not in ("both", "round2"):
        raise ValueError(f"round selection must be 'both' or 'round2', not {selection!r}")
    result = dict(second)
    result.update({"rounds": 2, "round1": round_summary(first), "round2": round_summary(second),
                   "seconds": first["seconds"] + second["seconds"], "round_selection": selection,
                   "selected_round": 2})
    if selection == "both" and selection_value(first, train) >= selection_value(second, train):
        result["selected_round"] = 1
        for name in ("best_epoch", "best_valid", "test", "stopped_early"):
            result[name] = first[name]
    if "test_oracle" in second:
        candidates = [(2, second["test_oracle"])]
        if selection == "both":
            candidates.insert(0, (1, first["test_oracle"]))
        best_round, best = max(candidates, key=lambda c: c[1]["metrics"][train.valid_metric])
        result["test_oracle"] = {**best, "round": best_round}
    if log:
        log(f"final model: round {result['selected_round']}, epoch {result['best_epoch']} (round selection {selection})")
    return result


def train_backbone_two_rounds(build: Callable[[], torch.nn.Module], split, train: TrainConfig, schedule: str,
                              run_dir: str | Path | None, run_config: dict, selection: str = "both",
                              progress: bool = True, log=print) -> dict:
    """The schedule-matched baseline: MLTFR's two rounds for a backbone with no plug-in. ``build()``
    returns a freshly initialised, seeded model; ``two_round`` continues from round 1's selected weights
    (MLTFR's ``round2="continue"``), ``two_round_restart`` starts round 2 from new weights
    (``round2="restart"``)."""
    if schedule not in SCHEDULES[1:]:
        raise ValueError(f"schedule must be one of {list(SCHEDULES[1:])}, not {schedule!r}")
    run_dir = Path(run_dir) if run_dir else None
    model = build()
    first = fit(model, split, train, run_dir=run_dir / "round1" if run_dir else None,
                run_config={**run_config, "round": 1}, progress=progress, log=log)
    if schedule == "two_round_restart":
        model = build()
    second = fit(model, split, train, run_dir=run_dir / "round2" if run_dir else None,
                 run_config={**run_config, "round": 2}, progress=progress, log=log)
    return merge_rounds(first, second, train, selection, log)
