"""The MixRec comparison as a table from the store: MixRec, MixRec_base, LLMRec beside SASRec and
SASRec + MLTFR on the same split, with the MixRec paper's metrics (NDCG@10, Recall@10, MRR; with one
held-out item Recall@10 = HR@10) and the MLTFR paper's (HR@20, NDCG@20). Issue 19, acceptance 2.

Profiles: ``cpu`` (the reduced scale this 2-core CPU trains; every reduction in :data:`CPU_REDUCTIONS`)
and ``paper`` (section 3.1.4 and Table 3). The backbone runs come from :class:`mltfrkit.experiments.Experiment`
(so a notebook's SASRec runs are reused); their MRR is computed from their stored best weights with the
same ranking code (nothing is retrained).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from mltfrkit.archive import WeightsNotArchived
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
# The cpu profile's SASRec + MLTFR rows: the quick profile's MLTFR (3 offline experts, Fisher on 32 users) with
# 4,000 tokens a source in float32, the options the stored runs of the README's reduced table were trained with.
CPU_BACKBONE_MLTFR = {"max_vocab": 4000, "precision": "float32"}


def mixrec_spec(variant: str, dataset: str = "ml-100k", profile: str = "cpu", seed: int = 0,
                epochs: int | None = None, design: tuple[int, ...] | None = None, llm: str = "SmolLM2-135M",
                text: str = "titles", model_options: dict | None = None,
                train_options: dict | None = None) -> MixRecSpec:
    """One variant's run under a profile; ``model_options`` / ``train_options`` override the profile's
    :class:`MixRecConfig` / :class:`MixRecTrainConfig` fields (a tiny LLM in tests, another device)."""
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
    if model_options:
        model = replace(model, **model_options)
    if train_options:
        train = replace(train, **train_options)
    return MixRecSpec(dataset, llm=llm, text=text, model=model, train=train)


# The DAMoE search per profile (section 2.3.3, 3.1.4, Table 3): iterations in all, random initial designs, the
# Data_BO share b, epochs per trial (None: the profile's), the search's seed. The paper gives 30 iterations and
# b = 0.2 on Pantry; it states neither the initial designs nor a trial's epochs.
BO_SETTINGS = {
    "cpu": {"iterations": 6, "n_init": 3, "user_fraction": 0.2, "epochs": 1, "seed": 0},
    "paper": {"iterations": 30, "n_init": 5, "user_fraction": 0.2, "epochs": None, "seed": 0},
}


def bo_spec(spec: MixRecSpec, user_fraction: float, epochs: int = 1) -> MixRecSpec:
    """A BO trial's base spec: Data_BO (a share of the users), validation MRR as the objective (2.3.3)."""
    return replace(spec, model=replace(spec.model, variant="mixrec"),
                   train=replace(spec.train, epochs=epochs or spec.train.epochs, user_fraction=user_fraction,
                                 valid_metric="MRR"))


def backbone_metrics(run_dir, data_dir=None, ks=(5, 10, 20), batch: int = 256) -> dict[str, float]:
    """HR/NDCG@k and MRR on the test split of a stored backbone run, from its selected weights; cached in
    ``<run dir>/mixrec_metrics.json`` (so a run carried by a result archive, without weights, still answers)."""
    from mltfrkit.paths import atomic_write_json
    from mltfrkit.runs import load_trained
    from mltfrkit.store import read_json

    path = Path(run_dir) / "mixrec_metrics.json"
    cached = read_json(path)
    if cached is not None and cached.get("ks") == list(ks):
        return cached["metrics"]
    out = _backbone_metrics(*load_trained(run_dir, data_dir), ks, batch)
    atomic_write_json(path, {"ks": list(ks), "metrics": out})
    return out


@torch.no_grad()
def _backbone_metrics(spec, split, model, ks, batch) -> dict[str, float]:
    from mltfrkit.train.metrics import metrics_from_ranks, pad_left, target_ranks

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


# --------------------------------------------------------------------------- the study (notebooks/mixrec.ipynb)

SHOWN = ["NDCG@10", "Recall@10", "MRR", "HR@20", "NDCG@20"]  # the MixRec paper's three, then the MLTFR paper's
VARIANT_LABELS = {"llmrec": "LLMRec", "mixrec_base": "MixRec_base", "mixrec": "MixRec"}
# Fig. 5 of the MixRec paper: LLMRec (its Table 2), Variation 1 = MixRec_base, Variation 2 = MixRec without the
# search (every DAMoE part serial), MixRec = with the design BO chose.
ABLATION_STEPS = [("LLMRec", "LLMRec"), ("MixRec_base", "Variation 1 (MixRec_base)"),
                  ("MixRec (all serial)", "Variation 2 (MixRec, no BO)"), ("MixRec (BO design)", "MixRec (BO design)")]


