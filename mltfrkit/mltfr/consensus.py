"""Round 1 -> round 2: Fisher information of each expert's integration parameters, and the
Fisher-weighted consensus expert (eqs. 13-15).

F_r = E_x[(d log p(y | x) / d theta_r)^2], the mean over a training subset of squared
**per-sample** gradients (the authors' code squares per-batch mean gradients instead).
log p(y | x) is the model's full-softmax log-probability of the next item y after history x.
``labels="observed"`` uses the true next item (the empirical Fisher, what the authors' code
approximates); ``labels="sampled"`` draws y from the model's own distribution (the true Fisher).
Per-sample gradients come from ``torch.func`` (vmap over grad) in evaluation mode, so
dropout and Gumbel noise do not enter.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from mltfrkit.mltfr.plugin import ConsensusExpert, MLTFRPlugin
from mltfrkit.train.metrics import pad_left


def fisher_samples(train_sequences: list[np.ndarray], n: int, max_len: int, seed: int = 0):
    """(history, next item) pairs: each sampled user's training sequence minus its last item."""
    usable = [s for s in train_sequences if len(s) >= 2]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(usable), size=min(n, len(usable)), replace=False)
    histories = pad_left([usable[i][:-1] for i in chosen], max_len)
    targets = torch.tensor([int(usable[i][-1]) for i in chosen])
    return histories, targets


class _Scorer(torch.nn.Module):
    """Wraps a backbone so torch.func.functional_call can run its scoring path with substituted parameters."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        model = self.model
        return model.output_logits(model.user_representation(model.eval_input(seqs)))


def _looped_grads(log_prob, params, history, target) -> dict[str, torch.Tensor]:
    """The brute-force reference: one sample at a time."""
    single = [grad(log_prob)(params, h, t) for h, t in zip(history, target)]
    return {name: torch.stack([g[name] for g in single]) for name in params}


def expert_fisher(model, plugin: MLTFRPlugin, histories: torch.Tensor, targets: torch.Tensor,
                  labels: str = "observed", chunk: int = 64, seed: int = 0,
                  vectorise: bool = True) -> list[dict[str, torch.Tensor]]:
    """Per expert, {integration parameter name: Fisher diagonal}, from per-sample gradients
    (``vectorise=False`` loops over samples: the reference the vectorised path is tested against)."""
    if labels not in ("observed", "sampled"):
        raise ValueError(f"labels must be 'observed' or 'sampled', not {labels!r}")
    was_training = model.training
    model.eval()
    # Evaluation noise (the authors' eval_noise switch) is off here: per-sample gradients need a deterministic
    # selection (vmap cannot draw from a seeded generator), and the Fisher is a property of the model, not of
    # one noise draw. The authors' Fisher keeps the noise on; README lists this as a remaining difference.
    noisy = [expert.filter for expert in plugin.experts if expert.filter.eval_noise]
    for token_filter in noisy:
        token_filter.eval_noise = False
    scorer = _Scorer(model)
    device = next(model.parameters()).device
    full_name = {id(p): f"model.{n}" for n, p in model.named_parameters()}
    params = {full_name[id(p)]: p.detach() for expert in plugin.experts for p in expert.integration.parameters()}
    generator = torch.Generator().manual_seed(seed)

    def log_prob(theta, history, target):
        logits = functional_call(scorer, theta, (history.unsqueeze(0),), strict=False)[0]
        logits = torch.cat([logits.new_full((1,), float("-inf")), logits[1:]])  # padding is never an outcome
        return torch.log_softmax(logits, dim=-1).gather(0, target.view(1))[0]

    per_sample_grad = vmap(grad(log_prob), in_dims=(None, 0, 0))
    totals = {name: torch.zeros_like(p) for name, p in params.items()}
    for start in range(0, len(histories), chunk):
        history = histories[start:start + chunk].to(device)
        target = targets[start:start + chunk].to(device)
        if labels == "sampled":
            with torch.no_grad():
                probs = torch.softmax(scorer(history)[:, 1:].float(), -1).cpu()
            target = (torch.multinomial(probs, 1, generator=generator)[:, 0] + 1).to(device)
        # The math attention kernel is made of ops vmap can batch; the fused CPU kernel is not, and
        # vmap would fall back to a slow per-sample loop for it.
        with sdpa_kernel(SDPBackend.MATH):
            grads = per_sample_grad(params, history, target) if vectorise else \
                _looped_grads(log_prob, params, history, target)
        for name in totals:
            totals[name] += grads[name].pow(2).sum(0)
    model.train(was_training)
    for token_filter in noisy:
        token_filter.eval_noise = True
    return [{local: totals[full_name[id(p)]] / len(histories) for local, p in expert.integration.named_parameters()}
            for expert in plugin.experts]


def fisher_merge(states: list[dict[str, torch.Tensor]], fishers: list[dict[str, torch.Tensor]],
                 eps: float = 1e-12) -> dict[str, torch.Tensor]:
    """Eq. (14): theta_SC = sum_r F_r theta_r / sum_r F_r, element-wise (plain mean where all F = 0)."""
    merged = {}
    for name in states[0]:
        weights = torch.stack([f[name] for f in fishers])
        values = torch.stack([s[name] for s in states])
        denom = weights.sum(0)
        merged[name] = torch.where(denom > eps, (weights * values).sum(0) / denom.clamp_min(eps), values.mean(0))
    return merged


def build_consensus(plugin: MLTFRPlugin, fishers: list[dict[str, torch.Tensor]]) -> ConsensusExpert | None:
    group = plugin.consensus_group()
    if not group:
        return None
    states = [{n: p.detach().clone() for n, p in plugin.experts[m].integration.named_parameters()} for m in group]
    merged = fisher_merge(states, [fishers[m] for m in group])
    integration = copy.deepcopy(plugin.experts[group[0]].integration)
    integration.load_state_dict(merged)
    return ConsensusExpert(group, integration)
