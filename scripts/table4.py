"""Table 4 (RQ4) from the command line: the notebook's table for one or more datasets, printed.

    MLTFR_RUNS_DIR=/work/runs python scripts/table4.py --datasets ml-100k --profile paper \\
        --backbones sasrec bert4rec --seeds 0 1 2 --mltfr-options '{"max_vocab": 2000}' --max-users 300

Stored runs are read and scored on the pools (nothing is trained unless --train-missing); the LLM's
answers are cached in the result store, so a second invocation only reads. MixRec rows (``--mixrec mixrec
mixrec_base llmrec mixrec:bo``) come from the stored MixRec runs of ``--mixrec-profile`` and the same seeds,
in ``--mixrec-runs-dir`` when they live in another store than the ID runs (trained only with
``--mixrec-train-missing``):

    MLTFR_RUNS_DIR=/work/runs python scripts/table4.py --datasets ml-100k --profile paper --backbones sasrec \
        --seeds 0 1 2 --mltfr-options '{"max_vocab": 2000}' --max-users 400 \
        --mixrec mixrec --mixrec-runs-dir ~/.cache/mltfrkit/runs
"""

from __future__ import annotations

import argparse
import json

import pandas as pd

from mltfrkit.experiments import Experiment
from mltfrkit.train.pools import PoolSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ml-100k"])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--backbones", nargs="+", default=["sasrec", "bert4rec"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--mltfr-options", type=json.loads, default=None)
    parser.add_argument("--pool", type=int, default=20)
    parser.add_argument("--pool-sampling", default="uniform")
    parser.add_argument("--pool-seed", type=int, default=0)
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--llm", default=None, help="model name, folder, .gguf or hub id (default: SmolLM2 offline)")
    parser.add_argument("--llm-dtype", default="bfloat16")
    parser.add_argument("--base-url", default=None, help="an OpenAI-compatible endpoint serving --llm")
    parser.add_argument("--variants", nargs="*", default=["generation", "likelihood"])
    parser.add_argument("--titles-file", default=None)
    parser.add_argument("--train-missing", action="store_true")
    parser.add_argument("--runs-dir", default=None, help="the ID runs' store (default: $MLTFR_RUNS_DIR, else <cache>/runs)")
    parser.add_argument("--mixrec", nargs="*", default=[],
                        help="MixRec variants to add: llmrec, mixrec_base, mixrec, mixrec:<bits>, mixrec:bo")
    parser.add_argument("--mixrec-profile", default="cpu", choices=["cpu", "paper"])
    parser.add_argument("--mixrec-runs-dir", default=None, help="the MixRec runs' store (default: --runs-dir's)")
    parser.add_argument("--mixrec-llm", default="SmolLM2-135M")
    parser.add_argument("--mixrec-train-missing", action="store_true", help="train missing MixRec runs (minutes each at the cpu profile)")
    parser.add_argument("--out", default=None, help="write the table as CSV here")
    args = parser.parse_args()
    pool = PoolSpec(size=args.pool, sampling=args.pool_sampling, seed=args.pool_seed, max_users=args.max_users)
    tables = []
    for dataset in args.datasets:
        experiment = Experiment(dataset, data_dir=args.data_dir, profile=args.profile, backbones=args.backbones,
                                seeds=args.seeds, mltfr_options=args.mltfr_options, runs_dir=args.runs_dir)
        tables.append(experiment.table4(pool, llm_model=args.llm, variants=tuple(args.variants),
                                        titles_file=args.titles_file, llm_dtype=args.llm_dtype,
                                        base_url=args.base_url, train_missing=args.train_missing,
                                        mixrec=args.mixrec, mixrec_profile=args.mixrec_profile,
                                        mixrec_runs_dir=args.mixrec_runs_dir, mixrec_llm=args.mixrec_llm,
                                        mixrec_train_missing=args.mixrec_train_missing))
    table = pd.concat(tables, ignore_index=True)
    columns = [c for c in ("dataset", "method", "top1", "ci_low", "ci_high", "invalid_rate", "HR@5", "NDCG@5",
                           "users", "seeds", "missing seeds", "users_per_second", "paper") if c in table]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(table["pool"].iloc[0])
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
