"""DAMoE architecture search (MixRec section 2.3.3, Appendix E, Algorithm 1).

Each DAMoE layer has three serial/parallel choices (the causal expert, the context expert, the
recommendation adapter), so L layers give 3L binary parameters z. MixRec searches them by Bayesian
optimisation with a Gaussian-process surrogate and the *probabilistic reparameterisation* (PR) of
Daulton et al. (NeurIPS 2022): instead of maximising the acquisition function alpha over the binary
cube, maximise the probabilistic objective ``PO(theta) = E_{Z ~ p(Z|theta)}[alpha(Z)]`` over
independent Bernoulli probabilities theta (a continuous space). alpha is evaluated at discrete designs
only; the gradient ``sum_z alpha(z) grad_theta p(z|theta)`` is estimated by Monte Carlo with the
score-function (likelihood-ratio) estimator and a mean baseline, as Daulton et al. do for discrete
parameters. Algorithm 1, line 5: the next design is sampled from p(Z|theta*); we draw several samples
and keep the one with the highest alpha that has not been evaluated yet.

The GP and the acquisition function are BoTorch's (``SingleTaskGP``, ``fit_gpytorch_mll``,
``LogExpectedImprovement``); BoTorch has no ready PR acquisition for binary inputs, so the PR
optimiser over it is the code below. alpha is log-EI: maximising E[log EI] has the same vertex
solutions as E[EI] and avoids EI's vanishing values.

Each trial is a MixRec run in the result store (:func:`mixrec_objective`): the search log
(``search.json``) names them, so an interrupted search resumes by reading stored runs, and a trial
run by another process (or, later, a Ray executor) is read, not retrained.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch


def _botorch():
    try:
        import botorch  # noqa: F401
    except ImportError:
        raise ImportError("the DAMoE search needs BoTorch: pip install 'mltfrkit[mixrec]'") from None
    from botorch.acquisition import LogExpectedImprovement
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    return SingleTaskGP, Standardize, ExactMarginalLogLikelihood, fit_gpytorch_mll, LogExpectedImprovement


@dataclass
class PRSettings:
    """Monte Carlo PR optimisation: restarts x Adam steps on the Bernoulli logits, ``samples`` Z per step."""

    restarts: int = 4
    steps: int = 60
    samples: int = 128
    lr: float = 0.2
    candidates: int = 256  # designs drawn from p(Z|theta*) per restart to pick the next one from


def fit_surrogate(X: torch.Tensor, Y: torch.Tensor):
    """BoTorch GP on (n, D) binary designs and (n, 1) objective values (standardised)."""
    SingleTaskGP, Standardize, ExactMarginalLogLikelihood, fit_gpytorch_mll, _ = _botorch()
    model = SingleTaskGP(X, Y, outcome_transform=Standardize(m=1))
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model


def maximise_probabilistic_objective(acquisition: Callable[[torch.Tensor], torch.Tensor], dim: int,
                                     settings: PRSettings, generator: torch.Generator) -> torch.Tensor:
    """Algorithm 1 line 4: theta* = argmax_theta E_{Z ~ Bernoulli(theta)}[alpha(Z)], one per restart
    ((restarts, dim) probabilities). ``acquisition`` maps (N, dim) binary designs to (N,) values."""
    logits = (torch.randn(settings.restarts, dim, generator=generator, dtype=torch.float64) * 0.5).requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=settings.lr)
    for _ in range(settings.steps):
        theta = torch.sigmoid(logits)
        u = torch.rand(settings.restarts, settings.samples, dim, generator=generator, dtype=torch.float64)
        Z = (u < theta.detach().unsqueeze(1)).to(torch.float64)
        with torch.no_grad():
            values = acquisition(Z.reshape(-1, dim)).reshape(settings.restarts, settings.samples)
            advantage = values - values.mean(1, keepdim=True)  # baseline: lowers the estimator's variance
        log_p = (Z * torch.log(theta.unsqueeze(1) + 1e-12) + (1 - Z) * torch.log(1 - theta.unsqueeze(1) + 1e-12)).sum(-1)
        loss = -(advantage * log_p).mean()  # score-function estimate of -grad PO
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.sigmoid(logits.detach())


def propose_design(X: torch.Tensor, Y: torch.Tensor, settings: PRSettings, seed: int) -> tuple[int, ...]:
    """The next design to evaluate given the designs X and values Y so far (Algorithm 1, lines 4-5)."""
    *_, LogExpectedImprovement = _botorch()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the GP fit's own restarts
    model = fit_surrogate(X, Y)
    acqf = LogExpectedImprovement(model, best_f=model.outcome_transform(Y)[0].max())

    def alpha(Z: torch.Tensor) -> torch.Tensor:
        return acqf(Z.unsqueeze(1))

    theta = maximise_probabilistic_objective(alpha, X.shape[1], settings, generator)
    u = torch.rand(settings.restarts, settings.candidates, X.shape[1], generator=generator, dtype=torch.float64)
    drawn = torch.unique((u < theta.unsqueeze(1)).reshape(-1, X.shape[1]).to(torch.float64), dim=0)
    seen = {tuple(int(v) for v in row) for row in X.tolist()}
    fresh = torch.stack([row for row in drawn if tuple(int(v) for v in row.tolist()) not in seen]) \
        if any(tuple(int(v) for v in row.tolist()) not in seen for row in drawn) else None
    if fresh is None:  # every sample already evaluated: the best unevaluated neighbour of the best design
        best = X[Y.argmax()]
        flips = best.repeat(X.shape[1], 1)
        flips[torch.arange(X.shape[1]), torch.arange(X.shape[1])] = 1 - flips.diagonal()
        fresh = torch.stack([row for row in flips if tuple(int(v) for v in row.tolist()) not in seen] or [flips[0]])
    with torch.no_grad():
        chosen = fresh[alpha(fresh).argmax()]
    return tuple(int(v) for v in chosen.tolist())


@dataclass
class SearchLog:
    """The trials so far: designs, objective values and, for MixRec, their run directories."""

    designs: list[list[int]] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    runs: list[str | None] = field(default_factory=list)

    def best(self) -> tuple[tuple[int, ...], float]:
        index = int(np.argmax(self.values))
        return tuple(self.designs[index]), self.values[index]

    def save(self, path: Path) -> None:
        from mltfrkit.paths import atomic_write_json

        atomic_write_json(path, {"designs": self.designs, "values": self.values, "runs": self.runs})

    @classmethod
    def load(cls, path: Path) -> "SearchLog":
        if not path.exists():
            return cls()
        saved = json.loads(path.read_text())
        return cls(saved["designs"], saved["values"], saved["runs"])


def bayesian_search(objective: Callable[[tuple[int, ...]], float | tuple[float, str]], n_bits: int,
                    iterations: int = 30, n_init: int = 5, seed: int = 0, settings: PRSettings | None = None,
                    log_path: Path | None = None, log: Callable[[str], None] | None = None,
                    stop_at: float | None = None) -> SearchLog:
    """Algorithm 1: ``n_init`` seeded random designs, then BO with PR up to ``iterations`` evaluations in all
    (the paper: 30). ``objective`` returns the value to maximise (or (value, run dir)). With ``log_path``
    every trial is saved as it finishes and a search started again continues from the saved trials.
    ``stop_at``: stop once a value reaches it (a known optimum, in tests)."""
    settings = settings or PRSettings()
    trials = SearchLog.load(log_path) if log_path else SearchLog()
    rng = np.random.default_rng(seed)
    initial = [tuple(int(b) for b in rng.integers(0, 2, n_bits)) for _ in range(n_init)]
    while len(trials.values) < iterations and not (stop_at is not None and trials.values
                                                   and max(trials.values) >= stop_at):
        n = len(trials.values)
        if n < n_init:
            design = initial[n]
        else:
            X = torch.tensor(trials.designs, dtype=torch.float64)
            Y = torch.tensor(trials.values, dtype=torch.float64).unsqueeze(1)
            design = propose_design(X, Y, settings, seed * 7919 + n)
        outcome = objective(design)
        value, run = outcome if isinstance(outcome, tuple) else (outcome, None)
        trials.designs.append(list(design))
        trials.values.append(float(value))
        trials.runs.append(run)
        if log_path:
            trials.save(log_path)
        if log:
            best, best_value = trials.best()
            log(f"BO trial {n + 1}/{iterations}: design {''.join(map(str, design))} -> {value:.5f} "
                f"(best {''.join(map(str, best))}: {best_value:.5f})")
    return trials


def random_search_evaluations(objective: Callable[[tuple[int, ...]], float], n_bits: int, target: float,
                              seed: int = 0) -> int:
    """How many designs a seeded random search (without repeats) evaluates until it reaches ``target``."""
    order = np.random.default_rng(seed).permutation(2 ** n_bits)
    for count, code in enumerate(order, start=1):
        design = tuple(int(b) for b in np.binary_repr(int(code), n_bits))
        if objective(design) >= target:
            return count
    return 2 ** n_bits


# --------------------------------------------------------------------------- MixRec trials


def mixrec_objective(spec, split, runs_dir=None, metric: str = "MRR", log=None):
    """z -> (validation ``metric`` of MixRec with DAMoE design z on Data_BO, its run dir). ``spec``'s
    ``train.user_fraction`` is the Data_BO share b (section 3.1.1, Table 3); each trial is a store run."""
    from dataclasses import replace

    from mltfrkit.mixrec.train import run_mixrec

    def objective(design: tuple[int, ...]):
        trial = replace(spec, model=replace(spec.model, variant="mixrec", design=tuple(design)))
        result = run_mixrec(trial, split=split, runs_dir=runs_dir, log=log)
        return float(result["best_valid"][metric]), result["run_dir"]
    return objective


def search_damoe(spec, split, runs_dir=None, iterations: int = 30, n_init: int = 5, seed: int = 0,
                 settings: PRSettings | None = None, log=print) -> SearchLog:
    """The DAMoE search on Data_BO (section 2.4's first step); its log lives in the store beside the trials."""
    from mltfrkit.mixrec.model import PARTS_PER_LAYER
    from mltfrkit.mixrec.train import get_llm

    parts, _ = get_llm(spec.llm)
    r = spec.model.replace_every
    n_layers = spec.model.llm_layers or parts.n_layers
    n_bits = PARTS_PER_LAYER * sum(1 for k in range(n_layers) if (k + 1) % r == 0)
    folder = search_folder(spec, split, runs_dir, iterations, n_init, seed)
    folder.mkdir(parents=True, exist_ok=True)
    return bayesian_search(mixrec_objective(spec, split, runs_dir, log=log), n_bits, iterations, n_init, seed,
                           settings, folder / "search.json", log)


def search_folder(spec, split, runs_dir=None, iterations: int = 30, n_init: int = 5, seed: int = 0) -> Path:
    """``<store>/<dataset>-mixrec-search-<key>``: where :func:`search_damoe` keeps ``search.json``."""
    from mltfrkit.runs import store_root

    key = spec.key(split.source_sha256, f"search:{iterations}:{n_init}:{seed}")
    return store_root(runs_dir) / f"{split.name}-mixrec-search-{key}"


def stored_search(spec, split, runs_dir=None, iterations: int = 30, n_init: int = 5, seed: int = 0) -> SearchLog:
    """The trials of a search as stored so far (empty when it never ran), without loading the LLM or training:
    what a notebook reads when it must not train (``len(values) < iterations``: unfinished)."""
    return SearchLog.load(search_folder(spec, split, runs_dir, iterations, n_init, seed) / "search.json")
