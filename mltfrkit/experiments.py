"""The paper's experiments as pandas tables built from the result store (training what is missing).

Each notebook creates one :class:`Experiment` from its parameters and calls one method:

=====================  ==========================================================  ============
method                 what                                                        paper
=====================  ==========================================================  ============
``te_vs_re``           backbone without LLM vs LLM-TE vs LLM-RE per token source   Fig. 1
``table2``             backbones without vs with MLTFR, Imp., seeds, paired test   Table 2
``ablation``           full MLTFR vs ``consensus=False`` per backbone              Table 3
``noise_ablation``     MLTFR over the filter's noise mode and K                    (ours)
``expert_sweep``       m = 1..6 experts, the first m sources of the preset         Fig. 3
=====================  ==========================================================  ============

Profiles: ``quick`` (a few epochs, vocabularies capped at 4,000 tokens, one seed: minutes on a laptop
CPU) and ``paper`` (the paper's settings: early stopping on validation NDCG@20, four experts, three
seeds; vocabularies capped at 16,000 tokens per source for CPU budgets). Any explicit argument
overrides the profile; ``mltfrkit train --profile paper`` starts the same runs by hand.

Published figures (:data:`PAPER_TABLE2`, :data:`PAPER_TABLE3`) are shown beside ours only when the
dataset is one of the paper's; they come from the paper's own tables, not from this toolkit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mltfrkit.runs import RunSpec
from mltfrkit.store import ResultStore, flatten
from mltfrkit.train import TrainConfig

# --------------------------------------------------------------------------------------------
# Published figures. Source: Zhou et al., "Multi-LLM Token Filtering and Routing for Sequential
# Recommendation", arXiv 2604.18200, Table 2 (HR@20 / NDCG@20 without ("W/O") and with MLTFR;
# its Imp. column is recomputed by `improvement`) and Table 3 (Full vs w/o SC). The Pantry rows
# are the ones quoted in ../shared/data/README.md. Caution (same README): the authors' code picks
# the best epoch on the test set, so these figures are optimistic.
# --------------------------------------------------------------------------------------------
PAPER_SOURCE = "MLTFR paper (arXiv 2604.18200), Tables 2 and 3"
PAPER_TABLE2: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    # dataset -> backbone -> {"W/O": (HR@20, NDCG@20), "MLTFR": (HR@20, NDCG@20)}
    "Office": {
        "sasrec": {"W/O": (0.02636, 0.01076), "MLTFR": (0.02684, 0.01104)},
        "bert4rec": {"W/O": (0.02413, 0.00984), "MLTFR": (0.02759, 0.01144)},
        "fmlprec": {"W/O": (0.02108, 0.00906), "MLTFR": (0.02275, 0.00907)},
        "linrec": {"W/O": (0.02567, 0.01026), "MLTFR": (0.02546, 0.01028)},
        "cl4srec": {"W/O": (0.02535, 0.01002), "MLTFR": (0.02650, 0.01021)},
        "bsarec": {"W/O": (0.02477, 0.00993), "MLTFR": (0.02524, 0.00996)},
    },
    "Music": {
        "sasrec": {"W/O": (0.04643, 0.01801), "MLTFR": (0.04669, 0.01895)},
        "bert4rec": {"W/O": (0.04048, 0.01568), "MLTFR": (0.05027, 0.01979)},
        "fmlprec": {"W/O": (0.04348, 0.01683), "MLTFR": (0.04402, 0.01723)},
        "linrec": {"W/O": (0.04613, 0.01715), "MLTFR": (0.04669, 0.01720)},
        "cl4srec": {"W/O": (0.04674, 0.01857), "MLTFR": (0.04897, 0.01943)},
        "bsarec": {"W/O": (0.04441, 0.01745), "MLTFR": (0.04515, 0.01779)},
    },
    "Pantry": {
        "sasrec": {"W/O": (0.03861, 0.01490), "MLTFR": (0.04366, 0.01626)},
        "bert4rec": {"W/O": (0.03222, 0.01188), "MLTFR": (0.04549, 0.01770)},
        "fmlprec": {"W/O": (0.03664, 0.01387), "MLTFR": (0.04037, 0.01567)},
        "linrec": {"W/O": (0.04324, 0.01699), "MLTFR": (0.04450, 0.01729)},
        "cl4srec": {"W/O": (0.03903, 0.01632), "MLTFR": (0.04043, 0.01631)},
        "bsarec": {"W/O": (0.04086, 0.01494), "MLTFR": (0.04079, 0.01630)},
    },
    "Beer": {
        "sasrec": {"W/O": (0.10045, 0.05115), "MLTFR": (0.10139, 0.05122)},
        "bert4rec": {"W/O": (0.11302, 0.05073), "MLTFR": (0.10834, 0.04651)},
        "fmlprec": {"W/O": (0.08560, 0.04266), "MLTFR": (0.08505, 0.04257)},
        "linrec": {"W/O": (0.05764, 0.02223), "MLTFR": (0.05905, 0.02287)},
        "cl4srec": {"W/O": (0.09371, 0.04795), "MLTFR": (0.09580, 0.04807)},
        "bsarec": {"W/O": (0.09777, 0.05050), "MLTFR": (0.10041, 0.05163)},
    },
}
PAPER_TABLE3: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    # dataset -> backbone -> {"Full": (HR@20, NDCG@20), "w/o SC": (HR@20, NDCG@20)}
    "Pantry": {
        "sasrec": {"Full": (0.04366, 0.01626), "w/o SC": (0.04071, 0.01516)},
        "bert4rec": {"Full": (0.04549, 0.01770), "w/o SC": (0.04394, 0.01729)},
        "fmlprec": {"Full": (0.04037, 0.01567), "w/o SC": (0.03966, 0.01460)},
        "linrec": {"Full": (0.04450, 0.01729), "w/o SC": (0.04282, 0.01622)},
        "cl4srec": {"Full": (0.04043, 0.01631), "w/o SC": (0.04099, 0.01604)},
        "bsarec": {"Full": (0.04079, 0.01630), "w/o SC": (0.03678, 0.01436)},
    },
    "Music": {
        "sasrec": {"Full": (0.04669, 0.01895), "w/o SC": (0.04541, 0.01755)},
        "bert4rec": {"Full": (0.05027, 0.01979), "w/o SC": (0.05109, 0.02057)},
        "fmlprec": {"Full": (0.04402, 0.01723), "w/o SC": (0.04379, 0.01737)},
        "linrec": {"Full": (0.04669, 0.01720), "w/o SC": (0.04616, 0.01734)},
        "cl4srec": {"Full": (0.04897, 0.01943), "w/o SC": (0.04858, 0.01903)},
        "bsarec": {"Full": (0.04515, 0.01779), "w/o SC": (0.04467, 0.01823)},
    },
}

METRICS = ("HR@20", "NDCG@20")
PAPER_BACKBONES = ["sasrec", "bert4rec", "fmlprec", "linrec", "cl4srec", "bsarec"]


@dataclass(frozen=True)
class Profile:
    name: str
    epochs: int
    patience: int
    seeds: tuple[int, ...]
    backbones: tuple[str, ...]
    llms: str
    mltfr: dict  # MLTFRConfig overrides for every MLTFR run
    te_sources: int  # how many sources of the preset Fig. 1 compares
    noise_top_ks: tuple[int, ...]
    max_experts: int


PROFILES = {
    # n_experts=3: the first three offline sources include two same-width tables, so the
    # consensus expert (and with it the w/o SC ablation) exists even in the quick profile.
    # Sized so that the whole batch run (`make run`) stays under 20 minutes on a 2-core CPU.
    "quick": Profile("quick", epochs=2, patience=10, seeds=(0,), backbones=("sasrec",), llms="offline",
                     mltfr={"n_experts": 3, "max_vocab": 4000, "fisher_samples": 32}, te_sources=3,
                     noise_top_ks=(1,), max_experts=6),
    # The paper's settings, with two CPU budgets: each source capped at its first 16,000 kept tokens
    # (uncapped, the exact straight-through gradient over all 359k tokens of 4 offline experts costs
    # about 20x a SASRec step here; see README "Making MLTFR cheap") and Fisher estimated on 256 users.
    # epochs=100 is `mltfrkit train`'s default, so runs started from the command line are the same
    # store entries; early stopping (patience 10) ends every Pantry/Beauty run long before it.
    "paper": Profile("paper", epochs=100, patience=10, seeds=(0, 1, 2), backbones=tuple(PAPER_BACKBONES),
                     llms="offline", mltfr={"n_experts": 4, "max_vocab": 16000, "fisher_samples": 256},
                     te_sources=6, noise_top_ks=(1, 5, 10, 20), max_experts=6),
}


# Experiments whose runs `Experiment.grid` / `mltfrkit sweep` know ("ablation" = the ablation notebook's
# two grids, Table 3 and noise x K; "all" = every notebook's runs).
GRIDS = ("table2", "ablation", "table3", "noise_ablation", "expert_sweep", "te_vs_re", "all")

# Table 3's comparison runs the other way round from Table 2's: the ablated model against the full
# one, so a negative value means the consensus expert helps.
ABLATION_IMP = "w/o SC vs Full (%)"


def improvement(hr_base: float, ndcg_base: float, hr: float, ndcg: float) -> float:
    """The paper's Imp. (%): geometric mean of the HR and NDCG ratios over the baseline, minus 1."""
    if min(hr_base, ndcg_base) <= 0:
        return float("nan")
    return (math.sqrt((hr / hr_base) * (ndcg / ndcg_base)) - 1.0) * 100.0


