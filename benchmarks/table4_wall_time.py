#!/usr/bin/env python
"""Wall time of one dataset's Table 4 comparison (issue: "the ml-100k comparison must finish within 30
minutes on this CPU"), the LLM recomputed from scratch in a temporary cache.

Scores the stored ID runs on the pools (cached per run after the first time: a second call reads them), then
runs both LLM variants of the offline SmolLM2-135M-Instruct over every pooled user into a temporary store, so
nothing cached is reused. Prints each part's seconds, users/s and the LLM's figures.

    MLTFR_RUNS_DIR=/work/runs python benchmarks/table4_wall_time.py --data-dir ../shared/data \\
        --dataset ml-100k --users 400 [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--backbones", nargs="+", default=["sasrec", "bert4rec"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--mltfr-options", type=json.loads, default={"max_vocab": 2000})
    parser.add_argument("--pool", type=int, default=20)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    import torch

    from mltfrkit.data.text import item_titles
    from mltfrkit.experiments import Experiment
    from mltfrkit.llmrec import OFFLINE_MODEL, make_backend, run_llm_on_pools
    from mltfrkit.train.pools import PoolSpec, make_pools

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}", flush=True)
    pool = PoolSpec(size=args.pool, sampling="uniform", seed=0, max_users=args.users)
    began = time.perf_counter()
    experiment = Experiment(args.dataset, data_dir=args.data_dir, profile=args.profile, backbones=args.backbones,
                            seeds=args.seeds, mltfr_options=args.mltfr_options, progress=False)
    ids = experiment.table4(pool, variants=())
    id_seconds = time.perf_counter() - began
    print(ids[["method", "top1", "seeds"]].to_string(index=False), flush=True)
    print(f"ID rows (pool scoring of the stored runs): {id_seconds:.0f} s", flush=True)
    text = item_titles(experiment.split, experiment.data_dir)
    backend = make_backend(OFFLINE_MODEL, dtype="bfloat16")
    with tempfile.TemporaryDirectory() as root:
        result = run_llm_on_pools(experiment.split, text, make_pools(experiment.split, pool), backend, root=root,
                                  progress=False)
    llm_seconds = time.perf_counter() - began - id_seconds
    print({variant: {"top1": m["top1"], "invalid_rate": m["invalid_rate"]} for variant, m in result["metrics"].items()})
    print(f"LLM, both variants, from scratch: {llm_seconds:.0f} s ({result['users_per_second']:.3f} users/s); "
          f"WALL {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
