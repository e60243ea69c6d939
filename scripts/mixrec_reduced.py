"""MixRec, MixRec_base and LLMRec on ml-100k at a reduced scale this CPU can train, and the DAMoE
search (issue 19, acceptance 2). Every reduction against the paper (MixRec section 3.1.4, Table 3)
is in mltfrkit.mixrec.experiment.CPU_REDUCTIONS and printed first; every run is a result-store run, so an interrupted invocation
resumes where it stopped and a finished one trains nothing.

    OMP_NUM_THREADS=1 nohup python scripts/mixrec_reduced.py > /work/logs/mixrec_ml100k.log 2>&1 &

Order: LLMRec, MixRec_base, MixRec with the fixed all-serial design (the paper's "Variation 2"),
the BO search on Data_BO, then MixRec with the design BO chose. At the end, a table of the stored
runs (test NDCG@10, HR@10 = Recall@10 with one target, MRR, and HR/NDCG@20). The same table, with std, paired
tests, BO's trials and the Fig. 5 ablation, from the same stored runs: notebooks/mixrec.ipynb
(papermill ... -p profile cpu -p seeds '[0,1,2]' -p train_missing False).
"""

from __future__ import annotations

import argparse
import json
import numpy as np
import torch

from mltfrkit.mixrec.experiment import BO_SETTINGS

BO = BO_SETTINGS["cpu"]  # the notebook's (notebooks/mixrec.ipynb) cpu profile reads the same search


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--bo-iterations", type=int, default=BO["iterations"])
    parser.add_argument("--bo-init", type=int, default=BO["n_init"])
    parser.add_argument("--bo-users", type=float, default=BO["user_fraction"])
    parser.add_argument("--runs-dir", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--stages", nargs="+",
                        default=["llmrec", "mixrec_base", "mixrec", "search", "mixrec_bo", "baselines"])
    parser.add_argument("--baseline-epochs", type=int, default=100,
                        help="SASRec / SASRec + MLTFR epochs (early stopping as the toolkit's default)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from mltfrkit.data import load_dataset
    from mltfrkit.mixrec.experiment import CPU_REDUCTIONS, bo_spec, comparison_table, mixrec_spec
    from mltfrkit.mixrec.search import search_damoe
    from mltfrkit.mixrec.train import run_mixrec

    print("reductions:", json.dumps(CPU_REDUCTIONS, indent=1), flush=True)

    split = load_dataset("ml-100k")
    results: dict[str, list[dict]] = {}  # model -> test metrics per seed

    def log(message):
        print(message, flush=True)

    for stage in ("llmrec", "mixrec_base", "mixrec"):
        if stage in args.stages:
            for seed in args.seeds:
                result = run_mixrec(mixrec_spec(stage, seed=seed, epochs=args.epochs), split=split,
                                    runs_dir=args.runs_dir, log=log)
                results.setdefault(stage, []).append(result["test"])
                log(f"{stage} seed {seed} test {result['test']}")
    if "search" in args.stages or "mixrec_bo" in args.stages:
        bo = bo_spec(mixrec_spec("mixrec", seed=BO["seed"]), args.bo_users, BO["epochs"])
        trials = search_damoe(bo, split, runs_dir=args.runs_dir, iterations=args.bo_iterations, n_init=args.bo_init,
                              seed=BO["seed"], log=log)
        design, value = trials.best()
        log(f"DAMoE design chosen by BO: {''.join(map(str, design))} (validation MRR on Data_BO {value:.5f}); "
            f"per layer (causal expert, context expert, rec adapter), 0 = serial, 1 = parallel")
        if "mixrec_bo" in args.stages:
            for seed in args.seeds:
                result = run_mixrec(mixrec_spec("mixrec", seed=seed, epochs=args.epochs, design=design), split=split,
                                    runs_dir=args.runs_dir, log=log)
                results.setdefault("mixrec (BO design)", []).append(result["test"])
                log(f"mixrec (BO design) seed {seed} test {result['test']}")
    if "baselines" in args.stages:  # the toolkit's SASRec and SASRec + MLTFR (quick profile + CPU_BACKBONE_MLTFR)
        from mltfrkit.experiments import Experiment
        from mltfrkit.mixrec.experiment import backbone_metrics

        from mltfrkit.mixrec.experiment import CPU_BACKBONE_MLTFR

        experiment = Experiment("ml-100k", profile="quick", epochs=args.baseline_epochs, runs_dir=args.runs_dir,
                                device="cpu", progress=False, mltfr_options=CPU_BACKBONE_MLTFR)
        for seed in args.seeds:
            for name, spec in (("sasrec", experiment.spec("sasrec", seed=seed)),
                               ("sasrec+mltfr", experiment.spec("sasrec", "mltfr", seed=seed))):
                result = experiment.store.ensure(spec)
                results.setdefault(name, []).append(backbone_metrics(result["run_dir"]))
                log(f"{name} seed {seed} test {results[name][-1]}")
    log(f"test metrics, mean over seeds {args.seeds} (std in the second table):")
    log(comparison_table(mean_over_seeds(results, np.mean)).to_string(float_format="%.4f"))
    if len(args.seeds) > 1:
        log(comparison_table(mean_over_seeds(results, np.std)).to_string(float_format="%.4f"))


def mean_over_seeds(results, reduce):
    return {name: {key: float(reduce([r[key] for r in runs])) for key in runs[0]} for name, runs in results.items()}

if __name__ == "__main__":
    main()
