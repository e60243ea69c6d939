"""The MixRec comparison as a table from the store: MixRec, MixRec_base, LLMRec beside SASRec and
SASRec + MLTFR on the same split, with the MixRec paper's metrics (NDCG@10, Recall@10, MRR; with one
held-out item Recall@10 = HR@10) and the MLTFR paper's (HR@20, NDCG@20). Issue 19, acceptance 2.

Profiles: ``cpu`` (the reduced scale this 2-core CPU trains; every reduction in :data:`CPU_REDUCTIONS`)
and ``paper`` (section 3.1.4 and Table 3). The backbone runs come from :class:`mltfrkit.experiments.Experiment`
(so a notebook's SASRec runs are reused); their MRR is computed from their stored best weights with the
same ranking code (nothing is retrained).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from mltfrkit.mixrec.model import MixRecConfig
from mltfrkit.mixrec.train import MixRecSpec, MixRecTrainConfig

# Against the paper (section 3.1.4, Table 3), for a 2-core CPU shared with other trainings.
CPU_REDUCTIONS = {
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
PROFILES = ("cpu", "paper")


def mixrec_spec(variant: str, dataset: str = "ml-100k", profile: str = "cpu", seed: int = 0,
                epochs: int | None = None, design: tuple[int, ...] | None = None, llm: str = "SmolLM2-135M",
                text: str = "titles") -> MixRecSpec:
    """One variant's run under a profile."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {list(PROFILES)}, not {profile!r}")
    if profile == "cpu":
        model = MixRecConfig(variant=variant, llm_layers=6, max_tokens=8, history_len=5, n_cl=2, max_align_items=8,
                             design=design)
        train = MixRecTrainConfig(epochs=epochs or 2, batch_size=8, lr=1e-3, precision="bfloat16", seed=seed,
                                  device="cpu", eval_batch=32, checkpoint_steps=20)
    else:
        model = MixRecConfig(variant=variant, design=design)
        train = MixRecTrainConfig(epochs=epochs or 40, seed=seed)
    return MixRecSpec(dataset, llm=llm, text=text, model=model, train=train)


def bo_spec(spec: MixRecSpec, user_fraction: float, epochs: int = 1) -> MixRecSpec:
    """A BO trial's base spec: Data_BO (a share of the users), validation MRR as the objective (2.3.3)."""
    return replace(spec, model=replace(spec.model, variant="mixrec"),
                   train=replace(spec.train, epochs=epochs, user_fraction=user_fraction, valid_metric="MRR"))


@torch.no_grad()
def backbone_metrics(run_dir, data_dir=None, ks=(5, 10, 20), batch: int = 256) -> dict[str, float]:
    """HR/NDCG@k and MRR on the test split of a stored backbone run, from its selected weights."""
    from mltfrkit.runs import load_trained
    from mltfrkit.train.metrics import metrics_from_ranks, pad_left, target_ranks

    spec, split, model = load_trained(run_dir, data_dir)
    histories, targets = split.eval_pairs("test")
    ranks = []
    for start in range(0, len(histories), batch):
        history = pad_left(histories[start:start + batch], model.config.max_len)
        scores = model.score_all(history)
        ranks.append(target_ranks(scores, torch.as_tensor(targets[start:start + batch])))
    ranks = torch.cat(ranks).numpy()
    out = metrics_from_ranks(ranks, ks)
    out["MRR"] = float((1.0 / (ranks + 1.0)).mean())
    return out


COLUMNS = ["NDCG@10", "HR@10", "MRR", "HR@20", "NDCG@20"]


def comparison_table(rows: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per model; ``HR@10`` shown as Recall@10 (one held-out item per user)."""
    frame = pd.DataFrame({name: {c: metrics.get(c, np.nan) for c in COLUMNS} for name, metrics in rows.items()}).T
    return frame.rename(columns={"HR@10": "Recall@10"})