def design_text(design) -> str:
    """``110 110 011 ...``: the bits of each DAMoE layer (causal expert, context expert, rec adapter) together."""
    bits = "".join(str(int(b)) for b in design)
    return " ".join(bits[i:i + 3] for i in range(0, len(bits), 3))


def parse_variant(name: str) -> tuple[str, tuple[int, ...] | str | None]:
    """A MixRec variant as notebooks and scripts name it: ``llmrec``, ``mixrec_base``, ``mixrec`` (all serial),
    ``mixrec:<bits>`` (a DAMoE design, e.g. ``mixrec:110110011011100101``) or ``mixrec:bo`` (the design the
    stored search of the profile chose). Returns (variant, design or "bo" or None)."""
    from mltfrkit.mixrec.model import VARIANTS

    variant, _, design = str(name).strip().partition(":")
    if variant not in VARIANTS:
        raise ValueError(f"unknown MixRec variant {name!r}; valid: {', '.join(VARIANTS)}, mixrec:<bits>, mixrec:bo")
    if not design:
        return variant, None
    if variant != "mixrec":
        raise ValueError(f"{name!r}: only mixrec has a DAMoE design (mixrec:<bits> or mixrec:bo)")
    if design == "bo":
        return variant, "bo"
    if set(design.replace(" ", "")) - {"0", "1"}:
        raise ValueError(f"{name!r}: a design is 0 (serial) / 1 (parallel) bits, 3 per DAMoE layer")
    return variant, tuple(int(b) for b in design.replace(" ", ""))


def variant_label(variant: str, design=None, bo: bool = False) -> str:
    if variant != "mixrec":
        return VARIANT_LABELS[variant]
    if design is None:
        return "MixRec (all serial)"
    return f"MixRec ({'BO design' if bo else 'design'} {design_text(design)})"


