"""Every claim of the MLTFR paper, measured: the paper's sentence, its own evidence, ours, and a verdict.

The claims (issue "Every claim of the paper, measured"), each quoted verbatim from the paper's text in
:data:`CLAIMS`, and the comparison that tests it, computed from the result store by the existing
:class:`~mltfrkit.experiments.Experiment` functions (nothing here trains, scores or summarises a run itself):

====  ===========================  ==================================================================  ========
claim  where                        comparison (per dataset and backbone unless said)                   settings
====  ===========================  ==================================================================  ========
1      Fig. 1                       LLM-TE vs LLM-RE per token source (``te_vs_re``)                    all
2      Fig. 1                       LLM-TE and LLM-RE each vs W/O, per source (``te_vs_re``)            all
3a     Table 2, section 4.2         MLTFR vs W/O, every backbone (``table2``)                           all
3b     Table 2, section 4.2         BERT4Rec's Imp. vs each other backbone's, per dataset (``table2``)   all
3c     Table 2, section 4.2         Pantry's Imp. (mean over backbones) vs each other dataset's          all
4      Table 3, section 4.3         Full vs w/o SC (``ablation``)                                       most
5      Fig. 3, section 4.4          rank correlation of NDCG@20 with m over seeds (``expert_sweep``)     most
6      section 2.1                  relevance of the selected tokens, per expert (``relevance_report``)  all
7      Appendix A                   MLTFR / backbone step time, evaluation time, memory (benchmark)      all
8      Table 4, section 4.5         ID + MLTFR vs the text-prompted LLM, top-1 (``table4``)              all
====  ===========================  ==================================================================  ========

Each comparison gets an outcome and each set of comparisons a verdict by one rule, :data:`RULE`
(:func:`outcome`, :func:`verdict`). Two columns of evidence where they apply: our default protocol
(validation selection) and the authors' configuration (``Experiment(configuration="authors")``), whose
figures are test-selected; the latter is labelled :data:`OPTIMISTIC` and never enters the default verdict.

With ``train_missing=False`` (the default) nothing is trained: a row whose runs are not all stored says
"not measured (k of n runs stored)", and every Experiment gets an executor that refuses to train
(:class:`ReadOnlyExecutor`), so a mistake here fails loudly instead of starting a training. The runs a dataset
needs are :func:`claims_grid` (``Experiment.grid("claims")``, ``mltfrkit sweep claims``).
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mltfrkit.archive import WeightsNotArchived
from mltfrkit.experiments import (PAPER_TABLE2, PAPER_TABLE3, PAPER_TABLE4, Experiment, improvement, list_parameter,
                                  paired_p)
from mltfrkit.store import at_epoch_cap  # noqa: F401  (re-exported: the claims' runs column counts by it)

ALPHA = 0.05
MIN_SEEDS = 3  # a test over seeds needs at least three of them (paired_p's own threshold)
FOCUS_BACKBONES = ("sasrec", "bert4rec")  # the backbones of every claim that is not about backbones
DATASETS = ("Pantry", "ml-100k", "Beauty")
DATASET_BACKBONES = {"Beauty": ["sasrec", "bert4rec"]}  # datasets measured on fewer backbones (CPU budget)
ORDER_OF_MAGNITUDE = 10.0  # Appendix A: "within the same order of magnitude" = less than 10x the backbone
OPTIMISTIC = "test-selected (optimistic)"
METRIC = "NDCG@20"  # the metric every paired test runs on (as in the toolkit's other tables)

# Outcomes of one comparison, and verdicts of a set of them.
SUPPORTS, REFUTES, INCONCLUSIVE, NOT_MEASURED, NOT_APPLICABLE = (
    "supports", "refutes", "inconclusive", "not measured", "not applicable")
SUPPORTED, NOT_SUPPORTED, MIXED = "supported", "not supported", "mixed"

RULE = f"""\
One comparison: it SUPPORTS the claim when it is significant in the claimed direction, REFUTES it when it is
significant in the other direction, and is INCONCLUSIVE otherwise. Significant = a two-sided test over seeds with
p < {ALPHA} (paired t-test on {METRIC} for two sets of runs on the same seeds; Welch's t-test on the per-seed
Imp. when two backbones or datasets are compared; a one-sample t-test on the per-seed rank correlation for a
trend), each needing at least {MIN_SEEDS} seeds (fewer: inconclusive); or, where the evidence is an interval, the
95% interval lying wholly on one side of the null (Table 4: the two top-1 intervals do not overlap; Appendix A:
the bootstrap interval of the time ratio against {ORDER_OF_MAGNITUDE:g}x, a single memory or evaluation figure
deciding by its value). Section 2.1 uses the diagnostics' relevance verdict (mltfrkit.mltfr.diagnostics.RELEVANCE_RULE):
"relevant" supports, "below chance" refutes, "chance" and "barely above chance" are inconclusive. A comparison is
NOT MEASURED while any of its runs (or its stored measurement) is missing, and NOT APPLICABLE when the data cannot answer it
(no item titles, no second dataset).
A set of comparisons (a row of the table, or a whole claim): drop the not-applicable ones; if any of the rest is not
measured, the verdict is NOT MEASURED (k of n runs stored); if none is left, not applicable. Otherwise, of n comparisons
with s supporting and r refuting, and need = n for a claim about every setting ("all") or the smallest majority
n // 2 + 1 for a claim about most settings ("most"): SUPPORTED if s >= need; NOT SUPPORTED if s = 0 or
r > n - need (for "all": any refutation); MIXED otherwise. "So far" applies the same rule to the measured
comparisons only. The authors' configuration is judged by the same rule in its own column, labelled
"{OPTIMISTIC}" (its model selection reads the test set), and never enters the default verdict."""


def outcome(difference: float, p: float | None = None, low: float | None = None, high: float | None = None,
            direction: int = 1, null: float = 0.0, alpha: float = ALPHA) -> str:
    """One comparison under :data:`RULE`. ``direction`` is the sign the claim predicts: +1 when it says
    the compared quantity is above ``null`` (``difference`` = compared - reference > 0), -1 below. Give
    ``p`` (a two-sided test of ``difference``) or an interval ``low``..``high`` of the quantity."""
    if p is not None:
        if p != p or difference != difference or p >= alpha or difference == 0:
            return INCONCLUSIVE
        return SUPPORTS if int(np.sign(difference)) == direction else REFUTES
    if low is None or high is None or low != low or high != high:
        return INCONCLUSIVE
    side = 1 if low > null else -1 if high < null else 0
    if side == 0:
        return INCONCLUSIVE
    return SUPPORTS if side == direction else REFUTES


def verdict(outcomes, quantifier: str = "all") -> str:
    """The verdict of a set of comparison outcomes under :data:`RULE` (without the run counts)."""
    if quantifier not in ("all", "most"):
        raise ValueError(f"quantifier must be 'all' or 'most', not {quantifier!r}")
    outcomes = list(outcomes)
    unknown = sorted(set(outcomes) - {SUPPORTS, REFUTES, INCONCLUSIVE, NOT_MEASURED, NOT_APPLICABLE})
    if unknown:
        raise ValueError(f"unknown outcome(s) {unknown}")
    applicable = [o for o in outcomes if o != NOT_APPLICABLE]
    if not applicable:
        return NOT_APPLICABLE if outcomes else NOT_MEASURED
    if NOT_MEASURED in applicable:
        return NOT_MEASURED
    n, s, r = len(applicable), applicable.count(SUPPORTS), applicable.count(REFUTES)
    need = n if quantifier == "all" else n // 2 + 1
    if s >= need:
        return SUPPORTED
    if s == 0 or r > n - need:
        return NOT_SUPPORTED
    return MIXED


def so_far(outcomes, quantifier: str = "all") -> str:
    """:func:`verdict` on the measured comparisons only, saying on how many: "mixed (4 of 10 measured)"."""
    outcomes = [o for o in outcomes if o != NOT_APPLICABLE]
    measured = [o for o in outcomes if o != NOT_MEASURED]
    if not measured:
        return NOT_MEASURED
    text = verdict(measured, quantifier)
    return text if len(measured) == len(outcomes) else f"{text} ({len(measured)} of {len(outcomes)} measured)"


# -- the claims ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    id: str
    name: str
    where: str
    quote: str  # verbatim from the paper's text (tests/test_claims.py checks it)
    test: str  # the comparison that tests it, in words
    quantifier: str = "all"  # "all" settings or "most"
    authors_column: bool = True  # whether the authors' configuration is a meaningful second column


CLAIMS = [
    Claim("1", "LLM-TE beats LLM-RE", "Fig. 1 (section 1)",
          "As shown in Fig. 1, directly injecting LLM token embeddings yields better performance than random "
          "embeddings, indicating that LLM token embeddings indeed encode transferable semantic information.",
          "LLM-TE vs LLM-RE per token source, paired over seeds"),
    Claim("2", "both stay below W/O", "Fig. 1 (section 1)",
          "However, the resulting gains are limited and unstable, and consistently underperform the original backbone.",
          "LLM-TE and LLM-RE each vs the backbone without LLM, per token source, paired over seeds"),
    Claim("3a", "MLTFR improves every backbone", "Table 2, section 4.2",
          "MLTFR consistently improves sequential recommenders, with the largest gains on BERT4Rec.",
          "MLTFR vs W/O per backbone (all six), paired over seeds"),
    Claim("3b", "the largest gain is on BERT4Rec", "Table 2, section 4.2",
          "In particular, BERT4Rec achieves the highest average gain (19.82%)",
          "BERT4Rec's per-seed Imp. vs each other backbone's, per dataset (Welch)"),
    Claim("3c", "Pantry benefits most", "Table 2, section 4.2",
          "The effectiveness is domain-dependent: Pantry benefits the most, while Beer is the weakest.",
          "Pantry's per-seed Imp. averaged over the backbones both datasets have vs each other dataset's (Welch)"),
    Claim("4", "the consensus expert helps", "Table 3, section 4.3",
          "Overall, Full achieves consistent or better performance in most settings, with the most notable gains "
          "on Pantry",
          "Full vs w/o SC per backbone, paired over seeds", quantifier="most"),
    Claim("5", "more experts, better", "Fig. 3, section 4.4",
          "Overall, increasing the number of experts leads to a consistent improvement trend in both HR and NDCG "
          "across most backbones.",
          "Spearman correlation of NDCG@20 with the expert count m, per seed; one-sample t-test over seeds",
          quantifier="most", authors_column=False),
    Claim("6", "the filter selects task-relevant tokens", "section 2.1",
          "As a result, the selected token embeddings are better aligned with user interests and the requirements "
          "of sequential recommendation.",
          "relevance percentile of each expert's selected tokens to the user's history titles, trained model, "
          "seeds pooled (diagnostics' relevance verdict)"),
    Claim("7", "overhead within the backbone's order", "Appendix A",
          "the additional time and memory overhead of our paradigm remains within the same order of magnitude as "
          "traditional sequential recommendation models",
          f"MLTFR / backbone: training-step time (bootstrap interval over steps), evaluation time and peak memory, "
          f"against {ORDER_OF_MAGNITUDE:g}x (benchmarks/mltfr_overhead.py --out)", authors_column=False),
    Claim("8", "ID + MLTFR beats a text-prompted LLM", "Table 4, section 4.5",
          "As shown in the table, ID-based sequential recommenders equipped with MLTFR substantially outperform "
          "the black-box LLM baseline despite not using any textual inputs.",
          "top-1 on the same candidate pools: each backbone with MLTFR vs each LLM variant (95% intervals over users)",
          authors_column=False),
]
CLAIM = {claim.id: claim for claim in CLAIMS}


def paper_evidence(claim_id: str) -> str:
    """The paper's own evidence for a claim: its figures where it gives them, recomputed from the published
    tables (:data:`~mltfrkit.experiments.PAPER_TABLE2` / 3 / 4; Imp. by the paper's geometric-mean definition)."""
    table2 = {(d, b): improvement(*v["W/O"], *v["MLTFR"]) for d, rows in PAPER_TABLE2.items() for b, v in rows.items()}
    if claim_id in ("1", "2"):
        return "Fig. 1 (SASRec on two datasets): bars only, no figure in the text"
    if claim_id == "3a":
        positive = sum(v > 0 for v in table2.values())
        return (f"Table 2: Imp. > 0 in {positive} of {len(table2)} backbone-dataset settings "
                f"({', '.join(PAPER_TABLE2)}); smallest {min(table2.values()):+.1f} %")
    if claim_id == "3b":
        means = {b: np.mean([v for (d, bb), v in table2.items() if bb == b]) for b in {b for _, b in table2}}
        ranked = sorted(means.items(), key=lambda kv: -kv[1])
        return ("Table 2, Imp. averaged over its four datasets: " +
                ", ".join(f"{b} {v:+.1f} %" for b, v in ranked))
    if claim_id == "3c":
        means = {d: np.mean([v for (dd, _), v in table2.items() if dd == d]) for d in PAPER_TABLE2}
        ranked = sorted(means.items(), key=lambda kv: -kv[1])
        return "Table 2, Imp. averaged over six backbones: " + ", ".join(f"{d} {v:+.1f} %" for d, v in ranked)
    if claim_id == "4":
        gains = {(d, b): improvement(*v["w/o SC"], *v["Full"]) for d, rows in PAPER_TABLE3.items()
                 for b, v in rows.items()}
        better = sum(v > 0 for v in gains.values())
        pantry = [v for (d, _), v in gains.items() if d == "Pantry"]
        return (f"Table 3: Full above w/o SC in {better} of {len(gains)} settings ({', '.join(PAPER_TABLE3)}); "
                f"on Pantry {np.mean(pantry):+.1f} % on average")
    if claim_id == "5":
        return "Fig. 3 (Office, six backbones, m = 1..6): curves only, no figure in the text"
    if claim_id == "6":
        return "none: Fig. 1's upper panel is an illustration; no measurement of relevance"
    if claim_id == "7":
        return "a complexity argument, O(N(T d_emb^2 + K d_llm d_emb + T K d_emb)) added to the backbone's; no measurement"
    if claim_id == "8":
        parts = []
        for dataset, row in PAPER_TABLE4.items():
            best = max((v, b) for b, v in row.items() if b != "glm4-plus")
            parts.append(f"{dataset} {best[1]} {best[0]:.3f} vs glm4-plus {row['glm4-plus']:.3f}")
        return "Table 4 (pools unstated), best ID + MLTFR vs the LLM: " + "; ".join(parts)
    raise KeyError(claim_id)


# -- which runs --------------------------------------------------------------------------------------
def focus(exp: Experiment, focus_backbones=FOCUS_BACKBONES) -> list[str]:
    """The backbones of the claims that are not about backbones: ``focus_backbones`` among ``exp``'s, else its
    first two."""
    chosen = [b for b in exp.backbones if b in [f.lower() for f in focus_backbones]]
    return chosen or list(exp.backbones[:2])


def only(exp: Experiment, backbones) -> Experiment:
    """``exp`` restricted to some backbones: a shallow copy sharing its store and split (nothing is reloaded)."""
    sub = copy.copy(exp)
    sub.backbones = [b.lower() for b in backbones]
    return sub


def _unique(specs, exp: Experiment) -> list:
    seen = {}
    for spec in specs:
        seen.setdefault(spec.key(exp.split.source_sha256), spec)
    return list(seen.values())


def row_specs(exp: Experiment, claim_id: str, backbone: str | None, sources=None, experts=None,
              focus_backbones=FOCUS_BACKBONES) -> list:
    """The runs one row of the claims table reads (an Experiment's own grids, restricted to the row)."""
    if claim_id in ("1", "2"):
        return exp.grid("te_vs_re", sources=sources, backbone=backbone)
    if claim_id == "3a":
        return only(exp, [backbone]).grid("table2", controls=[])
    if claim_id == "3b":
        return exp.grid("table2", controls=[])
    if claim_id == "4":
        return only(exp, [backbone]).grid("table3")
    if claim_id == "5":
        return only(exp, [backbone]).grid("expert_sweep", experts=experts)
    if claim_id in ("6", "8"):
        return [exp.spec(backbone, "mltfr", seed=s) for s in exp.seeds]
    return []


def claims_grid(exp: Experiment, sources=None, experts=None, focus_backbones=FOCUS_BACKBONES) -> list:
    """Every run the claims read on ``exp``'s dataset under its configuration, each once: Table 2 (no controls)
    for all of ``exp``'s backbones, Fig. 1, Table 3 and (ours only: the authors' configuration fixes the expert
    count) Fig. 3 for the focus backbones. What ``mltfrkit sweep claims`` trains."""
    specs = list(exp.grid("table2", controls=[]))
    for backbone in focus(exp, focus_backbones):
        specs += row_specs(exp, "1", backbone, sources, experts)
        specs += row_specs(exp, "4", backbone, sources, experts)
        if exp.configuration == "ours":
            specs += row_specs(exp, "5", backbone, sources, experts)
    return _unique(specs, exp)


def stored_dirs(exp: Experiment, specs) -> tuple[set, set, set, set]:
    """(run directories needed, those stored, those of the stored at their epoch cap, those of the stored that
    stalled) for specs; a w/o SC run counts as stored when its full run is (the store records it from that run's
    round 1 without training): :meth:`mltfrkit.store.ResultStore.epoch_capped`, :meth:`~mltfrkit.store.ResultStore.stalled`."""
    stored, capped = exp.store.epoch_capped(specs)
    return {str(exp.store.run_dir(spec)) for spec in specs}, stored, capped, exp.store.stalled(specs)


def _needed_stored(exp: Experiment, specs) -> tuple[set, set]:
    """:func:`stored_dirs`' first two sets only (no stall check: a count of missing runs needs none)."""
    return {str(exp.store.run_dir(spec)) for spec in specs}, exp.store.epoch_capped(specs)[0]


def runs_text(needed: set, stored: set, capped: set, epochs=None, stalled: set = frozenset()) -> str:
    """``6 of 6`` / ``6 of 6 (4 at the 100-epoch cap)`` / ``6 of 6 (4 at the 100-epoch cap, 1 stalled)``: stored
    of needed run directories, how many of the stored ones ran to their epoch cap without early stopping, and
    how many stalled (:func:`mltfrkit.store.stalled_runs`)."""
    if not needed:
        return "(no runs)"
    at_cap, stuck = len(capped & stored), len(set(stalled) & stored)
    cap = f"{epochs}-epoch cap" if epochs else "epoch cap"
    notes = [f"{at_cap} at the {cap}"] * bool(at_cap) + [f"{stuck} stalled"] * bool(stuck)
    return f"{len(stored)} of {len(needed)}" + (f" ({', '.join(notes)})" if notes else "")


class Missing(str):
    """Why a comparison's stored measurement is missing (not measured), as opposed to a plain string reason,
    which says why the data cannot answer it (not applicable)."""


class TrainingRefused(RuntimeError):
    """The claims were asked not to train (``train_missing=False``) and something would have."""


class ReadOnlyExecutor:
    """An executor that trains nothing: handing it a run raises :class:`TrainingRefused` naming the runs."""

    name = "read-only"
    remote = False

    def __repr__(self) -> str:
        return "ReadOnlyExecutor()"

    def run(self, jobs, store):
        raise TrainingRefused(f"train_missing=False: {len(jobs)} run(s) would be trained (first: {jobs[0].run_dir})")
        yield  # a generator, as executors are


# -- statistics on the Experiment functions' per-seed records ----------------------------------------
def welch_p(a, b) -> float:
    """Two-sided Welch t-test between two sets of per-seed values (NaN with fewer than MIN_SEEDS each)."""
    a = np.asarray([v for v in a if v == v], dtype=float)
    b = np.asarray([v for v in b if v == v], dtype=float)
    if len(a) < MIN_SEEDS or len(b) < MIN_SEEDS:
        return float("nan")
    if np.allclose(a, a[0]) and np.allclose(b, b[0]):
        return 0.0 if not math.isclose(a[0], b[0]) else 1.0
    from scipy import stats

    return float(stats.ttest_ind(b, a, equal_var=False).pvalue)


def _by_seed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.groupby("seed")[["HR@20", "NDCG@20"]].mean()


def paired_comparison(reference: pd.DataFrame, compared: pd.DataFrame, direction: int) -> dict:
    """Two sets of per-seed runs: means and stds, Imp. (%) of ``compared`` over ``reference`` (the paper's
    definition), the paired test on NDCG@20, and the outcome for the claimed ``direction``."""
    a, b = _by_seed(reference), _by_seed(compared)
    both = a.add_suffix(" a").join(b.add_suffix(" b"), how="inner")
    row = {"seeds": int(len(both))}
    for label, frame in (("reference", a), ("compared", b)):
        for metric in ("HR@20", "NDCG@20"):
            row[f"{label} {metric}"] = frame[metric].mean()
            row[f"{label} {metric} std"] = frame[metric].std(ddof=1)
    row["effect (%)"] = improvement(row["reference HR@20"], row["reference NDCG@20"], row["compared HR@20"],
                                    row["compared NDCG@20"])
    row["p"] = paired_p(both[f"{METRIC} a"].tolist(), both[f"{METRIC} b"].tolist())
    row["difference"] = float((both[f"{METRIC} b"] - both[f"{METRIC} a"]).mean()) if len(both) else float("nan")
    row["outcome"] = outcome(row["difference"], p=row["p"], direction=direction)
    return row


def seed_improvements(records: pd.DataFrame, backbone: str) -> pd.Series:
    """Per-seed Imp. (%) of MLTFR over W/O for one backbone, from :meth:`Experiment.table2`'s per-seed records."""
    mine = records[(records["backbone"] == backbone) & records["variant"].isin(["none", "mltfr"])]
    wide = mine.pivot_table(index="seed", columns="variant", values=["HR@20", "NDCG@20"])
    if ("HR@20", "none") not in wide.columns or ("HR@20", "mltfr") not in wide.columns:
        return pd.Series(dtype=float)
    return pd.Series({seed: improvement(wide.loc[seed, ("HR@20", "none")], wide.loc[seed, ("NDCG@20", "none")],
                                        wide.loc[seed, ("HR@20", "mltfr")], wide.loc[seed, ("NDCG@20", "mltfr")])
                      for seed in wide.index}, dtype=float)


def gain_comparison(reference: pd.Series, compared: pd.Series) -> dict:
    """Two sets of per-seed Imp. (%): means, stds, the difference (pp), Welch's test, the outcome (+1)."""
    difference = float(compared.mean() - reference.mean()) if len(reference) and len(compared) else float("nan")
    p = welch_p(reference.tolist(), compared.tolist())
    return {"reference mean": float(reference.mean()), "reference std": float(reference.std(ddof=1)),
            "compared mean": float(compared.mean()), "compared std": float(compared.std(ddof=1)),
            "effect (%)": difference, "difference": difference, "p": p, "seeds": int(min(len(reference), len(compared))),
            "outcome": outcome(difference, p=p, direction=1)}


def trend_comparison(records: pd.DataFrame) -> dict:
    """Fig. 3's trend from :meth:`Experiment.expert_sweep`'s per-seed records (one backbone): per seed, the
    Spearman correlation of NDCG@20 with m and the least-squares slope; a one-sample t-test of the correlations
    against 0 over seeds (``paired_p`` against zeros); Imp. (%) of the largest m over the smallest."""
    from scipy import stats

    rhos, slopes = [], []
    for _, frame in records.groupby("seed"):
        frame = frame.sort_values("n_experts")
        m, y = frame["n_experts"].astype(float).to_numpy(), frame[METRIC].astype(float).to_numpy()
        if len(m) < 2:
            continue
        rho = stats.spearmanr(m, y)[0] if np.ptp(y) > 0 else float("nan")
        rhos.append(float(rho))
        slopes.append(float(np.polyfit(m, y, 1)[0]))
    rhos = [r for r in rhos if r == r]
    means = records.groupby("n_experts")[["HR@20", "NDCG@20"]].mean().sort_index()
    effect = improvement(*means.iloc[0], *means.iloc[-1]) if len(means) > 1 else float("nan")
    p = paired_p([0.0] * len(rhos), rhos)
    mean_rho = float(np.mean(rhos)) if rhos else float("nan")
    return {"reference mean": 0.0, "compared mean": mean_rho,
            "compared std": float(np.std(rhos, ddof=1)) if len(rhos) > 1 else float("nan"),
            "effect (%)": effect, "difference": mean_rho, "p": p, "seeds": len(rhos),
            "slope": float(np.mean(slopes)) if slopes else float("nan"),
            "experts": ",".join(str(int(m)) for m in means.index),
            "outcome": outcome(mean_rho, p=p, direction=1)}


RELEVANCE_OUTCOMES = {"relevant": SUPPORTS, "below chance": REFUTES, "chance": INCONCLUSIVE,
                      "barely above chance": INCONCLUSIVE}


def relevance_comparisons(per_user: pd.DataFrame, noise: str) -> list[dict]:
    """Section 2.1 from :func:`~mltfrkit.mltfr.diagnostics.relevance_report`'s per-user frames (seeds pooled):
    per expert, the trained model's mean percentile under ``noise`` with its bootstrap interval and the
    diagnostics' verdict, and what training adds over the untrained model (paired by user)."""
    from mltfrkit.mltfr.diagnostics import relevance_gain, summarise_relevance

    judged = per_user[per_user["noise"] == noise]
    summary = summarise_relevance(judged)
    gain = relevance_gain(judged.assign(user=judged["seed"].astype(str) + ":" + judged["user"].astype(str)))
    rows = []
    for _, row in summary[summary["model"] == "trained"].iterrows():
        added = gain[gain["expert"] == row["expert"]]
        note = (f"training adds {added['trained - untrained'].iloc[0]:+.1f} points "
                f"[{added['CI low'].iloc[0]:+.1f}, {added['CI high'].iloc[0]:+.1f}]" if len(added) else "")
        rows.append({"setting": row["expert"], "reference": "a random token of the same vocabulary",
                     "compared": f"selected tokens (noise={noise})", "reference mean": 50.0,
                     "compared mean": row["mean percentile"], "ci low": row["CI low"], "ci high": row["CI high"],
                     "effect (%)": row["mean percentile"] - 50.0, "difference": row["mean percentile"] - 50.0,
                     "users": int(row["users"]), "relevance verdict": row["verdict"],
                     "outcome": RELEVANCE_OUTCOMES[row["verdict"]], "note": note})
    return rows


def ratio_interval(base: list[float], other: list[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Ratio of median step times (other / base) with a percentile bootstrap interval (steps resampled)."""
    base, other = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    rng = np.random.default_rng(seed)
    ratios = [np.median(rng.choice(other, len(other))) / np.median(rng.choice(base, len(base))) for _ in range(n_boot)]
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(np.median(other) / np.median(base)), float(low), float(high)


def overhead_comparisons(path: Path, backbone: str, precision: str, max_vocab) -> tuple[list[dict], str | None]:
    """Appendix A from ``benchmarks/mltfr_overhead.py --out``'s file: per expert count measured with this
    setting, the step-time ratio (bootstrap interval over steps), the evaluation slowdown and the memory ratio,
    each against :data:`ORDER_OF_MAGNITUDE`. Returns (comparisons, reason they are missing)."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return [], Missing(f"no overhead measurement stored ({path})")
    rows = [r for r in record.get("rows", []) if r.get("backbone") == backbone and not r.get("switches")]
    base = next((r for r in rows if r.get("experts") == 0), None)
    variants = [r for r in rows if r.get("experts") and r.get("precision") == precision
                and r.get("max_vocab") == max_vocab]
    if base is None or not variants:
        return [], Missing(f"no {backbone} row with {precision}:{max_vocab} in {path}")
    out, seen = [], set()
    for row in variants:
        if row["experts"] in seen:
            continue
        seen.add(row["experts"])
        setting = f"{row['experts']} experts, {precision}, max_vocab={max_vocab}"
        common = {"reference": f"{backbone} alone", "users": None, "seeds": None,
                  "note": f"{record.get('threads')} thread(s), {record.get('steps')} steps, {record.get('when', '')}"}
        ratio, low, high = ratio_interval(base["step_times_ms"], row["step_times_ms"])
        out.append({**common, "setting": setting, "compared": "training step time ratio", "reference mean": 1.0,
                    "compared mean": ratio, "ci low": low, "ci high": high, "effect (%)": (ratio - 1) * 100,
                    "difference": ratio - ORDER_OF_MAGNITUDE,
                    "outcome": outcome(ratio, low=low, high=high, direction=-1, null=ORDER_OF_MAGNITUDE)})
        for label, value in (("evaluation time ratio", base["eval_users_per_s"] / row["eval_users_per_s"]),
                             ("peak memory ratio", row["peak_gb"] / base["peak_gb"])):
            out.append({**common, "setting": setting, "compared": label, "reference mean": 1.0, "compared mean": value,
                        "ci low": value, "ci high": value, "effect (%)": (value - 1) * 100,
                        "difference": value - ORDER_OF_MAGNITUDE,
                        "outcome": outcome(value, low=value, high=value, direction=-1, null=ORDER_OF_MAGNITUDE)})
    return out, None


def pool_comparisons(table: pd.DataFrame, backbone: str) -> list[dict]:
    """Table 4 from :meth:`Experiment.table4`'s rows: the backbone with MLTFR against each LLM variant; the
    difference's interval is bounded by the two 95% intervals (no overlap = significant)."""
    mine = table[table["method"] == f"{backbone} MLTFR"]
    llms = table[table["method"].astype(str).str.startswith("LLM")]
    out = []
    if mine.empty or pd.isna(mine["top1"].iloc[0]):
        return out
    id_row = mine.iloc[0]
    for _, llm in llms.iterrows():
        low, high = id_row["ci_low"] - llm["ci_high"], id_row["ci_high"] - llm["ci_low"]
        difference = id_row["top1"] - llm["top1"]
        out.append({"setting": llm["method"], "reference": llm["method"], "compared": f"{backbone} MLTFR",
                    "reference mean": llm["top1"], "compared mean": id_row["top1"],
                    "ci low": low, "ci high": high, "difference": difference,
                    "effect (%)": (id_row["top1"] / llm["top1"] - 1) * 100 if llm["top1"] else float("nan"),
                    "users": int(id_row["users"]), "seeds": int(id_row["seeds"]),
                    "note": f"LLM invalid answers {llm['invalid_rate']:.0%}; {id_row['pool']}",
                    "outcome": outcome(difference, low=low, high=high, direction=1)})
    return out


# -- measuring ---------------------------------------------------------------------------------------
@dataclass
class ClaimsResult:
    """The claims measured: ``claims`` (one row per claim), ``rows`` (per claim, dataset and backbone, with the
    run counts), ``comparisons`` (every comparison with its numbers and outcome), ``missing`` (per dataset and
    configuration: the claims grid's runs, stored and missing, and the command that trains them), the rule."""

    claims: pd.DataFrame
    rows: pd.DataFrame
    comparisons: pd.DataFrame
    missing: pd.DataFrame
    rule: str = RULE
    settings: dict = field(default_factory=dict)


def _options_flags(options: dict | None) -> str:
    return "".join(f" --plugin-set {key}={json.dumps(value) if not isinstance(value, str) else value}"
                   for key, value in (options or {}).items())


class _Measure:
    """One evaluation of every claim over datasets and configurations (memoised Experiment calls)."""

    def __init__(self, experiments: dict, datasets: list[str], configurations: list[str], sources, experts,
                 focus_backbones, relevance_users: int | None, pool, overhead_file, train_missing: bool, log):
        self.experiments, self.datasets, self.configurations = experiments, datasets, configurations
        self.sources, self.experts, self.focus_backbones = sources, experts, focus_backbones
        self.relevance_users, self.pool, self.overhead_file = relevance_users, pool, overhead_file
        self.train_missing, self.log = train_missing, log
        self.cache: dict = {}
        self.comparisons: list[dict] = []
        self.rows: list[dict] = []

    def memo(self, key, compute):
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    # each returns (comparisons, reason): reason = why it is n/a, comparisons = [] then
    def fig1(self, exp, claim_id, backbone):
        _, records = self.memo((id(exp), "fig1", backbone),
                               lambda: exp.te_vs_re(self.sources, backbone=backbone, per_seed=True))
        wo = records[records["method"] == "W/O"]
        out = []
        for source in [s for s in records["source"].unique() if s != "(none)"]:
            te = records[(records["method"] == "LLM-TE") & (records["source"] == source)]
            re_ = records[(records["method"] == "LLM-RE") & (records["source"] == source)]
            if claim_id == "1":
                pairs = [("LLM-RE", re_, "LLM-TE", te, 1)]
            else:
                pairs = [("W/O", wo, "LLM-TE", te, -1), ("W/O", wo, "LLM-RE", re_, -1)]
            for a_label, a, b_label, b, direction in pairs:
                out.append({"setting": source, "reference": a_label, "compared": b_label,
                            **paired_comparison(a, b, direction)})
        return out, None

    def table2(self, exp, backbone):
        return self.memo((id(exp), "table2", backbone),
                         lambda: only(exp, [backbone]).table2(controls=[], per_seed=True))

    def claim3a(self, exp, backbone):
        table, _ = self.table2(exp, backbone)
        row = table.iloc[0]
        difference = row["MLTFR NDCG@20"] - row["W/O NDCG@20"]
        return [{"setting": backbone, "reference": "W/O", "compared": "MLTFR",
                 **{f"{side} {m}{s}": row[f"{label} {m}{s}"] for side, label in (("reference", "W/O"),
                                                                                 ("compared", "MLTFR"))
                    for m in ("HR@20", "NDCG@20") for s in ("", " std")},
                 "effect (%)": row["Imp. (%)"], "p": row["p (NDCG@20)"], "difference": difference,
                 "seeds": int(row["seeds"]), "outcome": outcome(difference, p=row["p (NDCG@20)"], direction=1)}], None

    def claim3b(self, exp):
        if "bert4rec" not in exp.backbones or len(exp.backbones) < 2:
            return [], "needs BERT4Rec and another backbone"
        gains = {b: seed_improvements(self.table2(exp, b)[1], b) for b in exp.backbones}
        return [{"setting": f"vs {b}", "reference": f"{b} Imp.", "compared": "bert4rec Imp.",
                 **gain_comparison(gains[b], gains["bert4rec"])} for b in exp.backbones if b != "bert4rec"], None

    def claim3c_specs(self, configuration, other):
        pantry_key = next(d for d in self.datasets if self.experiments[(d, "ours")].dataset == "Pantry")
        pantry, them = self.experiments[(pantry_key, configuration)], self.experiments[(other, configuration)]
        common = [b for b in pantry.backbones if b in them.backbones]
        return [*only(pantry, common).grid("table2", controls=[]), *only(them, common).grid("table2", controls=[])], \
            (pantry, them, common)

    def claim3c(self, configuration, other):
        _, (pantry, them, common) = self.claim3c_specs(configuration, other)

        def averaged(exp):
            per = pd.DataFrame({b: seed_improvements(self.table2(exp, b)[1], b) for b in common})
            return per.mean(axis=1)  # per seed, mean over the common backbones

        return [{"setting": f"vs {them.dataset} ({', '.join(common)})", "reference": f"{them.dataset} Imp.",
                 "compared": "Pantry Imp.", **gain_comparison(averaged(them), averaged(pantry))}], None

    def claim4(self, exp, backbone):
        table = self.memo((id(exp), "ablation", backbone), lambda: only(exp, [backbone]).ablation())
        row = table.iloc[0]
        difference = row["Full NDCG@20"] - row["w/o SC NDCG@20"]
        return [{"setting": backbone, "reference": "w/o SC", "compared": "Full",
                 **{f"{side} {m}{s}": row[f"{label} {m}{s}"] for side, label in (("reference", "w/o SC"),
                                                                                 ("compared", "Full"))
                    for m in ("HR@20", "NDCG@20") for s in ("", " std")},
                 "effect (%)": improvement(row["w/o SC HR@20"], row["w/o SC NDCG@20"], row["Full HR@20"],
                                           row["Full NDCG@20"]),
                 "p": row["p (NDCG@20)"], "difference": difference, "seeds": int(row["seeds"]),
                 "outcome": outcome(difference, p=row["p (NDCG@20)"], direction=1)}], None

    def claim5(self, exp, backbone):
        _, records = only(exp, [backbone]).expert_sweep(self.experts, per_seed=True)
        trend = trend_comparison(records)
        return [{"setting": f"m = {trend.pop('experts')}", "reference": "no trend (rho = 0)",
                 "compared": "Spearman rho of NDCG@20 with m", "note": f"mean slope {trend.pop('slope'):+.5f} "
                 f"NDCG@20 per expert; effect = Imp. of the largest m over the smallest", **trend}], None

    def claim6(self, exp, backbone):
        if not exp.split.item_titles:
            return [], f"{exp.dataset} has no item titles here"
        frames = []
        for seed in exp.seeds:
            result = exp.store.get(exp.spec(backbone, "mltfr", seed=seed))
            frames.append(self.relevance(result, exp).assign(seed=seed))
        per_user = pd.concat(frames, ignore_index=True)
        return relevance_comparisons(per_user, self.judged_noise(exp, backbone)), None

    @staticmethod
    def judged_noise(exp, backbone) -> str:
        """The selection evaluation uses: deterministic (ours) or eq. (4)'s noise (the authors' eval_noise)."""
        return "paper" if exp.spec(backbone, "mltfr").mltfr_config().eval_noise else "none"

    def relevance(self, result: dict, exp: Experiment) -> pd.DataFrame:
        """The per-user relevance frame of a stored MLTFR run, computed once and cached in its run directory
        (``relevance/<noise>-users<N>-seed0.csv``); the run's weights are loaded, nothing is trained."""
        from mltfrkit.mltfr.diagnostics import relevance_report

        noise = "paper" if result["config"]["plugin_options"].get("eval_noise") else "none"
        path = Path(result["run_dir"]) / "relevance" / f"{noise}-users{self.relevance_users or 'all'}-seed0.csv"
        if path.exists():
            return pd.read_csv(path)
        _, per_user = relevance_report(result["run_dir"], exp.data_dir, modes=(noise,),
                                       max_users=self.relevance_users, seed=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_suffix(f".tmp-{os.getpid()}")
        per_user.to_csv(scratch, index=False)
        os.replace(scratch, path)
        return per_user

    def claim8(self, exp, backbone):
        from mltfrkit.data import NoTitlesError

        try:
            table = self.memo((id(exp), "table4"), lambda: only(exp, focus(exp, self.focus_backbones)).table4(
                self.pool, train_missing=False, llm_missing="run" if self.train_missing else "skip", log=self.log))
        except NoTitlesError:
            return [], f"{exp.dataset} has no item titles here"
        if not table["method"].astype(str).str.startswith("LLM").any():
            return [], Missing(f"no stored LLM answers on {self.pool.label()} (the llm_comparison notebook "
                               f"computes them)")
        return pool_comparisons(table, backbone), None

    def claim7(self, backbone):
        exp = self.experiments[(self.datasets[0], "ours")]
        path = Path(self.overhead_file) if self.overhead_file else exp.store.root / "benchmarks" / "mltfr_overhead.json"
        config = exp.spec(backbone, "mltfr").mltfr_config()
        return overhead_comparisons(path, backbone, config.precision, config.max_vocab)

    # -- rows ----------------------------------------------------------------------------------------
    def add_row(self, claim: Claim, dataset: str, backbone: str | None, per_configuration: dict):
        """``per_configuration``: configuration -> (exp or None, specs, compute) where compute() returns
        (comparisons, n/a reason)."""
        row = {"claim": claim.id, "name": claim.name, "dataset": dataset, "backbone": backbone or "",
               "quantifier": claim.quantifier}
        for configuration in self.configurations:
            column = "ours" if configuration == "ours" else "authors"
            exp, specs, compute = per_configuration.get(configuration, (None, [], None))
            if compute is None:
                row.update({f"{column} verdict": NOT_APPLICABLE, f"{column} runs": "", f"{column} stored": 0,
                            f"{column} needed": 0, f"{column} evidence": "", f"{column} outcomes": ""})
                continue
            inapplicable = self.inapplicable(claim, exp, backbone)
            if inapplicable:  # decided before counting runs: no run can make the data answer it
                row.update({f"{column} verdict": f"{NOT_APPLICABLE} ({inapplicable})", f"{column} runs": "",
                            f"{column} stored": 0, f"{column} needed": 0, f"{column} evidence": "",
                            f"{column} outcomes": "", f"_{column} outcomes": [NOT_APPLICABLE],
                            f"{column} setting": exp.settings_note()})
                continue
            needed, stored, capped, stalled = stored_dirs(exp, specs) if specs else (set(), set(), set(), set())
            row[f"{column} needed"], row[f"{column} stored"] = len(needed), len(stored)
            row[f"{column} capped"], row[f"{column} stalled"] = len(capped & stored), len(stalled & stored)
            row[f"{column} runs"] = runs_text(needed, stored, capped, exp.epochs, stalled)
            row[f"_{column} dirs"] = (needed, stored, capped, exp.epochs, stalled)
            row[f"_{column} missing"] = (exp, [spec for spec in specs if str(exp.store.run_dir(spec)) not in stored])
            comparisons, reason = [], None
            if len(stored) < len(needed):
                verdict_text = f"{NOT_MEASURED} ({len(stored)} of {len(needed)} runs stored)"
                outcomes = [NOT_MEASURED]
            else:
                try:
                    comparisons, reason = compute()
                except TrainingRefused as refused:
                    comparisons, reason = [], Missing(f"reading it would train: {refused}")
                    if self.log:
                        self.log(f"claim {claim.id} on {dataset} {backbone or ''}: {refused}")
                except WeightsNotArchived as imported:  # a measure that needs a model the archive left behind
                    comparisons, reason = [], Missing(f"its runs were imported without weights: {imported}")
                    if self.log:
                        self.log(f"claim {claim.id} on {dataset} {backbone or ''}: {imported}")
                if isinstance(reason, Missing) or (reason is None and not comparisons):
                    verdict_text, outcomes = f"{NOT_MEASURED} ({reason or 'nothing stored to compare'})", [NOT_MEASURED]
                elif reason is not None:
                    verdict_text, outcomes = f"{NOT_APPLICABLE} ({reason})", [NOT_APPLICABLE]
                else:
                    outcomes = [c["outcome"] for c in comparisons]
                    verdict_text = verdict(outcomes, claim.quantifier)
            row[f"{column} verdict"] = verdict_text
            row[f"_{column} outcomes"] = outcomes
            row[f"{column} outcomes"] = ", ".join(f"{o} {outcomes.count(o)}" for o in
                                                  (SUPPORTS, REFUTES, INCONCLUSIVE) if o in outcomes)
            row[f"{column} evidence"] = evidence(comparisons)
            row[f"{column} setting"] = exp.settings_note() if exp is not None else ""
            for comparison in comparisons:
                self.comparisons.append({"claim": claim.id, "dataset": dataset, "backbone": backbone or "",
                                         "configuration": configuration,
                                         "selection": OPTIMISTIC if configuration == "authors" else "validation",
                                         **comparison})
        self.rows.append(row)

    @staticmethod
    def inapplicable(claim: Claim, exp: Experiment, backbone) -> str | None:
        """Why the data cannot answer a claim's row whatever the store holds (None: it can)."""
        if claim.id == "3b" and ("bert4rec" not in exp.backbones or len(exp.backbones) < 2):
            return "needs BERT4Rec and another backbone"
        if claim.id == "6" and not exp.split.item_titles:
            return f"{exp.dataset} has no item titles here"
        if claim.id == "8":
            from mltfrkit.data import NoTitlesError, item_titles

            try:
                item_titles(exp.split, exp.data_dir)
            except NoTitlesError:
                return f"{exp.dataset} has no item titles here"
        return None

    def run(self):
        for claim in CLAIMS:
            if claim.id == "3c":
                self.rows_3c(claim)
                continue
            if claim.id == "7":
                backbones = dict.fromkeys(b for d in self.datasets for b in focus(self.experiments[(d, "ours")],
                                                                                   self.focus_backbones))
                for backbone in backbones:
                    self.add_row(claim, "Pantry (benchmark)", backbone,
                                 {"ours": (self.experiments[(self.datasets[0], "ours")], [],
                                           lambda b=backbone: self.claim7(b))})
                continue
            for dataset in self.datasets:
                ours = self.experiments[(dataset, "ours")]
                if claim.id == "3b":
                    self.add_row(claim, ours.dataset, "bert4rec vs the others", self.per_configuration(
                        claim, dataset, lambda exp: row_specs(exp, "3b", None), lambda exp: self.claim3b(exp)))
                    continue
                backbones = ours.backbones if claim.id == "3a" else focus(ours, self.focus_backbones)
                method = {"1": lambda exp, b: self.fig1(exp, "1", b), "2": lambda exp, b: self.fig1(exp, "2", b),
                          "3a": self.claim3a, "4": self.claim4, "5": self.claim5, "6": self.claim6,
                          "8": self.claim8}[claim.id]
                for backbone in backbones:
                    self.add_row(claim, ours.dataset, backbone, self.per_configuration(
                        claim, dataset,
                        lambda exp, b=backbone: row_specs(exp, claim.id, b, self.sources, self.experts),
                        lambda exp, b=backbone, method=method: method(exp, b)))

    def per_configuration(self, claim: Claim, dataset: str, specs, compute) -> dict:
        out = {}
        for configuration in self.configurations:
            if configuration == "authors" and not claim.authors_column:
                continue
            exp = self.experiments[(dataset, configuration)]
            out[configuration] = (exp, specs(exp), lambda exp=exp: compute(exp))
        return out

    def rows_3c(self, claim: Claim):
        names = {self.experiments[(d, "ours")].dataset: d for d in self.datasets}
        if "Pantry" not in names or len(names) < 2:
            self.add_row(claim, "Pantry vs the others", "", {
                c: (self.experiments[(self.datasets[0], c)], [],
                    lambda: ([], "needs Pantry and another dataset")) for c in self.configurations})
            return
        for display, dataset in names.items():
            if display == "Pantry":
                continue
            per = {}
            for configuration in self.configurations:
                specs, (pantry, _, _) = self.claim3c_specs(configuration, dataset)
                per[configuration] = (pantry, specs, lambda c=configuration, d=dataset: self.claim3c(c, d))
            self.add_row(claim, f"Pantry vs {display}", "common backbones", per)


def evidence(comparisons: list[dict]) -> str:
    """A row's evidence in a line: each comparison's effect, test and outcome (at most four, then a count)."""
    parts = []
    for c in comparisons[:4]:
        test = (f"p {c['p']:.2g}" if c.get("p") == c.get("p") and c.get("p") is not None else
                f"[{c['ci low']:.3g}, {c['ci high']:.3g}]" if c.get("ci low") is not None and c.get("ci low") == c.get("ci low")
                else "no test")
        value = c.get("effect (%)")
        shown = f"{value:+.1f} %" if value is not None and value == value else ""
        if c.get("compared") and "rho" in str(c["compared"]):
            shown = f"rho {c['compared mean']:+.2f}, {shown} from the smallest to the largest m"
        elif c.get("relevance verdict"):
            shown = f"percentile {c['compared mean']:.1f} ({c['relevance verdict']})"
        elif "ratio" in str(c.get("compared", "")):
            shown = f"{c['compared']} {c['compared mean']:.2f}x"
        parts.append(f"{c.get('setting', '')}: {shown} ({test}) {c['outcome']}".strip())
    if len(comparisons) > 4:
        parts.append(f"... {len(comparisons) - 4} more")
    return "; ".join(parts)


def measure_claims(datasets=DATASETS, data_dir: str | None = None, profile: str = "paper", backbones=None,
                   focus_backbones=FOCUS_BACKBONES, dataset_backbones: dict | None = None, seeds=None,
                   epochs: int | None = None, llms=None, mltfr_options: dict | None = None,
                   configurations=("ours", "authors"), sources=None, experts=None, relevance_users: int | None = 300,
                   pool=None, overhead_file: str | None = None, runs_dir: str | None = None, device: str = "auto",
                   executor: str = "local", workers: int | None = None, threads: int | None = None,
                   ray_address: str | None = None, train_missing: bool = False, progress: bool = False,
                   log=print) -> ClaimsResult:
    """Every claim on every dataset, from the result store (see the module docstring and :data:`RULE`).

    ``backbones``: Table 2's (default: the profile's, all six at ``paper``), capped per dataset by
    ``dataset_backbones`` (default :data:`DATASET_BACKBONES`: Beauty on SASRec and BERT4Rec); the other claims use
    ``focus_backbones`` among them. ``sources`` (Fig. 1's token sources) and ``experts`` (Fig. 3's values of m):
    the profile's by default. ``pool``: Table 4's candidate pools (default 20 candidates, 400 sampled users, as the
    README's measurement). ``overhead_file``: the overhead benchmark's ``--out`` (default
    ``<store>/benchmarks/mltfr_overhead.json``). ``train_missing=False``: nothing is trained (rows with missing
    runs say so); True: every configuration's claims grid is trained first by ``executor``."""
    from mltfrkit.train.pools import PoolSpec

    datasets = list_parameter(datasets, "datasets", "-p datasets '[\"Pantry\", \"ml-100k\", \"Beauty\"]'")
    configurations = list_parameter(configurations, "configurations", "-p configurations ours,authors")
    unknown = sorted(set(configurations) - {"ours", "authors"})
    if unknown or "ours" not in configurations:
        raise ValueError(f"configurations must include 'ours' and may add 'authors', not {configurations}")
    focus_backbones = list_parameter(focus_backbones, "focus_backbones", "-p focus_backbones sasrec,bert4rec")
    sources = list_parameter(sources, "sources", "-p sources '[\"all-MiniLM-L6-v2\"]'")
    if isinstance(experts, str):
        experts = json.loads(experts) if experts.strip().startswith("[") else [int(m) for m in experts.split(",")]
    if isinstance(dataset_backbones, str):
        dataset_backbones = json.loads(dataset_backbones)
    caps = {k.lower(): v for k, v in (DATASET_BACKBONES if dataset_backbones is None else dataset_backbones).items()}
    if isinstance(pool, int):
        pool = PoolSpec(max_users=pool)
    pool = pool or PoolSpec(max_users=400)
    experiments = {}
    for dataset in datasets:
        for configuration in configurations:
            exp = Experiment(dataset, data_dir=data_dir, profile=profile, seeds=seeds, epochs=epochs, llms=llms,
                             backbones=caps.get(str(dataset).lower(), backbones), device=device, runs_dir=runs_dir,
                             progress=progress, mltfr_options=mltfr_options, configuration=configuration,
                             executor=executor if train_missing else "local", workers=workers, threads=threads,
                             ray_address=ray_address)
            if not train_missing:
                exp.store.executor = ReadOnlyExecutor()
            experiments[(dataset, configuration)] = exp
    if train_missing:
        for (dataset, configuration), exp in experiments.items():
            exp.sweep("claims", sources=sources, experts=experts, focus_backbones=focus_backbones)
    measure = _Measure(experiments, datasets, configurations, sources, experts, focus_backbones, relevance_users,
                       pool, overhead_file, train_missing, log)
    measure.run()
    rows = pd.DataFrame(measure.rows)
    comparisons = pd.DataFrame(measure.comparisons)
    claims = claim_table(rows, configurations)
    # how long the missing runs take, on as many workers as would train them (one one-thread run per core unless
    # told): advice, so a failure here is reported and leaves the column empty
    plan_workers = int(workers) if workers else max(1, (os.cpu_count() or 1) // int(threads or 1))
    try:
        left = time_left(rows, "ours", plan_workers)
    except Exception as error:  # noqa: BLE001
        left = {}
        if log:
            log(f"claims: the time left could not be estimated: {error!r}")
    claims["ours time left"] = claims["claim"].map(left).fillna("")
    missing = missing_runs(experiments, sources, experts, focus_backbones, data_dir, profile)
    rows = rows.drop(columns=[c for c in rows.columns if c.startswith("_")])
    settings = {"datasets": [experiments[(d, "ours")].dataset for d in datasets], "profile": profile,
                "setting": experiments[(datasets[0], "ours")].settings_note(), "pool": pool.label(),
                "configurations": list(configurations), "train_missing": train_missing}
    return ClaimsResult(claims, rows, comparisons, missing, settings=settings)


def claim_table(rows: pd.DataFrame, configurations) -> pd.DataFrame:
    """One row per claim: its sentence and the paper's evidence, and the rule applied to every comparison of its
    rows (the run counts are over the union of the rows' runs, each counted once)."""
    out = []
    for claim in CLAIMS:
        mine = rows[rows["claim"] == claim.id]
        entry = {"claim": claim.id, "name": claim.name, "where": claim.where, "quote": claim.quote,
                 "paper evidence": paper_evidence(claim.id), "test": claim.test, "quantifier": claim.quantifier}
        for configuration in configurations:
            column = "ours" if configuration == "ours" else "authors"
            if configuration == "authors" and not claim.authors_column:
                entry.update({f"{column} verdict": NOT_APPLICABLE, f"{column} so far": NOT_APPLICABLE,
                              f"{column} runs": ""})
                continue
            outcomes = [o for value in mine.get(f"_{column} outcomes", pd.Series(dtype=object)).dropna()
                        for o in value]
            needed, stored, capped, caps, stalled = set(), set(), set(), set(), set()
            for value in mine.get(f"_{column} dirs", pd.Series(dtype=object)).dropna():
                needed |= value[0]
                stored |= value[1]
                if len(value) > 2:
                    capped |= value[2]
                    caps.add(value[3])
                if len(value) > 4:
                    stalled |= value[4]
            text = verdict(outcomes, claim.quantifier)
            if text == NOT_MEASURED and needed and len(stored) < len(needed):
                text = f"{NOT_MEASURED} ({len(stored)} of {len(needed)} runs stored)"
            entry[f"{column} verdict"] = text
            entry[f"{column} so far"] = so_far(outcomes, claim.quantifier)
            entry[f"{column} runs"] = runs_text(needed, stored, capped, caps.pop() if len(caps) == 1 else None, stalled)
            entry[f"{column} rows measured"] = int(sum(
                1 for v in mine[f"{column} verdict"] if not str(v).startswith((NOT_MEASURED, NOT_APPLICABLE))))
            entry[f"{column} rows"] = int(sum(1 for v in mine[f"{column} verdict"] if not str(v).startswith(NOT_APPLICABLE)))
        out.append(entry)
    return pd.DataFrame(out)


def time_left(rows: pd.DataFrame, column: str, workers: int) -> dict[str, str]:
    """Per claim with runs missing in ``column``'s configuration: how many runs its rows still need (each counted
    once) and how long training them takes, e.g. "12 to train: about 16.5 h serial, 8.3 h wall with 2
    workers". The estimates are :meth:`mltfrkit.store.ResultStore.plan`'s (the store's measured run times, under
    the concurrency they ran with, imported runs' on the machine that trained them; runs a stored full run
    records, w/o SC, cost nothing; a resumed run counts what is left of it, ``GridPlan.runs['left_s']``). The
    wall time is the plan's own (``GridPlan.wall_seconds``: the executor's start order on ``workers`` workers,
    as ``--plan`` prints it), summed over the claim's grids, which ``mltfrkit sweep`` trains one after the other;
    a run two grids share is scheduled in the first. The text names the runs estimated at the data-size level
    (every epoch of the cap: meant as an upper bound), those a stored run of another stopping
    rule may answer (trained only if it does not), and those without an estimate."""
    from mltfrkit.plan import SIZE_SCALED_LEVEL

    out = {}
    for claim_id, mine in rows.groupby("claim", sort=False):
        groups: dict[int, tuple] = {}
        for value in mine.get(f"_{column} missing", pd.Series(dtype=object)).dropna():
            exp, specs = value
            if specs:
                groups.setdefault(id(exp), (exp, {}))[1].update({str(exp.store.run_dir(s)): s for s in specs})
        if not groups:
            continue
        estimates: dict[str, tuple[float, str, bool]] = {}
        wall, scheduled = 0.0, set()
        for exp, specs in groups.values():
            fresh = [spec for run_dir, spec in specs.items() if run_dir not in scheduled]
            scheduled.update(specs)
            if not fresh:
                continue
            plan = exp.store.plan(fresh, workers)
            wall += plan.wall_seconds
            runs = plan.runs
            answered = runs["may_be_answered"] if "may_be_answered" in runs else [False] * len(runs)
            estimates.update({run_dir: (seconds, level, bool(maybe)) for run_dir, seconds, level, maybe in
                              zip(runs["run_dir"], runs["left_s"], runs["estimate_from"], answered)})
        if not estimates:
            continue
        known = [seconds for seconds, _, _ in estimates.values() if seconds == seconds]
        bounds = sum(1 for seconds, level, _ in estimates.values() if seconds == seconds and level == SIZE_SCALED_LEVEL)
        maybe = sum(1 for _, _, answered in estimates.values() if answered)
        unknown = len(estimates) - len(known)
        text = f"{len(estimates)} to train"
        if known:
            text += (f": about {sum(known) / 3600:.1f} h serial, {wall / 3600:.1f} h wall "
                     f"with {workers} worker{'s' if workers != 1 else ''}")
        notes = [f"{bounds} of them at the epoch cap, meant as an upper bound"] * bool(bounds) + \
            [f"{maybe} may be answered by a stored run"] * bool(maybe) + \
            [f"{unknown} without an estimate, not counted"] * bool(unknown)
        out[str(claim_id)] = text + (f" ({'; '.join(notes)})" if notes else "")
    return out


def missing_runs(experiments: dict, sources, experts, focus_backbones, data_dir, profile) -> pd.DataFrame:
    """Per dataset and configuration: the claims grid's runs, how many are stored and missing (by part), and the
    ``mltfrkit sweep claims`` command that trains the missing ones in the background."""
    rows = []
    for (dataset, configuration), exp in experiments.items():
        parts = {"table2": exp.grid("table2", controls=[])}
        chosen = focus(exp, focus_backbones)
        parts["te_vs_re"] = [s for b in chosen for s in exp.grid("te_vs_re", sources=sources, backbone=b)]
        parts["table3"] = only(exp, chosen).grid("table3")
        if configuration == "ours":
            parts["expert_sweep"] = only(exp, chosen).grid("expert_sweep", experts=experts)
        grid = claims_grid(exp, sources, experts, focus_backbones)
        needed, stored = _needed_stored(exp, grid)
        row = {"dataset": exp.dataset, "configuration": configuration, "backbones": ",".join(exp.backbones),
               "runs": len(needed), "stored": len(stored), "missing": len(needed) - len(stored)}
        counted: set = set()
        for part, specs in parts.items():  # each run counted in the first part that needs it
            part_needed, part_stored = _needed_stored(exp, specs)
            fresh = part_needed - counted
            row[f"missing {part}"] = len(fresh - part_stored)
            counted |= part_needed
        llms = exp.llms if isinstance(exp.llms, str) else ",".join(exp.llms)
        command = (f"mltfrkit sweep claims --dataset {dataset}" + (f" --data-dir {data_dir}" if data_dir else "") +
                   f" --profile {profile} --backbones {' '.join(exp.backbones)}" +
                   f" --seeds {' '.join(map(str, exp.seeds))}" +
                   (f" --epochs {exp.epochs}" if exp.epochs != exp.settings.epochs else "") +
                   (f" --llms {llms}" if llms != exp.settings.llms else "") +
                   (f" --experts {' '.join(map(str, experts))}" if experts else "") +
                   (f" --sources {' '.join(sources)}" if sources else "") +
                   _options_flags(exp.mltfr_options) + f" --configuration {configuration} --executor processes")
        row["command"] = command
        rows.append(row)
    return pd.DataFrame(rows)


def rule_example() -> pd.DataFrame:
    """The rule on a constructed set of comparisons (numbers, not outcomes): a supported, a refuted, a mixed,
    a majority ("most") and a not-measured case, each with the verdict the rule gives. Shown in the notebook."""
    cases = [
        ("supported", "all", [(0.002, 0.01), (0.003, 0.002)]),
        ("not supported (one refutes)", "all", [(0.002, 0.01), (-0.004, 0.001)]),
        ("mixed", "all", [(0.002, 0.01), (0.001, 0.40)]),
        ("supported by a majority", "most", [(0.002, 0.01), (0.003, 0.02), (0.001, 0.30)]),
        ("not measured", "all", [(0.002, 0.01), None]),
    ]
    rows = []
    for name, quantifier, comparisons in cases:
        outcomes = [NOT_MEASURED if c is None else outcome(c[0], p=c[1]) for c in comparisons]
        rows.append({"case": name, "quantifier": quantifier,
                     "comparisons (difference, p)": "; ".join("missing" if c is None else f"{c[0]:+.3f}, p {c[1]:.2f}"
                                                              for c in comparisons),
                     "outcomes": ", ".join(outcomes), "verdict": verdict(outcomes, quantifier)})
    return pd.DataFrame(rows)


__all__ = ["ALPHA", "CLAIMS", "Claim", "ClaimsResult", "DATASETS", "DATASET_BACKBONES", "FOCUS_BACKBONES",
           "OPTIMISTIC", "RULE", "ReadOnlyExecutor", "TrainingRefused", "claims_grid", "measure_claims", "outcome",
           "paper_evidence", "rule_example", "so_far", "verdict", "welch_p"]
