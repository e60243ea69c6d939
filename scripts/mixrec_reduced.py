"""MixRec, MixRec_base and LLMRec on ml-100k at a reduced scale this CPU can train, and the DAMoE
search (issue 19, acceptance 2). Every reduction against the paper (MixRec section 3.1.4, Table 3)
is in REDUCTIONS and printed first; every run is a result-store run, so an interrupted invocation
resumes where it stopped and a finished one trains nothing.

    OMP_NUM_THREADS=1 nohup python scripts/mixrec_reduced.py > /work/logs/mixrec_ml100k.log 2>&1 &

Order: LLMRec, MixRec_base, MixRec with the fixed all-serial design (the paper's "Variation 2"),
the BO search on Data_BO, then MixRec with the design BO chose. At the end, a table of the stored
runs (test NDCG@10, HR@10 = Recall@10 with one target, MRR, and HR/NDCG@20).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch

# Against the paper (section 3.1.4, Table 3), for a 2-core CPU shared with other trainings:
REDUCTIONS = {
    "llm": "SmolLM2-135M-Instruct, first 6 of its 30 layers (paper: OPT-125M, all 12 layers)",
    "max_tokens": "8 tokens per item sentence (paper: 30)",
    "history_len": "5 items per input sequence (the paper states none)",
    "epochs": "2 (paper: 40); lr 1e-3 peak (paper: 5e-5) to move in so few steps; warm-up 6% and cosine as the paper",
    "n_cl": "2 hard negatives per sampled item (paper: 5); n_s = 1 as the paper",
    "max_align_items": "8 extra L_align items per batch beyond the L_cl items",
    "batch_size": "8 (paper Table 3: 5-8)",
    "precision": "bf16 autocast (measured faster on this CPU: benchmarks/mixrec_speed.py)",
    "bo": "6 BO iterations, 3 random initial designs (paper: 30), 1 epoch per trial, Data_BO = 20% of users",
    "hard negatives": "text embeddings from the (truncated) SmolLM2 itself, not BERT-base (offline)",
}


def base_spec(variant: str, epochs: int):
    from mltfrkit.mixrec.model import MixRecConfig
    from mltfrkit.mixrec.train import MixRecSpec, MixRecTrainConfig

    return MixRecSpec("ml-100k", llm="SmolLM2-135M",
                      model=MixRecConfig(variant=variant, llm_layers=6, max_tokens=8, history_len=5, n_cl=2,
                                         max_align_items=8),
                      train=MixRecTrainConfig(epochs=epochs, batch_size=8, lr=1e-3, precision="bfloat16",
                                              device="cpu", eval_batch=32, checkpoint_steps=20))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--bo-iterations", type=int, default=6)
    parser.add_argument("--bo-init", type=int, default=3)
    parser.add_argument("--bo-users", type=float, default=0.2)
    parser.add_argument("--runs-dir", default=None)
    parser.add_argument("--stages", nargs="+", default=["llmrec", "mixrec_base", "mixrec", "search", "mixrec_bo"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("reductions:", json.dumps(REDUCTIONS, indent=1), flush=True)
    from mltfrkit.data import load_dataset
    from mltfrkit.mixrec.search import search_damoe
    from mltfrkit.mixrec.train import run_mixrec

    split = load_dataset("ml-100k")
    results = {}
    for stage in ("llmrec", "mixrec_base", "mixrec"):
        if stage in args.stages:
            results[stage] = run_mixrec(base_spec(stage, args.epochs), split=split, runs_dir=args.runs_dir,
                                        log=lambda m: print(m, flush=True))
            print(stage, "test", results[stage]["test"], flush=True)
    if "search" in args.stages or "mixrec_bo" in args.stages:
        bo = base_spec("mixrec", 1)
        bo = replace(bo, train=replace(bo.train, user_fraction=args.bo_users, valid_metric="MRR"))
        trials = search_damoe(bo, split, runs_dir=args.runs_dir, iterations=args.bo_iterations, n_init=args.bo_init,
                              log=lambda m: print(m, flush=True))
        design, value = trials.best()
        print(f"DAMoE design chosen by BO: {''.join(map(str, design))} (validation MRR on Data_BO {value:.5f}); "
              f"per layer (causal expert, context expert, rec adapter), 0 = serial, 1 = parallel", flush=True)
        if "mixrec_bo" in args.stages:
            spec = base_spec("mixrec", args.epochs)
            spec = replace(spec, model=replace(spec.model, design=design))
            results["mixrec_bo"] = run_mixrec(spec, split=split, runs_dir=args.runs_dir,
                                              log=lambda m: print(m, flush=True))
            print("mixrec (BO design) test", results["mixrec_bo"]["test"], flush=True)
    print("\n| model | NDCG@10 | Recall@10 | MRR | HR@20 | NDCG@20 |\n|---|---|---|---|---|---|")
    for name, result in results.items():
        t = result["test"]
        print(f"| {name} | {t['NDCG@10']:.4f} | {t['HR@10']:.4f} | {t['MRR']:.4f} | {t['HR@20']:.4f} | "
              f"{t['NDCG@20']:.4f} |")


if __name__ == "__main__":
    main()