def paired_p(a: list[float], b: list[float]) -> float:
    """Two-sided paired t-test over seeds (NaN with fewer than 3 pairs or no variation)."""
    if len(a) < 3 or len(a) != len(b):
        return float("nan")
    from scipy import stats

    diff = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if np.allclose(diff, diff[0]):
        return 0.0 if diff[0] != 0 else 1.0
    return float(stats.ttest_rel(b, a).pvalue)


def summarise(records: pd.DataFrame, by: list[str], metrics=METRICS) -> pd.DataFrame:
    """Mean and std over seeds for each group: columns ``<metric>`` and ``<metric> std``, ``seeds``."""
    grouped = records.groupby(by, sort=False, dropna=False)
    out = grouped[list(metrics)].mean()
    std = grouped[list(metrics)].std(ddof=1)  # NaN for a single seed: undefined, not zero
    for metric in metrics:
        out[f"{metric} std"] = std[metric]
    out["seeds"] = grouped["seed"].nunique()
    return out.reset_index()


@dataclass
class Experiment:
    """One dataset, one profile, one store. Creating it checks the dataset at once."""

    dataset: str
    data_dir: str | None = None
    profile: str = "quick"
    backbones: list[str] | None = None
    llms: str | list[str] | None = None
    seeds: list[int] | None = None
    epochs: int | None = None
    device: str = "auto"
    runs_dir: str | None = None
    progress: bool = True
    mltfr_options: dict | None = None  # MLTFRConfig overrides on top of the profile's
    # Who trains missing runs (mltfrkit.executors): "local" (this process, one after another),
    # "processes" (`workers` processes of `threads` threads), "ray" (a local Ray, or the cluster at
    # `ray_address`), "auto" (processes when this machine has more than one core).
    executor: str = "local"
    workers: int | None = None
    threads: int | None = None
    ray_address: str | None = None
    store: ResultStore = field(init=False, repr=False)

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {sorted(PROFILES)}, not {self.profile!r}")
        settings = PROFILES[self.profile]
        self.settings = settings
        self.backbones = [b.lower() for b in (self.backbones or settings.backbones)]
        self.llms = self.llms or settings.llms
        self.seeds = list(self.seeds if self.seeds is not None else settings.seeds)
        self.epochs = int(self.epochs or settings.epochs)
        from mltfrkit.executors import make_executor

        self.store = ResultStore(self.runs_dir, self.data_dir, progress=self.progress,
                                 executor=make_executor(self.executor, self.workers, self.threads, self.ray_address))
        self.source = self.dataset  # a registered name or a path: what run specs refer to
        self.split = self.store.split(self.source)  # fails here, with the library's message, if missing
        self.dataset = self.split.name  # display name (file stem for a path)
        self.mltfr = {**self.settings.mltfr, **(self.mltfr_options or {})}

    # -- specs ---------------------------------------------------------------------------
    def spec(self, backbone: str = "sasrec", plugin: str = "none", seed: int = 0, **options) -> RunSpec:
        train = TrainConfig(epochs=self.epochs, patience=self.settings.patience, seed=seed, device=self.device)
        if plugin == "mltfr":
            options = {"llms": self.llms, **self.mltfr, **options}
        return RunSpec(self.source, backbone=backbone, train=train, plugin=plugin, plugin_options=options)

    def run(self, specs: list[RunSpec], desc: str) -> pd.DataFrame:
        """Results for the specs (stored ones are read, missing ones trained) as one row per run."""
        return self.store.records(self.store.ensure_many(specs, desc=desc))

    def grid(self, name: str, **options) -> list[RunSpec]:
        """The runs of one experiment (``options``: that experiment's arguments, e.g. ``experts``),
        without training anything: what ``mltfrkit sweep NAME`` trains, and what the notebook of that
        name then reads from the store. Names: :data:`GRIDS`."""
        builders = {"table2": self._table2_specs, "te_vs_re": self._te_vs_re_specs, "table3": self._ablation_specs,
                    "noise_ablation": self._noise_specs, "expert_sweep": self._expert_specs}
        if name in builders:
            return builders[name](**options)
        if name == "ablation":  # the ablation notebook: Table 3 and the noise x K grid
            return self._ablation_specs() + self._noise_specs(**options)
        if name == "all":
            return [spec for part in ("table2", "ablation", "expert_sweep", "te_vs_re") for spec in self.grid(part)]
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(GRIDS)}")

    def sweep(self, name: str, **options) -> list[dict]:
        """Train every missing run of an experiment (its tables are not built); returns the results."""
        specs = self.grid(name, **options)
        return self.store.ensure_many(specs, desc=f"{name} runs")

    def token_sources(self) -> list[str]:
        from mltfrkit.vocab import resolve_preset

        return resolve_preset(self.llms)

    @property
    def output_tag(self) -> str:
        """What output files are named after: the dataset, plus the profile unless it is the default
        ``quick``, so a quick run never overwrites a paper run's figures."""
        return self.dataset if self.profile == "quick" else f"{self.dataset}-{self.profile}"

    @property
    def paper_dataset(self) -> str | None:
        return self.dataset if self.dataset in PAPER_TABLE2 else None

    def inspectable_runs(self) -> pd.DataFrame:
        """Finished MLTFR runs of this dataset for the token inspector; when there is none, trains the
        profile's default one (the first backbone, first seed: a run Table 2 also uses)."""
        from mltfrkit.inspector import mltfr_runs

        def of_this_dataset():
            runs = mltfr_runs(self.store)
            return runs[runs["dataset"] == self.dataset].reset_index(drop=True) if len(runs) else runs

        runs = of_this_dataset()
        if runs.empty:
            self.store.ensure(self.spec(self.backbones[0], "mltfr", seed=self.seeds[0]))
            runs = of_this_dataset()
        return runs

    # -- Fig. 1 --------------------------------------------------------------------------
    def _te_vs_re_specs(self, sources: list[str] | None = None, backbone: str = "sasrec") -> list[RunSpec]:
        sources = sources or self.token_sources()[:self.settings.te_sources]
        base = [self.spec(backbone, seed=s) for s in self.seeds]
        return base + [self.spec(backbone, plugin, seed=s, llm=source)
                       for source in sources for plugin in ("te", "re") for s in self.seeds]

    def te_vs_re(self, sources: list[str] | None = None, backbone: str = "sasrec") -> pd.DataFrame:
        """Rows: (source, method) with method in W/O (the same for every source), LLM-TE, LLM-RE."""
        records = self.run(self._te_vs_re_specs(sources, backbone), desc="Fig. 1 runs")
        records["method"] = records["plugin"].map({"none": "W/O", "te": "LLM-TE", "re": "LLM-RE"})
        records["source"] = records["llms"].fillna("(none)")
        return summarise(records, ["backbone", "source", "method"])

    # -- Table 2 -------------------------------------------------------------------------
    def _table2_specs(self) -> list[RunSpec]:
        return [self.spec(b, plugin, seed=s) for b in self.backbones for plugin in ("none", "mltfr")
                for s in self.seeds]

    def table2(self) -> pd.DataFrame:
        """One row per backbone: W/O and MLTFR mean/std over seeds, Imp. (%), paired p-values, and the
        paper's figures beside ours when the dataset is one of the paper's."""
        records = self.run(self._table2_specs(), desc="Table 2 runs")
        return self._compare(records, "plugin", {"none": "W/O", "mltfr": "MLTFR"}, PAPER_TABLE2)

    def _compare(self, records: pd.DataFrame, column: str, names: dict, published: dict,
                 imp_label: str = "Imp. (%)") -> pd.DataFrame:
        """Second variant of ``names`` against the first; ``imp_label`` names the direction."""
        (base_key, base), (other_key, other) = names.items()
        rows = []
        for backbone in self.backbones:
            mine = records[records["backbone"] == backbone]
            a = mine[mine[column] == base_key].sort_values("seed")
            b = mine[mine[column] == other_key].sort_values("seed")
            row = {"backbone": backbone}
            for label, frame in ((base, a), (other, b)):
                for metric in METRICS:
                    row[f"{label} {metric}"] = frame[metric].mean()
                    row[f"{label} {metric} std"] = frame[metric].std(ddof=1)  # NaN for one seed
            row[imp_label] = improvement(row[f"{base} HR@20"], row[f"{base} NDCG@20"],
                                         row[f"{other} HR@20"], row[f"{other} NDCG@20"])
            paired = a.merge(b, on="seed", suffixes=("_a", "_b"))
            for metric in METRICS:
                row[f"p ({metric})"] = paired_p(paired[f"{metric}_a"].tolist(), paired[f"{metric}_b"].tolist())
            row["seeds"] = int(len(paired))
            paper = published.get(self.dataset, {}).get(backbone)
            if paper:
                for label in (base, other):
                    row[f"paper {label} HR@20"], row[f"paper {label} NDCG@20"] = paper[label]
                row[f"paper {imp_label}"] = improvement(*paper[base], *paper[other])
            rows.append(row)
        return pd.DataFrame(rows)

    # -- Table 3 and the selection-noise ablation ------------------------------------------
    def _ablation_specs(self) -> list[RunSpec]:
        return [self.spec(b, "mltfr", seed=s, **({} if full else {"consensus": False}))
                for b in self.backbones for full in (True, False) for s in self.seeds]

    def _noise_specs(self, noise_modes: list[str] | None = None, top_ks: list[int] | None = None,
                     backbone: str | None = None) -> list[RunSpec]:
        from mltfrkit.mltfr import NOISE_MODES

        noise_modes = list(noise_modes or NOISE_MODES)
        top_ks = list(top_ks or self.settings.noise_top_ks)
        backbone = backbone or self.backbones[0]
        return [self.spec(backbone, "mltfr", seed=s, noise=mode, top_k=k)
                for mode in noise_modes for k in top_ks for s in self.seeds]

    def ablation(self) -> pd.DataFrame:
        """Full MLTFR vs the same without the consensus expert (``consensus=False``), per backbone."""
        records = self.run(self._ablation_specs(), desc="Table 3 runs")
        records["variant"] = np.where(records["consensus"].astype(bool), "Full", "w/o SC")
        return self._compare(records, "variant", {"Full": "Full", "w/o SC": "w/o SC"}, PAPER_TABLE3,
                             imp_label=ABLATION_IMP)

    def noise_ablation(self, noise_modes: list[str] | None = None, top_ks: list[int] | None = None,
                       backbone: str | None = None) -> pd.DataFrame:
        """MLTFR over the filter's noise mode (paper / tempered / none) and K, one backbone."""
        records = self.run(self._noise_specs(noise_modes, top_ks, backbone), desc="noise x K runs")
        return summarise(records, ["backbone", "noise", "top_k"])

    # -- Fig. 3 --------------------------------------------------------------------------
    def _expert_specs(self, experts: list[int] | None = None) -> list[RunSpec]:
        sources = self.token_sources()
        experts = list(experts or range(1, min(self.settings.max_experts, len(sources)) + 1))
        return [self.spec(b, "mltfr", seed=s, n_experts=m) for b in self.backbones for m in experts
                for s in self.seeds]

    def expert_sweep(self, experts: list[int] | None = None) -> pd.DataFrame:
        """m experts = the first m sources of the preset, in its order; rows (backbone, m)."""
        sources = self.token_sources()
        records = self.run(self._expert_specs(experts), desc="Fig. 3 runs")
        table = summarise(records, ["backbone", "n_experts"])
        table["n_experts"] = table["n_experts"].astype(int)
        table["added source"] = [sources[m - 1] for m in table["n_experts"]]
        return table


def stored_records(store: ResultStore | None = None) -> pd.DataFrame:
    """Every run in a store (default location) as one table."""
    return (store or ResultStore()).records()


__all__ = ["ABLATION_IMP", "Experiment", "GRIDS", "PAPER_SOURCE", "PAPER_TABLE2", "PAPER_TABLE3", "PROFILES", "Profile", "flatten",
           "improvement", "paired_p", "stored_records", "summarise"]
