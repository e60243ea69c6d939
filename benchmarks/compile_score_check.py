#!/usr/bin/env python
"""``--compile score`` on trained runs: does compiled full-ranking scoring change a stored run's test metrics?

``TrainConfig.compile="score"`` compiles only ``score_all``, the call that full-ranking evaluation (validation
every epoch, the test split once) makes; training is eager, so the weights a run selects differ from an eager
run's only if a compiled validation score flips a selection. This script takes stored runs (their best
weights), evaluates the test split eagerly and with compiled scoring in the same process, and prints every
metric both ways, the largest difference over the seeds, and the seed-to-seed standard deviation of the eager
metrics (the noise a difference must stay within), plus the scoring time of both.

    MLTFR_RUNS_DIR=/work/runs python benchmarks/compile_score_check.py --data-dir ../shared/data \\
        --dataset Pantry --backbones sasrec bert4rec --profile paper

The last line reads ``SCORE_CHECK <backbone>=<largest |eager - compiled|>/<seed std> ...`` (NDCG@20).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def check(run_dir: str, data_dir: str | None) -> dict:
    from mltfrkit.runs import load_trained
    from mltfrkit.train.compiled import Steps
    from mltfrkit.train.metrics import evaluate

    _, split, model = load_trained(run_dir, data_dir)
    histories, targets = split.eval_pairs("test")
    out = {}
    for mode in (False, "score"):
        calls = Steps(model, mode)
        evaluate(model, histories[:256], targets[:256], score=calls.score)  # warm-up (compiles once)
        began = time.perf_counter()
        out[mode] = evaluate(model, histories, targets, score=calls.score)
        out[f"{mode} seconds"] = time.perf_counter() - began
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="Pantry")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--backbones", nargs="+", default=["sasrec", "bert4rec"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    from mltfrkit.experiments import Experiment

    torch.set_num_threads(args.threads)
    summary = []
    for backbone in args.backbones:
        experiment = Experiment(args.dataset, data_dir=args.data_dir, profile=args.profile, backbones=[backbone],
                                seeds=args.seeds, progress=False)
        rows = []
        for seed in args.seeds:
            result = experiment.store.get(experiment.spec(backbone, "none", seed=seed))
            if result is None:
                print(f"{backbone} seed {seed}: no stored run (train it first: mltfrkit sweep table2 ...)")
                continue
            rows.append(check(result["run_dir"], experiment.data_dir))
            eager, compiled = rows[-1][False], rows[-1]["score"]
            print(f"{backbone} seed {seed}: " + "  ".join(f"{k} {eager[k]:.5f}/{compiled[k]:.5f}" for k in eager)
                  + f"  scoring {rows[-1]['False seconds']:.2f}s/{rows[-1]['score seconds']:.2f}s", flush=True)
        if len(rows) >= 2:
            diff = max(abs(r[False][k] - r["score"][k]) for r in rows for k in r[False])
            std = statistics.stdev(r[False]["NDCG@20"] for r in rows)
            speed = statistics.median(r["False seconds"] / r["score seconds"] for r in rows)
            print(f"{backbone}: largest |eager - compiled| over {len(rows)} seeds and all metrics {diff:.2e}; "
                  f"seed std of NDCG@20 {std:.2e}; scoring eager/compiled {speed:.2f}x", flush=True)
            summary.append(f"{backbone}={diff:.1e}/{std:.1e}")
    print("SCORE_CHECK " + " ".join(summary))


if __name__ == "__main__":
    main()
