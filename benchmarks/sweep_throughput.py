#!/usr/bin/env python
"""Grid throughput: the same grid trained by the sequential executor, by ``processes`` and by ``ray``.

    python benchmarks/sweep_throughput.py --data-dir ../shared/data                # the paper profile's epochs
    python benchmarks/sweep_throughput.py --data-dir ../shared/data --epochs 3     # a quick measurement

The grid: ``--sasrec-runs`` Pantry SASRec runs (seeds 0..N-1) plus ``--mltfr-runs`` SASRec + MLTFR runs
in the cheap setting (4 offline experts, ``max_vocab=2000``, ``precision=bfloat16``, Fisher on 256
users; README "Making MLTFR cheap"), with the paper profile's patience. Each executor trains the whole
grid into a fresh store of its own (a temporary directory, removed afterwards), so every executor
trains every run. The sequential baseline is the behaviour before executors (``local``: one run
after another in this process, torch's default thread count); the parallel ones use ``--workers``
workers of ``--threads`` thread(s). Prints each executor's wall time and runs per hour, whether its
test metrics equal the baseline's seed for seed (they can differ in the last bits when the thread
count differs, as it does by default), the load average, and finally

    RATIOS processes=<sequential wall / processes wall> ray=<sequential wall / ray wall>
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def grid(args) -> list:
    from mltfrkit.experiments import PROFILES
    from mltfrkit.runs import RunSpec
    from mltfrkit.train import TrainConfig

    paper = PROFILES["paper"]
    epochs = args.epochs or paper.epochs

    def train(seed):
        return TrainConfig(epochs=epochs, patience=paper.patience, seed=seed, device="cpu")

    cheap = {"llms": paper.llms, **paper.mltfr, "max_vocab": 2000, "precision": "bfloat16"}
    return ([RunSpec(args.dataset, "sasrec", train=train(seed)) for seed in range(args.sasrec_runs)]
            + [RunSpec(args.dataset, "sasrec", train=train(seed), plugin="mltfr", plugin_options=cheap)
               for seed in range(args.mltfr_runs)])


def measure(name: str, args, specs) -> tuple[float, list[dict]]:
    from mltfrkit.executors import make_executor
    from mltfrkit.store import ResultStore

    root = Path(tempfile.mkdtemp(prefix=f"sweep-{name}-"))
    try:
        if name == "local":
            executor = make_executor("local")
        else:
            executor = make_executor(name, workers=args.workers, threads=args.threads)
        store = ResultStore(root, args.data_dir, progress=not args.no_progress, log=None, executor=executor)
        store.split(args.dataset)  # prepared once before timing (cached on disk for the workers too)
        started = time.perf_counter()
        results = store.ensure_many(specs, desc=f"{name} ({executor!r})")
        wall = time.perf_counter() - started
        if name == "ray":
            import ray

            ray.shutdown()
        return wall, results
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dataset", default="Pantry")
    parser.add_argument("--sasrec-runs", type=int, default=8)
    parser.add_argument("--mltfr-runs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=None, help="default: the paper profile's (100, early stopping)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--executors", nargs="+", default=["local", "processes", "ray"],
                        help="local (the sequential baseline) is always measured first")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    import torch

    specs = grid(args)
    names = ["local"] + [n for n in args.executors if n != "local"]
    print(f"grid: {args.sasrec_runs} {args.dataset} SASRec + {args.mltfr_runs} SASRec+MLTFR (cheap) runs, "
          f"epochs {args.epochs or 'paper profile'}; {os.cpu_count()} cores; sequential at {torch.get_num_threads()} "
          f"thread(s), parallel {args.workers} workers x {args.threads} thread(s); "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    walls, reference = {}, None
    for name in names:
        wall, results = measure(name, args, specs)
        walls[name] = wall
        same = "" if reference is None else \
            f"; test metrics {'equal to' if all(a['test'] == b['test'] for a, b in zip(results, reference)) else 'differ from'} sequential's"
        reference = reference or results
        epochs = sum(len(r["epochs"]) for r in results)
        print(f"{name:10s} {wall:8.1f} s  {len(specs) / wall * 3600:7.1f} runs/h  ({epochs} epochs in all{same}; "
              f"load average {os.getloadavg()[0]:.2f})", flush=True)
    ratios = " ".join(f"{name}={walls['local'] / walls[name]:.2f}" for name in names if name != "local")
    print(f"RATIOS {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
