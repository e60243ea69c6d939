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
``reproduction_gap``   the authors' configuration to ours, one switch per rung     (ours)
``table4``             top-1 on candidate pools: backbones W/O / MLTFR vs an LLM   Table 4
=====================  ==========================================================  ============

Profiles: ``quick`` (early-stopped runs, vocabularies capped at 2,000 tokens, one seed: minutes on a laptop
CPU) and ``paper`` (the paper's settings: early stopping on validation NDCG@20, four experts, three
seeds; vocabularies capped at 16,000 tokens per source for CPU budgets). Any explicit argument
overrides the profile; ``mltfrkit train --profile paper`` starts the same runs by hand.

Published figures (:data:`PAPER_TABLE2`, :data:`PAPER_TABLE3`) are shown beside ours only when the
dataset is one of the paper's; they come from the paper's own tables, not from this toolkit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mltfrkit.runs import CONFIGURATIONS, RunSpec, configured
from mltfrkit.store import METRICS as STORE_METRICS
from mltfrkit.store import STALL_FRACTION, ResultStore, flatten
from mltfrkit.train import TrainConfig
from mltfrkit.train.trainer import ORACLE_LABEL

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

# Table 4 (RQ4): top-1 accuracy on candidate pools of unstated size and sampling, MLTFR rows of the ID-based
# backbones against glm4-plus prompted with item titles. Only the MLTFR rows are published.
PAPER_TABLE4_SOURCE = "MLTFR paper (arXiv 2604.18200), Table 4 (pool size and negative sampling not stated)"
PAPER_TABLE4: dict[str, dict[str, float]] = {
    "Pantry": {"bert4rec": 0.2746, "fmlprec": 0.2663, "linrec": 0.2710, "sasrec": 0.2719, "glm4-plus": 0.1904},
    "Office": {"bert4rec": 0.2452, "fmlprec": 0.2436, "linrec": 0.2372, "sasrec": 0.2458, "glm4-plus": 0.1214},
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
    table2_controls: tuple[str, ...] = ("wo2",)  # Table 2's control columns (:data:`CONTROLS`)


PROFILES = {
    # n_experts=3: the first three offline sources include two same-width tables, so the
    # consensus expert (and with it the w/o SC ablation) exists even in the quick profile.
    # Sized so that the whole batch run (`make run`) stays under 20 minutes on a 2-core CPU.
    # Every run early-stopped (epochs is only a cap), in the cheap MLTFR setting (2,000 tokens per source,
    # bfloat16 tables: README "Making MLTFR cheap"), with the grids trimmed to what fits: Fig. 1 on two
    # sources, Fig. 3 for m = 1..3. Numbers are real but reduced: every caption says so.
    "quick": Profile("quick", epochs=200, patience=10, seeds=(0,), backbones=("sasrec",), llms="offline",
                     mltfr={"n_experts": 3, "max_vocab": 2000, "precision": "bfloat16", "fisher_samples": 32},
                     te_sources=2, noise_top_ks=(1,), max_experts=3),
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
# two grids, Table 3 and noise x K; "claims" = the runs the claims notebook reads, mltfrkit.claims.claims_grid;
# "all" = the runs of every notebook but the two studies, the reproduction gap and the claims).
GRIDS = ("table2", "ablation", "table3", "noise_ablation", "expert_sweep", "te_vs_re", "reproduction_gap", "claims",
         "all")

# Table 3's comparison runs the other way round from Table 2's: the ablated model against the full
# one, so a negative value means the consensus expert helps.
ABLATION_IMP = "w/o SC vs Full (%)"


# The controls of MLTFR's gain that Table 2 and the reproduction-gap ladder can show beside it.
CONTROLS = {"wo2": "W/O 2-round", "mltfr_re": "MLTFR-RE"}


def schedule_matched(wo: RunSpec, mltfr: RunSpec) -> RunSpec:
    """The W/O 2-round control: the backbone alone (``wo``'s model, no plug-in) trained with exactly
    ``mltfr``'s schedule: its training config, two rounds with the optimizer reset between them, round 2
    continued or restarted and the reported round chosen as MLTFR's round options say. MLTFR trains twice,
    so it gets more epochs and a fresh optimizer that W/O never gets; this baseline gets them too."""
    config = mltfr.mltfr_config()
    return replace(wo, train=mltfr.train, schedule="two_round_restart" if config.round2 == "restart" else "two_round",
                   round_selection=config.round_selection)


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


def run_label(spec: RunSpec) -> str:
    """A run's configuration in a few words, enough to tell the runs of one grid apart: "bert4rec + te
    (SmolLM2-135M)", "sasrec + mltfr (m = 2, w/o SC)", "sasrec (two_round)"."""
    options = spec.plugin_options
    details = [str(options["llm"])] if options.get("llm") else []
    details += [f"m = {options['n_experts']}"] if "n_experts" in options else []
    details += ["w/o SC"] if options.get("consensus") is False else []
    details += [f"tables = {options['tables']}"] if options.get("tables", "llm") != "llm" else []
    details += [f"{key} = {options[key]}" for key in ("noise", "top_k") if key in options]
    details += [spec.schedule] if spec.schedule != "single" else []
    label = spec.backbone + (f" + {spec.plugin}" if spec.plugin != "none" else "")
    return label + (f" ({', '.join(details)})" if details else "")


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
    # "ours" (validation selects, the test split is read once) or "authors" (the paper as its authors ran it:
    # their split, their code's behaviours, test-set selection). Tables of "authors" show the test-selected
    # figures in the metric columns and say so in a `selection` column; they never mix with "ours".
    configuration: str = "ours"
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
        if self.configuration not in CONFIGURATIONS:
            raise ValueError(f"configuration must be one of {list(CONFIGURATIONS)}, not {self.configuration!r}")
        settings = PROFILES[self.profile]
        self.settings = settings
        self._check_parameters()
        self.backbones = [b.lower() for b in (self.backbones or settings.backbones)]
        self.llms = self.llms or settings.llms
        self.seeds = list(self.seeds if self.seeds is not None else settings.seeds)
        self.epochs = int(self.epochs if self.epochs is not None else settings.epochs)
        from mltfrkit.executors import make_executor

        self.store = ResultStore(self.runs_dir, self.data_dir, progress=self.progress,
                                 executor=make_executor(self.executor, self.workers, self.threads, self.ray_address))
        self.source = self.dataset  # a registered name or a path: what run specs refer to
        self.split = self.store.split(self.source)  # fails here, with the library's message, if missing
        self.dataset = self.split.name  # display name (file stem for a path)
        self.mltfr = {**self.settings.mltfr, **(self.mltfr_options or {})}

    def _check_parameters(self) -> None:
        """Notebook parameters arrive from papermill as whatever ``-p NAME VALUE`` parsed to: an int for
        ``-p seeds 3``, a string for ``-p backbones sasrec`` or ``-p seeds '[0,1]'``. Lists may be given as
        a JSON list or comma-separated names; anything else is refused here, naming the parameter and
        showing the form that works (never read letter by letter, never replaced by a default)."""
        self.backbones = _backbone_list(self.backbones)
        self.seeds = _as_list(self.seeds, "seeds", int, "-p seeds '[0, 1, 2]' (one seed: '[3]')")
        if self.seeds is not None and (not self.seeds or min(self.seeds) < 0):
            raise ValueError(f"seeds={self.seeds}: give at least one seed, each >= 0, e.g. -p seeds '[0, 1, 2]'")
        if isinstance(self.llms, str) and self.llms.strip().startswith("["):
            self.llms = _as_list(self.llms, "llms", str, '-p llms \'["all-MiniLM-L6-v2"]\'')
        elif self.llms is not None and not isinstance(self.llms, str):
            self.llms = _as_list(self.llms, "llms", str, "-p llms offline")
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, int)
                                        or self.epochs < 1):
            raise ValueError(f"epochs={self.epochs!r}: must be a whole number >= 1, or None for the profile's "
                             f"default ({self.settings.epochs} in {self.profile!r}); e.g. -p epochs 5")
        if isinstance(self.mltfr_options, str):
            import json

            try:
                self.mltfr_options = json.loads(self.mltfr_options)
            except json.JSONDecodeError:
                pass
        if self.mltfr_options is not None and not isinstance(self.mltfr_options, dict):
            raise ValueError(f"mltfr_options={self.mltfr_options!r}: must be a mapping of MLTFR options, "
                             f"e.g. -p mltfr_options '{{\"max_vocab\": 2000}}'")
        if not isinstance(self.device, str):
            raise ValueError(f"device={self.device!r}: must be a string such as 'auto', 'cpu' or 'cuda'")

    # -- specs ---------------------------------------------------------------------------
    def spec(self, backbone: str = "sasrec", plugin: str = "none", seed: int = 0, **options) -> RunSpec:
        train = TrainConfig(epochs=self.epochs, patience=self.settings.patience, seed=seed, device=self.device)
        if plugin == "mltfr":
            options = {"llms": self.llms, **self.mltfr, **options}
        spec = RunSpec(self.source, backbone=backbone, train=train, plugin=plugin, plugin_options=options)
        return configured(spec, self.configuration)

    def run(self, specs: list[RunSpec], desc: str) -> pd.DataFrame:
        """Results for the specs (stored ones are read, missing ones trained) as one row per run. Under the
        ``authors`` configuration the metric columns hold the test-selected figures (labelled)."""
        records = self.store.records(self.store.ensure_many(specs, desc=desc))
        if self.configuration == "authors":
            for metric in STORE_METRICS:
                records[metric] = records[f"oracle {metric}"]
            records["selection"] = ORACLE_LABEL
        else:
            records["selection"] = "validation"
        return records

    def grid(self, name: str, **options) -> list[RunSpec]:
        """The runs of one experiment (``options``: that experiment's arguments, e.g. ``experts``),
        without training anything: what ``mltfrkit sweep NAME`` trains, and what the notebook of that
        name then reads from the store. Names: :data:`GRIDS`."""
        builders = {"table2": self._table2_specs, "te_vs_re": self._te_vs_re_specs, "table3": self._ablation_specs,
                    "noise_ablation": self._noise_specs, "expert_sweep": self._expert_specs,
                    "reproduction_gap": self._reproduction_gap_specs, "claims": self._claims_specs}
        if name in builders:
            return builders[name](**options)
        if name == "ablation":  # the ablation notebook: Table 3 and the noise x K grid
            return self._ablation_specs() + self._noise_specs(**options)
        if name == "all":
            return [spec for part in ("table2", "ablation", "expert_sweep", "te_vs_re") for spec in self.grid(part)]
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(GRIDS)}")

    def _claims_specs(self, **options) -> list[RunSpec]:
        from mltfrkit.claims import claims_grid

        return claims_grid(self, **options)

    def sweep(self, name: str, **options) -> list[dict]:
        """Train every missing run of an experiment (its tables are not built); returns the results."""
        specs = self.grid(name, **options)
        return self.store.ensure_many(specs, desc=f"{name} runs")

    def plan(self, name: str, workers: int | None = None, **options):
        """What :meth:`sweep` would train for the experiment ``name``, and how long it would take, training
        nothing: :meth:`mltfrkit.store.ResultStore.plan` of :meth:`grid` (a :class:`mltfrkit.plan.GridPlan`).
        ``workers``: the estimate's concurrency (None: as many runs as this experiment's executor trains at
        once). The estimates are the stored runs' measured times, valid for the concurrency they ran under."""
        return self.store.plan(self.grid(name, **options), workers)

    def epoch_cap_note(self, name: str, **options) -> str:
        """How many stored runs of the experiment ``name`` (``options`` as for :meth:`grid`) ran to the epoch cap
        without early stopping (:func:`mltfrkit.store.at_epoch_cap`), e.g. "17 of 18 stored runs ran to the
        100-epoch cap without early stopping: their figures are at that epoch budget, not at convergence";
        "" when none did. The notebooks print it under their tables: the profile says "early-stopped", and on
        ml-100k at the paper profile nearly every run is not. Reads the store; trains nothing."""
        stored, capped = self.store.epoch_capped(self.grid(name, **options))
        if not capped:
            return ""
        return (f"{len(capped)} of {len(stored)} stored runs ran to the {self.epochs}-epoch cap without early "
                f"stopping: their figures are at that epoch budget, not at convergence")

    def stall_note(self, name: str, **options) -> str:
        """Which stored runs of the experiment ``name`` stalled (:func:`mltfrkit.store.stalled_runs`: stopped
        early with a best selection metric under ``STALL_FRACTION`` of the best other seed's of the same
        configuration), e.g. "1 of 18 stored runs stalled ...: bert4rec + te (SmolLM2-135M) seed 0
        (ml-100k-bert4rec-te-...)"; "" when none did. Such a seed stays in the tables (it is what the protocol
        produced); the note says where a wide std comes from. Reads the store; trains nothing."""
        specs = self.grid(name, **options)
        stalled = self.store.stalled(specs)
        if not stalled:
            return ""
        by_dir = {str(self.store.run_dir(spec)): spec for spec in specs}
        stored, _ = self.store.epoch_capped(specs)
        names = [f"{run_label(by_dir[run_dir])} seed {by_dir[run_dir].train.seed} "
                 f"({self._answering_dir(by_dir[run_dir], run_dir)})" for run_dir in sorted(stalled)]
        metric = specs[0].train.valid_metric
        curve = "test" if self.configuration == "authors" else "validation"
        one = len(stalled) == 1
        return (f"{len(stalled)} of {len(stored)} stored runs stalled: early stopping ended {'it' if one else 'them'} "
                f"with a best {curve} {metric} under {STALL_FRACTION:g}x the best other seed's of the same "
                f"configuration (mltfrkit.store.stalled_runs); {'it stays' if one else 'they stay'} in the figures, "
                f"where {'it widens' if one else 'they widen'} the std: {'; '.join(names)}")

    def _answering_dir(self, spec: RunSpec, run_dir: str) -> str:
        """The name of the run directory whose result answers ``spec``: its own, a twin's, or (w/o SC) the full
        run's."""
        result = self.store.get(spec)
        if result is None:
            full = self.store._full_run_of(spec)
            result = self.store.get(full) if full is not None else None
        return Path((result or {}).get("run_dir") or run_dir).name

    def runs_note(self, name: str, **options) -> str:
        """What the notebooks print under a table: :meth:`epoch_cap_note` and :meth:`stall_note`, one line each
        ("" when neither applies)."""
        return "\n".join(note for note in (self.epoch_cap_note(name, **options), self.stall_note(name, **options))
                         if note)

    def token_sources(self) -> list[str]:
        from mltfrkit.vocab import resolve_preset

        return resolve_preset(self.llms)

    @property
    def output_tag(self) -> str:
        """What output files are named after: the dataset, plus the profile unless it is the default
        ``quick``, so a quick run never overwrites a paper run's figures."""
        return self.dataset if self.profile == "quick" else f"{self.dataset}-{self.profile}"

    @property
    def reduced(self) -> bool:
        """True unless these are the paper profile's settings: another profile, fewer epochs or seeds, or a
        smaller vocabulary cap, Fisher sample or expert count than the paper profile's."""
        paper = PROFILES["paper"]
        if self.profile != "paper" or self.epochs < paper.epochs or len(self.seeds) < len(paper.seeds):
            return True
        return any(isinstance(self.mltfr.get(key), (int, float)) and self.mltfr[key] < value
                   for key, value in paper.mltfr.items())

    def settings_note(self) -> str:
        """What a table or figure was made under, e.g. "quick profile: 2 epochs, 1 seed; reduced, not the
        paper's settings" or "paper profile, 3 seeds"; MLTFR options given on top of the profile are named,
        and the ``authors`` configuration adds the test-selection label."""
        seeds = f"{len(self.seeds)} seed{'' if len(self.seeds) == 1 else 's'}"
        overrides = [f"{key}={value}" for key, value in (self.mltfr_options or {}).items()
                     if self.settings.mltfr.get(key) != value]
        if self.reduced:
            epochs = f"{self.epochs} epoch{'' if self.epochs == 1 else 's'}"
            if self.settings.patience < self.epochs:  # early stopping ends the runs; the epochs are a cap
                epochs = f"early-stopped, at most {epochs}"
            paper = PROFILES["paper"].mltfr
            smaller = [f"{key}={self.mltfr[key]}" for key, value in paper.items()
                       if isinstance(self.mltfr.get(key), (int, float)) and self.mltfr[key] < value]
            smaller += [f"{key}={value}" for key, value in self.settings.mltfr.items() if key not in paper]
            note = f"{self.profile} profile: " + ", ".join(dict.fromkeys([epochs, seeds, *smaller, *overrides]))
            note += "; reduced, not the paper's settings"
        else:
            note = ", ".join([f"{self.profile} profile", seeds, *overrides])
        if self.configuration == "authors":
            note += f"; {ORACLE_LABEL}"
        return note

    def caption(self, what: str) -> str:
        """A table's caption naming the dataset and the settings, e.g. "Table 2 on ml-100k (quick profile:
        2 epochs, 1 seed; reduced, not the paper's settings)": a number made under a reduced profile or
        test-selected must never be read as a paper-profile result."""
        return f"{what} on {self.dataset} ({self.settings_note()})"

    @property
    def title_tag(self) -> str:
        """The settings for a figure's title, appended after "... on <dataset>": " (quick profile: ...)"."""
        return f" ({self.settings_note()})"

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
            default = self.store.ensure(self.spec(self.backbones[0], "mltfr", seed=self.seeds[0]))
            runs = of_this_dataset()
            if runs.empty and default.get("imported"):
                from mltfrkit.archive import refuse_if_imported

                refuse_if_imported(default.get("derived_from") or default["run_dir"])  # says how to train it here
        return runs

    # -- Fig. 1 --------------------------------------------------------------------------
    def _te_vs_re_specs(self, sources: list[str] | None = None, backbone: str = "sasrec",
                        backbones: list[str] | str | None = None) -> list[RunSpec]:
        sources = sources or self.token_sources()[:self.settings.te_sources]
        specs = []
        for name in _backbone_list(backbones) or [backbone.lower()]:
            specs += [self.spec(name, seed=s) for s in self.seeds]
            specs += [self.spec(name, plugin, seed=s, llm=source)
                      for source in sources for plugin in ("te", "re") for s in self.seeds]
        return specs

    def te_vs_re(self, sources: list[str] | None = None, backbone: str = "sasrec", per_seed: bool = False,
                 backbones: list[str] | str | None = None):
        """Rows: (backbone, source, method) with method in W/O (the same for every source), LLM-TE, LLM-RE.
        ``backbones`` (a list, a JSON list or a comma-separated string, as papermill passes it) measures
        several backbones in one grid, trained together; ``backbone`` is the single one otherwise (the
        paper's Fig. 1 is SASRec's). ``per_seed=True`` returns (table, the per-run records it summarises)."""
        specs = self._te_vs_re_specs(sources, backbone, backbones)
        records = self.run(specs, desc="Fig. 1 runs")
        records["method"] = records["plugin"].map({"none": "W/O", "te": "LLM-TE", "re": "LLM-RE"})
        records["source"] = records["llms"].fillna("(none)")
        table = summarise(records, ["backbone", "source", "method"])
        return (table, records) if per_seed else table

    # -- Table 2 -------------------------------------------------------------------------
    def controls(self, backbone: str, seed: int) -> dict[str, RunSpec]:
        """The two controls of MLTFR's gain (issue "Where the paper's gain comes from", sections 2 and 2b)
        under this experiment's configuration: ``wo2``, the backbone alone trained on MLTFR's schedule
        (:func:`schedule_matched`), and ``mltfr_re``, MLTFR with every expert's table replaced by a seeded
        random matrix of the same shape and row norms (``tables="random"``)."""
        mltfr, wo = self.spec(backbone, "mltfr", seed=seed), self.spec(backbone, "none", seed=seed)
        return {"wo2": schedule_matched(wo, mltfr),
                "mltfr_re": replace(mltfr, plugin_options={**mltfr.plugin_options, "tables": "random"})}

    def _table2_specs(self, controls=None) -> list[RunSpec]:
        return [spec for _, spec in self._table2_labelled(controls)]

    def _table2_labelled(self, controls=None) -> list[tuple[str, RunSpec]]:
        if controls is None:
            controls = list(self.settings.table2_controls)
        controls = _as_list(controls, "controls", str, '["wo2", "mltfr_re"]')
        unknown = sorted(set(controls) - set(CONTROLS))
        if unknown:
            raise ValueError(f"unknown control(s) {unknown}; valid: {list(CONTROLS)} ({CONTROLS})")
        out = [(plugin, self.spec(b, plugin, seed=s)) for b in self.backbones for plugin in ("none", "mltfr")
               for s in self.seeds]
        out += [(kind, self.controls(b, s)[kind]) for b in self.backbones for kind in controls for s in self.seeds]
        return out

    def table2(self, controls=None, per_seed: bool = False):
        """One row per backbone: W/O and MLTFR mean/std over seeds, Imp. (%), paired p-values, and the
        paper's figures beside ours when the dataset is one of the paper's. ``controls`` (default: the
        profile's, ``["wo2"]``; ``[]`` for none) adds columns:
        ``"wo2"`` (W/O 2-round: the backbone on MLTFR's schedule; its gain over W/O, and MLTFR's over it,
        with paired p-values: if it gains as much as MLTFR, the gain belongs to the schedule) and
        ``"mltfr_re"`` (MLTFR-RE: random tables; MLTFR's gain over it: near zero within seed noise means
        the LLM's semantics contribute nothing). ``per_seed=True`` returns (table, the per-run records, with
        ``variant`` = none / mltfr / a control's name)."""
        labelled = self._table2_labelled(controls)
        records = self.run([spec for _, spec in labelled], desc="Table 2 runs")
        records["variant"] = [kind for kind, _ in labelled]
        main = records[records["variant"].isin(["none", "mltfr"])]
        table = self._compare(main, "variant", {"none": "W/O", "mltfr": "MLTFR"}, PAPER_TABLE2)
        for kind in dict.fromkeys(kind for kind, _ in labelled if kind in CONTROLS):
            label = CONTROLS[kind]
            reference = ("none", "W/O") if kind == "wo2" else ("mltfr", "MLTFR")
            pair = records[records["variant"].isin([reference[0], kind])]
            compared = self._compare(pair, "variant", {reference[0]: reference[1], kind: label}, {})
            gain = f"{label} vs {reference[1]} (%)"
            compared = compared.rename(columns={"Imp. (%)": gain, **{f"p ({m})": f"p {label} vs {reference[1]} ({m})"
                                                                    for m in METRICS}})
            keep = [f"{label} {m}{s}" for m in METRICS for s in ("", " std")] + [gain] + \
                [f"p {label} vs {reference[1]} ({m})" for m in METRICS]
            table = table.merge(compared[["backbone", *keep]], on="backbone", how="left")
            if kind == "wo2":  # MLTFR against the schedule it is trained on
                pair = records[records["variant"].isin(["wo2", "mltfr"])]
                versus = self._compare(pair, "variant", {"wo2": label, "mltfr": "MLTFR"}, {})
                table[f"MLTFR vs {label} (%)"] = versus["Imp. (%)"].to_numpy()
                table[f"p MLTFR vs {label} (NDCG@20)"] = versus["p (NDCG@20)"].to_numpy()
        table["selection"] = records["selection"].iloc[0] if len(records) else None
        return (table, records) if per_seed else table

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

    def expert_sweep(self, experts: list[int] | None = None, per_seed: bool = False):
        """m experts = the first m sources of the preset, in its order; rows (backbone, m). ``per_seed=True``
        returns (table, the per-run records it summarises)."""
        sources = self.token_sources()
        records = self.run(self._expert_specs(experts), desc="Fig. 3 runs")
        table = summarise(records, ["backbone", "n_experts"])
        table["n_experts"] = table["n_experts"].astype(int)
        table["added source"] = [sources[m - 1] for m in table["n_experts"]]
        return (table, records) if per_seed else table


    # -- the reproduction gap -----------------------------------------------------------
    def ladder(self, backbone: str, seed: int, sources: str | list[str] | None = None) -> list[dict]:
        """The rungs from "the paper as its authors ran it" to our default, one switch each, as specs.

        Order: first the changes of protocol that leave the model alone (hold out a validation item,
        select on it, our plateau-proof stopping rule), so every later rung is read the same honest way; then the
        evaluation-time switch (noise), then the switches that change what is trained, from the most
        to the least structural (tables, keys, scaling, dropout, placement), then the schedule (round 2),
        then the sizes (expert count, vocabulary cap), which come last because they are budgets, not
        behaviours. The last rung's specs are exactly :meth:`table2`'s; ``sources`` adds a token-source
        rung after it. Each rung: ``name``, ``change``, ``read`` ("oracle" = test-selected, "test" =
        validation-selected), ``mltfr``, ``wo`` (W/O), ``wo2`` (the schedule-matched W/O 2-round) specs."""
        from mltfrkit.runs import authors_configuration

        ours_mltfr = self._spec(backbone, "mltfr", seed)
        ours_wo = self._spec(backbone, "none", seed)
        config = ours_mltfr.mltfr_config()
        authors = authors_configuration(ours_mltfr)
        # The authors' configuration stops on plain patience; the rungs keep it until their own rung switches it.
        tracked = replace(ours_mltfr.train, test_every_epoch=True, patience_relative=authors.train.patience_relative)
        steps = [  # (name, what changes, MLTFR option changes, train config or None = ours)
            ("hold out validation", "the split: a validation item held out (still test-selected)", {}, tracked),
            ("select on validation", "model selection: validation NDCG@20 instead of the test curve", {}, tracked),
            ("plateau-proof stopping", f"early stopping: patience max({ours_mltfr.train.patience}, "
             f"{ours_mltfr.train.patience_relative:g} x best epoch) instead of {ours_mltfr.train.patience}", {}, None),
            ("no evaluation noise", "eval_noise: off", {"eval_noise": False}, None),
            ("frozen tables", "trainable_tables: off", {"trainable_tables": False}, None),
            ("user keys", "keys: the user's own tokens", {"keys": "user"}, None),
            ("straight-through scale", "token_scale: straight-through weights", {"token_scale": "straight_through"},
             None),
            ("no expert dropout", "expert_dropout: 0", {"expert_dropout": 0.0}, None),
            ("eq. 18 placement", "placement: computed from E, added to E", {"placement": "input"}, None),
            ("best of both rounds", "round 2 continues from round 1; best checkpoint over both rounds",
             {"round2": config.round2, "round_selection": config.round_selection}, None),
            ("our expert count", f"n_experts: {config.n_experts}", {"n_experts": config.n_experts}, None),
            ("our vocabulary cap", f"max_vocab: {config.max_vocab}", {"max_vocab": config.max_vocab,
                                                                     "precision": config.precision}, None),
        ]

        def wo2(train, plugin_options):
            return schedule_matched(replace(ours_wo, train=train),
                                    replace(ours_mltfr, train=train, plugin_options=dict(plugin_options)))

        options = dict(authors.plugin_options)
        rungs = [{"name": "the paper as run", "change": "the authors' configuration, test-selected",
                  "read": "oracle", "mltfr": authors, "wo": authors_configuration(ours_wo),
                  "wo2": wo2(authors.train, options)}]
        for name, change, switch, train in steps:
            options.update(switch)
            train = train or ours_mltfr.train
            rungs.append({"name": name, "change": change, "read": "oracle" if name == "hold out validation" else "test",
                          "mltfr": replace(ours_mltfr, train=train, plugin_options=dict(options)),
                          "wo": replace(ours_wo, train=train), "wo2": wo2(train, options)})
        split = self.split
        if rungs[-1]["mltfr"].key(split.source_sha256) != ours_mltfr.key(split.source_sha256):
            raise AssertionError("the ladder's last rung is not our default configuration: a switch is missing")
        rungs[-1]["mltfr_re"] = replace(ours_mltfr, plugin_options={**ours_mltfr.plugin_options, "tables": "random"})
        if sources:
            rungs.append({"name": "token sources", "change": f"llms: {sources}", "read": "test",
                          "mltfr": replace(ours_mltfr, plugin_options={**ours_mltfr.plugin_options, "llms": sources}),
                          "wo": ours_wo, "wo2": rungs[-1]["wo2"]})
        return rungs

    def _spec(self, backbone: str, plugin: str, seed: int, **options) -> RunSpec:
        """Our configuration's spec whatever this experiment's configuration is."""
        configuration, self.configuration = self.configuration, "ours"
        try:
            return self.spec(backbone, plugin, seed=seed, **options)
        finally:
            self.configuration = configuration

    def _ladders(self, sources=None, backbones=None, controls: bool = True):
        """The ladders per (backbone, seed), every spec they read and where each is read."""
        backbones = [b.lower() for b in (backbones or self.backbones)]
        ladders = {(b, s): self.ladder(b, s, sources) for b in backbones for s in self.seeds}
        kinds = ["wo", "mltfr"] + (["wo2", "mltfr_re"] if controls else [])
        specs, where = [], []
        for (b, s), rungs in ladders.items():
            for index, rung in enumerate(rungs):
                for kind in kinds:
                    if kind in rung:
                        specs.append(rung[kind])
                        where.append((b, s, index, kind))
        return ladders, specs, where

    def _reproduction_gap_specs(self, sources=None, backbones=None, controls: bool = True) -> list[RunSpec]:
        """Each run of the ladder once: rungs share runs (W/O across rungs, rung 1's runs read twice)."""
        unique = {}
        for spec in self._ladders(sources, backbones, controls)[1]:
            unique.setdefault(spec.key(self.split.source_sha256), spec)
        return list(unique.values())

    def reproduction_gap(self, sources: str | list[str] | None = None, backbones: list[str] | None = None,
                         controls: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(table, per-seed frame) of the ladder: per backbone and rung, W/O and MLTFR mean and std over
        seeds, Imp. (the paper's geometric-mean definition) and its std over seeds, paired p-values, the
        change in Imp. from the previous rung with its standard error over seeds and whether it exceeds
        seed noise (|change| > 2 standard errors), plus the W/O 2-round baseline and, on the last rung,
        MLTFR-RE. Rungs read "oracle" report the test-selected figures (labelled in ``selection``)."""
        ladders, specs, where = self._ladders(sources, backbones, controls)
        self.store.ensure_many(self._reproduction_gap_specs(sources, backbones, controls),
                               desc="reproduction-gap runs")
        rows = []
        for (b, s, index, kind), spec in zip(where, specs):
            rung = ladders[(b, s)][index]
            record = flatten(self.store.get(spec))
            prefix = "oracle " if rung["read"] == "oracle" else ""
            rows.append({"backbone": b, "seed": s, "rung": index, "name": rung["name"], "change": rung["change"],
                         "read": rung["read"], "kind": kind, "run_dir": record["run_dir"],
                         **{metric: record[prefix + metric] for metric in METRICS}})
        per_seed = pd.DataFrame(rows)
        return self._gap_table(per_seed), per_seed

    def _gap_table(self, per_seed: pd.DataFrame) -> pd.DataFrame:
        labels = {"wo": "W/O", "mltfr": "MLTFR", "wo2": "W/O 2-round", "mltfr_re": "MLTFR-RE"}
        out = []
        for (backbone, rung), frame in per_seed.groupby(["backbone", "rung"], sort=True):
            row = {"backbone": backbone, "rung": int(rung), "name": frame["name"].iloc[0],
                   "change": frame["change"].iloc[0],
                   "selection": ORACLE_LABEL if frame["read"].iloc[0] == "oracle" else "validation"}
            wide = frame.pivot_table(index="seed", columns="kind", values=list(METRICS))
            for kind, label in labels.items():
                if ("HR@20", kind) not in wide.columns:
                    continue
                for metric in METRICS:
                    row[f"{label} {metric}"] = wide[(metric, kind)].mean()
                    row[f"{label} {metric} std"] = wide[(metric, kind)].std(ddof=1)
            per_seed_imp = [improvement(w_hr, w_nd, m_hr, m_nd) for w_hr, w_nd, m_hr, m_nd in zip(
                wide[("HR@20", "wo")], wide[("NDCG@20", "wo")], wide[("HR@20", "mltfr")], wide[("NDCG@20", "mltfr")])]
            row["Imp. (%)"] = improvement(row["W/O HR@20"], row["W/O NDCG@20"], row["MLTFR HR@20"], row["MLTFR NDCG@20"])
            row["Imp. std over seeds"] = float(np.std(per_seed_imp, ddof=1)) if len(per_seed_imp) > 1 else float("nan")
            row["_imp_seeds"] = dict(zip(wide.index, per_seed_imp))
            for metric in METRICS:
                row[f"p ({metric})"] = paired_p(wide[(metric, "wo")].tolist(), wide[(metric, "mltfr")].tolist())
            if ("HR@20", "wo2") in wide.columns:
                row["W/O 2-round Imp. (%)"] = improvement(row["W/O HR@20"], row["W/O NDCG@20"],
                                                          row["W/O 2-round HR@20"], row["W/O 2-round NDCG@20"])
                row["p W/O 2-round vs W/O (NDCG@20)"] = paired_p(wide[("NDCG@20", "wo")].tolist(),
                                                                 wide[("NDCG@20", "wo2")].tolist())
            if ("HR@20", "mltfr_re") in wide.columns:
                row["MLTFR-RE vs MLTFR (%)"] = improvement(row["MLTFR HR@20"], row["MLTFR NDCG@20"],
                                                           row["MLTFR-RE HR@20"], row["MLTFR-RE NDCG@20"])
                row["p MLTFR-RE vs MLTFR (NDCG@20)"] = paired_p(wide[("NDCG@20", "mltfr")].tolist(),
                                                                wide[("NDCG@20", "mltfr_re")].tolist())
            row["seeds"] = int(len(wide))
            out.append(row)
        table = pd.DataFrame(out)
        changes, errors = [], []
        for index, row in table.iterrows():
            previous = table[(table["backbone"] == row["backbone"]) & (table["rung"] == row["rung"] - 1)]
            if previous.empty:
                changes.append(float("nan"))
                errors.append(float("nan"))
                continue
            before, now = previous["_imp_seeds"].iloc[0], row["_imp_seeds"]
            diffs = [now[s] - before[s] for s in now if s in before]
            changes.append(row["Imp. (%)"] - previous["Imp. (%)"].iloc[0])
            errors.append(float(np.std(diffs, ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else float("nan"))
        table["change in Imp. (pp)"] = changes
        table["change SE (pp)"] = errors
        table["beyond seed noise"] = (table["change in Imp. (pp)"].abs() > 2 * table["change SE (pp)"]) & \
            table["change SE (pp)"].notna()
        return table.drop(columns="_imp_seeds")


    # -- Table 4 -------------------------------------------------------------------------
    def table4(self, pool=None, llm_model: str | None = None, variants=("generation", "likelihood"),
               titles_file: str | None = None, llm_dtype: str = "bfloat16", base_url: str | None = None,
               train_missing: bool = False, llm_missing: str = "run", mixrec=(), mixrec_profile: str = "cpu",
               mixrec_runs_dir=None, mixrec_llm: str = "SmolLM2-135M", mixrec_train_missing: bool = False,
               mixrec_options=None, log=print) -> pd.DataFrame:
        """One row per method on this dataset's candidate pools (:class:`mltfrkit.train.pools.PoolSpec`): each
        backbone W/O and with MLTFR (stored runs of this experiment's profile and seeds, scored on the pools
        without retraining; ``train_missing=True`` trains the missing ones, else they are listed as missing),
        and the text-prompted LLM (``llm_model``, default SmolLM2-135M-Instruct offline; ``base_url``: an
        OpenAI-compatible endpoint, generation only). Columns: ``top1`` (seed-averaged for ID models), its
        95% bootstrap interval over users, ``invalid_rate`` (answers naming no candidate), ``users``,
        ``seeds``, ``users_per_second`` (the LLM), ``paper`` (Table 4's figure, its pools unspecified).

        ``mixrec``: MixRec variants to add as rows (``llmrec``, ``mixrec_base``, ``mixrec``, ``mixrec:<bits>``,
        ``mixrec:bo``; :func:`mltfrkit.mixrec.experiment.table4_rows`): the stored runs of ``mixrec_profile``
        and this experiment's seeds in ``mixrec_runs_dir`` (None: this store), scored on the same pools from
        their full-ranking scores; trained only with ``mixrec_train_missing`` (minutes a run at the cpu profile,
        days at the paper's).
        ``mixrec_options``: ``{"model": {...}, "train": {...}, "bo": {...}}`` overrides of the profile.
        ``llm_missing``: "run" (default) runs the LLM when its answers on these pools are not stored; "skip"
        only reads a stored result (:func:`mltfrkit.llmrec.recommender.stored_llm_result`: nothing is loaded or
        run) and leaves the LLM rows out when there is none."""
        if llm_missing not in ("run", "skip"):
            raise ValueError(f"llm_missing must be 'run' or 'skip', not {llm_missing!r}")
        from mltfrkit.data.text import item_titles
        from mltfrkit.store import pool_evaluation
        from mltfrkit.train.pools import PoolSpec, make_pools

        pool = pool or PoolSpec()
        text = item_titles(self.split, self.data_dir, titles_file=titles_file)  # NoTitlesError names the files
        published = PAPER_TABLE4.get(self.dataset, {})
        rows = []
        for backbone in self.backbones:
            for plugin, label in (("none", "W/O"), ("mltfr", "MLTFR")):
                specs = [self.spec(backbone, plugin, seed=s) for s in self.seeds]
                results = [self.store.get(spec) for spec in specs]
                if train_missing and any(r is None for r in results):
                    results = self.store.ensure_many(specs, desc=f"Table 4 {backbone} {label} runs")
                stored = [r for r in results if r is not None]
                row = {"dataset": self.dataset, "method": f"{backbone} {label}", "backbone": backbone,
                       "variant": label, "seeds": len(stored), "missing seeds": len(results) - len(stored),
                       "paper": published.get(backbone) if label == "MLTFR" else None}
                if stored:
                    row.update(pool_row([pool_evaluation(r["run_dir"], pool, self.data_dir) for r in stored]))
                rows.append(row)
        mixrec = list_parameter(mixrec, "mixrec", "-p mixrec_variants '[\"mixrec\"]'") if mixrec is not None else []
        if mixrec:
            from mltfrkit.mixrec.experiment import table4_rows

            options = mixrec_options or {}
            rows += table4_rows(self, pool, mixrec, mixrec_profile, mixrec_runs_dir, mixrec_llm,
                                titles_file or "titles", mixrec_train_missing, options.get("model"),
                                options.get("train"), options.get("bo"), log=log)
        if base_url and "likelihood" in variants:  # a chat endpoint returns no log-probabilities of given text
            variants = tuple(v for v in variants if v != "likelihood")
            if log:
                log(f"{base_url}: the likelihood variant needs a local model; generation only")
        result = None
        if variants and llm_missing == "skip":
            from mltfrkit.llmrec import OFFLINE_MODEL
            from mltfrkit.llmrec.recommender import stored_llm_result

            result = stored_llm_result(self.store.root, self.split, pool, variants, model=llm_model or OFFLINE_MODEL,
                                       dtype=None if base_url else llm_dtype)
            if result is None and log:
                log(f"Table 4 on {self.dataset}: no stored answers of {llm_model or OFFLINE_MODEL} on {pool.label()}; "
                    f"the LLM rows are left out (llm_missing='run' computes them)")
        elif variants:
            from mltfrkit.llmrec import OFFLINE_MODEL, make_backend, run_llm_on_pools

            options = {} if base_url else {"dtype": llm_dtype}
            backend = make_backend(llm_model or OFFLINE_MODEL, base_url=base_url, **options)
            result = run_llm_on_pools(self.split, text, make_pools(self.split, pool), backend, variants=variants,
                                      root=self.store.root, progress=self.progress, log=log)
        if result is not None:
            name = result["model"].get("model", llm_model or "")
            for variant, metrics in result["metrics"].items():
                low, high = metrics["top1_ci"]
                rows.append({"dataset": self.dataset, "method": f"LLM ({variant})", "backbone": name,
                             "variant": variant, "seeds": None, "top1": metrics["top1"], "ci_low": low,
                             "ci_high": high, "users": metrics["users"], "invalid_rate": metrics["invalid_rate"],
                             "users_per_second": result["users_per_second"], "llm_seconds": result["seconds"],
                             "paper": published.get("glm4-plus") if variant == "generation" else None,
                             "prompt_key": result["key"], "result_file": result["path"]})
        table = pd.DataFrame(rows)
        table["pool"] = pool.label()
        table["pool_size"] = pool.size
        table["titled items"] = f"{len(text)} of {text.n_items}"
        return table


POOL_COLUMNS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")  # within the pool, beside top-1


def pool_row(evaluations: list[dict]) -> dict:
    """A Table 4 row's figures from one pool evaluation per seed (:func:`mltfrkit.store.pool_evaluation`):
    top-1 averaged over seeds per user, its 95% bootstrap interval over users, and HR@k / NDCG@k within the
    pool averaged over seeds."""
    from mltfrkit.train.pools import bootstrap_ci

    hits = np.mean([np.asarray(e["ranks"]) == 0 for e in evaluations], axis=0)
    low, high = bootstrap_ci(hits)
    row = {"top1": float(hits.mean()), "ci_low": low, "ci_high": high, "users": len(hits), "invalid_rate": 0.0}
    row.update({k: float(np.mean([e[k] for e in evaluations])) for k in POOL_COLUMNS if k in evaluations[0]})
    return row


def table4_wide(long: pd.DataFrame) -> pd.DataFrame:
    """:meth:`Experiment.table4` rows (one per dataset and method) as the paper lays Table 4 out: one row
    per dataset, for each method its ``top-1``, the ``95% CI`` over users (text, "[low, high]"), the LLMs'
    invalid-answer rate, and the paper's figure as ``paper <method> top-1`` (MLTFR rows and the LLM only)."""
    rows = []
    for dataset, frame in long.groupby("dataset", sort=False):
        row: dict = {"dataset": dataset}
        for _, method in frame.iterrows():
            name = method["method"]
            top1 = method.get("top1")
            row[f"{name} top-1"] = top1
            row[f"{name} 95% CI"] = (f"[{method['ci_low']:.3f}, {method['ci_high']:.3f}]"
                                     if pd.notna(method.get("ci_low")) else None)
            if str(name).startswith("LLM"):
                row[f"{name} invalid rate"] = method.get("invalid_rate")
            if pd.notna(method.get("paper")):
                row[f"paper {name} top-1"] = method["paper"]
        row["users"] = int(frame["users"].max()) if frame["users"].notna().any() else None
        for column, label in (("users_per_second", "LLM users per second"), ("llm_seconds", "LLM seconds")):
            if column in frame and frame[column].notna().any():
                row[label] = float(frame[column].dropna().iloc[0])
        row["pool"] = frame["pool"].iloc[0]
        rows.append(row)
    return pd.DataFrame(rows)


def _backbone_list(value) -> list[str] | None:
    """A ``backbones`` parameter in any form :func:`_as_list` reads, lower-cased, every name a registered
    backbone (else a ValueError naming the unknown ones and the valid ones); None stays."""
    from mltfrkit.models import backbone_names

    names = _as_list(value, "backbones", str, '-p backbones \'["sasrec", "bert4rec"]\'')
    if names is None:
        return None
    unknown = [b for b in names if b.lower() not in backbone_names()]
    if unknown:
        raise ValueError(f"backbones: unknown backbone(s) {unknown}; valid: {', '.join(backbone_names())}")
    return [b.lower() for b in names]


def _as_list(value, name: str, kind: type, example: str) -> list | None:
    """A list parameter from a list, a tuple, a JSON list string or a comma-separated string; None stays."""
    if value is None:
        return None
    if isinstance(value, str):
        import json

        text = value.strip()
        try:
            parsed = json.loads(text) if text.startswith("[") else None
        except json.JSONDecodeError:
            raise ValueError(f"{name}={value!r} is not a valid JSON list; e.g. {example}") from None
        value = parsed if parsed is not None else [part.strip() for part in text.split(",") if part.strip()]
        if kind is int:
            try:
                value = [int(v) if isinstance(v, str) else v for v in value]
            except ValueError:
                raise ValueError(f"{name}={text!r}: not a list of whole numbers; e.g. {example}") from None
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name}={value!r} must be a list, not of type {type(value).__name__}; e.g. {example}")
    wrong = [v for v in value if not isinstance(v, kind) or isinstance(v, bool)]
    if wrong:
        raise ValueError(f"{name}: {wrong} are not {'whole numbers' if kind is int else 'names'}; e.g. {example}")
    return list(value)


def list_parameter(value, name: str, example: str) -> list[str] | None:
    """A notebook's list-of-names parameter as papermill delivers it (a list, a JSON list string or
    comma-separated names), checked as :class:`Experiment` checks its own; None stays None."""
    return _as_list(value, name, str, example)


def stored_records(store: ResultStore | None = None) -> pd.DataFrame:
    """Every run in a store (default location) as one table."""
    return (store or ResultStore()).records()


__all__ = ["ABLATION_IMP", "CONTROLS", "Experiment", "GRIDS", "PAPER_SOURCE", "PAPER_TABLE2", "PAPER_TABLE3", "PROFILES", "Profile", "flatten",
           "improvement", "paired_p", "schedule_matched", "stored_records", "summarise"]