@dataclass
class MixRecStudy:
    """MixRec, MixRec_base and LLMRec beside the toolkit's backbones W/O and with MLTFR on one dataset, from
    the result store: the comparison table (mean ± std over seeds, a paired t-test over seeds of every row
    against the first backbone W/O), the DAMoE search's trials and chosen design, and Fig. 5's ablation.

    Nothing is trained unless ``train_missing``; a missing run is counted in ``missing seeds`` and its row
    keeps the seeds that exist. Profiles: ``cpu`` (:data:`CPU_REDUCTIONS`, :data:`BO_SETTINGS` ``cpu``; the
    backbones as ``scripts/mixrec_reduced.py`` trains them: the quick profile's MLTFR options with
    :data:`CPU_BACKBONE_MLTFR`, at most
    ``backbone_epochs`` = 100 epochs with early stopping, on the CPU) and ``paper`` (section 3.1.4; the
    backbones of the paper profile). ``model_options`` / ``train_options`` / ``bo_options`` override the
    profile's MixRec options (tests use a tiny LLM folder and tiny sizes)."""

    dataset: str = "ml-100k"
    data_dir: str | None = None
    profile: str = "cpu"
    seeds: list[int] | None = None
    epochs: int | None = None  # MixRec's (None: the profile's, cpu 2 / paper 40)
    llm: str = "SmolLM2-135M"
    text: str = "titles"
    model_options: dict | None = None
    train_options: dict | None = None
    bo_options: dict | None = None  # BO_SETTINGS keys, plus "pr": PRSettings fields
    backbones: list[str] | None = None  # ID-based rows, each W/O and with MLTFR (default ["sasrec"])
    backbone_epochs: int | None = None  # None: 100 (cpu, as scripts/mixrec_reduced.py) / the paper profile's
    llms: str | list[str] | None = None  # MLTFR's token sources
    mltfr_options: dict | None = None
    device: str | None = None  # None: the profile's (cpu: "cpu"; paper: "auto"), MixRec and backbones alike
    runs_dir: str | None = None
    train_missing: bool = False
    executor: str = "local"
    workers: int | None = None
    threads: int | None = None
    ray_address: str | None = None
    log: Callable[[str], None] | None = print
    experiment: object = field(init=False, repr=False)

    def __post_init__(self):
        from mltfrkit.experiments import Experiment, _as_list

        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {list(PROFILES)}, not {self.profile!r}")
        self.seeds = _as_list(self.seeds, "seeds", int, "-p seeds '[0, 1, 2]'") or [0]
        self.backbones = _as_list(self.backbones, "backbones", str, "-p backbones sasrec") or ["sasrec"]
        for name in ("model_options", "train_options", "bo_options", "mltfr_options"):
            value = getattr(self, name)
            if isinstance(value, str):
                import json

                setattr(self, name, json.loads(value))
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name}={value!r}: must be a mapping of options, e.g. -p {name} '{{\"epochs\": 1}}'")
        self.bo = {**BO_SETTINGS[self.profile], **{k: v for k, v in (self.bo_options or {}).items() if k != "pr"}}
        unknown = set(self.bo) - set(BO_SETTINGS[self.profile])
        if unknown:
            raise ValueError(f"bo_options: unknown {sorted(unknown)}; valid: {sorted(BO_SETTINGS['cpu'])} and 'pr'")
        train = dict(self.train_options or {})
        if self.device is not None:
            train["device"] = self.device
        self._train = train
        backbone_device = self.device or ("cpu" if self.profile == "cpu" else "auto")
        self.experiment = Experiment(self.dataset, data_dir=self.data_dir,
                                     profile="quick" if self.profile == "cpu" else "paper",
                                     backbones=self.backbones, llms=self.llms, seeds=self.seeds,
                                     epochs=self.backbone_epochs or 100, device=backbone_device,
                                     runs_dir=self.runs_dir, progress=False,
                                     mltfr_options={**(CPU_BACKBONE_MLTFR if self.profile == "cpu" else {}),
                                                    **(self.mltfr_options or {})},
                                     executor=self.executor, workers=self.workers, threads=self.threads,
                                     ray_address=self.ray_address)
        self.split = self.experiment.split
        self.dataset = self.split.name
        self.source = self.experiment.source

    # -- specs and stored runs --------------------------------------------------------------
    def spec(self, variant: str, seed: int = 0, design=None) -> MixRecSpec:
        return mixrec_spec(variant, self.source, self.profile, seed, self.epochs, design, self.llm, self.text,
                           self.model_options, self._train)

    def bo_base(self) -> MixRecSpec:
        """The spec every BO trial varies the design of (Data_BO, validation MRR)."""
        return bo_spec(self.spec("mixrec", seed=self.bo["seed"]), self.bo["user_fraction"], self.bo["epochs"])

    def _run_dir(self, spec: MixRecSpec):
        return spec.run_dir(self.split, self.runs_dir, self.data_dir)

    def result(self, spec: MixRecSpec) -> dict | None:
        """A MixRec run's stored result (None when missing, unless ``train_missing``: then it is trained)."""
        from mltfrkit.store import read_result

        run_dir = self._run_dir(spec)
        stored = read_result(run_dir / "result.json")
        if stored is not None:
            stored["run_dir"] = str(run_dir)
            return stored
        if not self.train_missing:
            return None
        from mltfrkit.mixrec.train import run_mixrec

        return run_mixrec(spec, data_dir=self.data_dir, runs_dir=self.runs_dir, split=self.split, log=self.log)

    def search(self):
        """The DAMoE search's trials (:class:`mltfrkit.mixrec.search.SearchLog`): read from the store, run (or
        resumed) only with ``train_missing``."""
        from mltfrkit.mixrec.search import PRSettings, search_damoe, stored_search

        base, bo = self.bo_base(), self.bo
        trials = stored_search(base, self.split, self.runs_dir, bo["iterations"], bo["n_init"], bo["seed"])
        if len(trials.values) < bo["iterations"] and self.train_missing:
            settings = PRSettings(**(self.bo_options or {}).get("pr", {}))
            trials = search_damoe(base, self.split, self.runs_dir, bo["iterations"], bo["n_init"], bo["seed"],
                                  settings, log=self.log)
        return trials

    def chosen_design(self) -> tuple[int, ...] | None:
        """The design the finished search chose (None while it has not finished)."""
        trials = self.search()
        return trials.best()[0] if len(trials.values) >= self.bo["iterations"] else None

    def bo_trials(self) -> pd.DataFrame:
        """One row per BO trial: its design, its validation MRR on Data_BO (the objective), whether BO chose it."""
        trials = self.search()
        best = trials.best()[0] if trials.values else None
        return pd.DataFrame([{"trial": n + 1, "kind": "random" if n < self.bo["n_init"] else "BO",
                              "design": design_text(d), "valid MRR (Data_BO)": v,
                              "chosen": best is not None and tuple(d) == tuple(best), "run_dir": run}
                             for n, (d, v, run) in enumerate(zip(trials.designs, trials.values, trials.runs))],
                            columns=["trial", "kind", "design", "valid MRR (Data_BO)", "chosen", "run_dir"])

    def variants(self) -> list[tuple[str, str, tuple[int, ...] | None]]:
        """(label, variant, design) of the MixRec rows: LLMRec, MixRec_base, MixRec all serial, MixRec with the
        design BO chose (left out while the search is unfinished)."""
        rows = [(variant_label(v), v, None) for v in ("llmrec", "mixrec_base", "mixrec")]
        design = self.chosen_design()
        if design is not None:
            rows.append((variant_label("mixrec", design, bo=True), "mixrec", design))
        return rows

    def per_seed(self) -> pd.DataFrame:
        """One row per (model, seed) of the stored runs: the test metrics of result.json (``Recall@10`` =
        ``HR@10``: one held-out item), and for the backbones MRR from their stored weights
        (:func:`backbone_metrics`); a missing run has a row with ``missing`` True and no metrics."""
        rows = []
        for label, variant, design in self.variants():
            for seed in self.seeds:
                result = self.result(self.spec(variant, seed, design))
                rows.append(self._row(label, "mixrec", variant, design, seed, result,
                                      None if result is None else result["test"]))
        exp = self.experiment
        for backbone in self.backbones:
            for plugin, suffix in (("none", ""), ("mltfr", " + MLTFR")):
                specs = [exp.spec(backbone, plugin, seed=s) for s in self.seeds]
                results = [exp.store.get(spec) for spec in specs]
                if self.train_missing and any(r is None for r in results):
                    results = exp.store.ensure_many(specs, desc=f"{backbone}{suffix} runs")
                name = {"sasrec": "SASRec"}.get(backbone, backbone) + suffix
                for seed, result in zip(self.seeds, results):
                    metrics = None
                    if result is not None:
                        try:
                            mrr = backbone_metrics(result["run_dir"], self.data_dir)["MRR"]
                        except WeightsNotArchived:  # imported before its MRR was cached: the other metrics stand
                            mrr = float("nan")
                        metrics = {**result["test"], "MRR": mrr}
                    rows.append(self._row(name, backbone, plugin, None, seed, result, metrics))
        return pd.DataFrame(rows)

    @staticmethod
    def _row(model, family, variant, design, seed, result, metrics) -> dict:
        row = {"model": model, "family": family, "variant": variant,
               "design": design_text(design) if design is not None else None, "seed": seed,
               "missing": result is None, "run_dir": None if result is None else result["run_dir"]}
        for column in SHOWN:
            key = "HR@10" if column == "Recall@10" else column
            row[column] = np.nan if metrics is None else float(metrics.get(key, np.nan))
        return row

    def reference(self) -> str:
        """The row every other one is tested against: the first backbone without a plug-in (SASRec)."""
        return {"sasrec": "SASRec"}.get(self.backbones[0], self.backbones[0])

    def table(self, per_seed: pd.DataFrame | None = None) -> pd.DataFrame:
        """One row per model: each metric's mean and std over seeds, and a two-sided paired t-test over seeds
        (``p <metric> vs <reference>``; NaN with fewer than 3 common seeds) against :meth:`reference`."""
        from mltfrkit.experiments import paired_p

        per_seed = self.per_seed() if per_seed is None else per_seed
        reference = self.reference()
        base = per_seed[(per_seed["model"] == reference) & ~per_seed["missing"]].set_index("seed")
        rows = []
        for model, frame in per_seed.groupby("model", sort=False):
            stored = frame[~frame["missing"]]
            row = {"model": model, "design": frame["design"].iloc[0], "seeds": len(stored),
                   "missing seeds": int(frame["missing"].sum())}
            for column in SHOWN:  # skipna=False: a seed without a figure (an imported run's MRR) empties the cell
                row[column] = float(stored[column].mean(skipna=False)) if len(stored) else np.nan
                row[f"{column} std"] = float(stored[column].std(ddof=1, skipna=False)) if len(stored) > 1 else np.nan
            common = [s for s in stored["seed"] if s in base.index]
            for column in SHOWN:
                ours = stored.set_index("seed").loc[common, column].tolist()
                theirs = base.loc[common, column].tolist()
                row[f"p {column} vs {reference}"] = np.nan if model == reference else paired_p(theirs, ours)
            rows.append(row)
        return pd.DataFrame(rows)

    def ablation(self, table: pd.DataFrame | None = None) -> pd.DataFrame:
        """Fig. 5 of the MixRec paper from :meth:`table`: LLMRec -> Variation 1 (MixRec_base) -> Variation 2
        (MixRec, every part serial) -> MixRec (BO's design), NDCG@10 and Recall@10 with their std."""
        table = self.table() if table is None else table
        rows = []
        for label, step in ABLATION_STEPS:
            if label == "MixRec (BO design)":  # its label carries the design
                match = table[table["model"].str.startswith("MixRec (BO design")]
            else:
                match = table[table["model"] == label]
            if len(match):
                row = match.iloc[0]
                rows.append({"step": step, "model": row["model"], "seeds": row["seeds"],
                             **{c: row[c] for m in ("NDCG@10", "Recall@10") for c in (m, f"{m} std")}})
        return pd.DataFrame(rows)

    def reductions(self) -> dict[str, str]:
        """What this profile reduces against the paper (:data:`CPU_REDUCTIONS`; none under ``paper``)."""
        return dict(CPU_REDUCTIONS) if self.profile == "cpu" else {}

    @property
    def output_tag(self) -> str:
        return self.dataset if self.profile == "cpu" else f"{self.dataset}-{self.profile}"

    def settings_note(self) -> str:
        """e.g. "cpu profile: 2 epochs, 3 seeds; reduced, not the paper's settings"."""
        seeds = f"{len(self.seeds)} seed{'' if len(self.seeds) == 1 else 's'}"
        epochs = self.spec("mixrec").train.epochs
        note = f"{self.profile} profile: {epochs} epoch{'' if epochs == 1 else 's'}, {seeds}"
        changed = self.profile != "paper" or self.model_options or self.train_options or self.bo_options
        return note + ("; reduced, not the paper's settings" if changed else "")

    def caption(self, what: str) -> str:
        return f"{what} on {self.dataset} ({self.settings_note()})"

    @property
    def title_tag(self) -> str:
        return f" ({self.settings_note()})"


# --------------------------------------------------------------------------- Table 4's mixrec column


def table4_rows(experiment, pool, names, profile: str = "cpu", runs_dir=None, llm: str = "SmolLM2-135M",
                text: str = "titles", train_missing: bool = False, model_options=None, train_options=None,
                bo_options=None, log=print) -> list[dict]:
    """Table 4 rows for MixRec variants (:func:`parse_variant` names) on ``experiment``'s dataset and seeds:
    each stored run scored on the identical candidate pools (:func:`mltfrkit.store.pool_evaluation`, i.e. its
    full-ranking scores restricted to the pool, cached in the run directory), top-1 averaged over seeds per
    user, with the bootstrap interval over users as the ID rows. ``runs_dir``: the MixRec runs' store (None: the
    experiment's). Nothing is trained unless ``train_missing``."""
    from mltfrkit.experiments import pool_row
    from mltfrkit.store import pool_evaluation

    study = MixRecStudy(experiment.source, data_dir=experiment.data_dir, profile=profile, seeds=experiment.seeds,
                        llm=llm, text=text, model_options=model_options, train_options=train_options,
                        bo_options=bo_options, backbones=[experiment.backbones[0]] if experiment.backbones else None,
                        runs_dir=runs_dir if runs_dir is not None else experiment.runs_dir,
                        train_missing=train_missing, log=log)
    rows = []
    for name in names:
        variant, design = parse_variant(name)
        bo = design == "bo"
        if bo:
            design = study.chosen_design()
        if bo and design is None:
            results = [None] * len(study.seeds)
            label = "MixRec (BO design)"
        else:
            results = [study.result(study.spec(variant, seed, design)) for seed in study.seeds]
            label = variant_label(variant, design, bo)
        stored = [r for r in results if r is not None]
        row = {"dataset": experiment.dataset, "method": label, "backbone": "mixrec", "variant": name,
               "seeds": len(stored), "missing seeds": len(results) - len(stored), "paper": None,
               "mixrec_profile": profile}
        if stored:
            row.update(pool_row([pool_evaluation(r["run_dir"], pool, experiment.data_dir) for r in stored]))
        rows.append(row)
    return rows
