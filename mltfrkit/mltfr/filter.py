"""User-guided token filtering (paper section 2.1.1, eqs. 1-7).

The user's interest (eq. 1) is the mask-aware mean of E; the frozen vocabulary W_voc is
projected to d_emb by a learned ``Linear(d_llm, d_emb)`` (eq. 2); tokens are scored by cosine
similarity (eq. 3); a Gumbel-perturbed soft distribution (eq. 4) drives a hard top-K whose
straight-through weights ``(hard - soft).detach() + soft`` scale the selected embeddings
(eqs. 5-7), so the forward value is exactly the hard choice and the gradient reaches the
align projection.

Noise modes: ``paper`` = (s + g) / tau (eq. 4; with s a cosine in [-1, 1] this samples almost
uniformly from a large vocabulary whatever tau is), ``tempered`` = s / tau + g (the sharpness
is a real knob), ``none`` = s / tau (deterministic). By default evaluation adds no noise and takes
the deterministic top-K; the aligned vocabulary is then computed once and reused until the
projection's weights change.

The authors' code differs in three ways, each a switch here (README "The authors' MLTFR"):
``eval_noise`` keeps the training noise at evaluation, drawn from a generator reset by
:meth:`TokenFilter.reset_eval_noise` (so an evaluation is reproducible); ``token_scale="sum"``
scales the picked tokens by ``w / (sum(w) + 1e-8)`` over the K picks instead of ``w``;
``trainable_tables`` makes the table a parameter that the optimiser updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mltfrkit.mltfr.integration import PickedTokens
from mltfrkit.mltfr.tables import kept_rows

NOISE_MODES = ("paper", "tempered", "none")
TOKEN_SCALES = ("straight_through", "sum")


def interest_vector(E: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. (1): mean over non-padding positions (B, L, d) -> (B, d)."""
    weights = mask.unsqueeze(-1).to(E.dtype)
    return (E * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def gumbel_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gumbel(0, 1) noise, -log(-log(u)). Drawn from uniforms: on CPU torch.rand is about 7x faster
    than exponential_ (measured: 22 ms vs 158 ms for 128 x 61k), which dominated a training step."""
    # generator=None is passed as no argument: the same default stream, and torch.compile (dynamo, torch 2.13)
    # fails on an explicit generator=None with a dynamic batch size.
    drawn = {"generator": generator} if generator is not None else {}
    uniform = torch.rand(x.shape, device=x.device, dtype=x.dtype, **drawn)
    return uniform.clamp_(1e-10, 1.0 - 1e-7).log_().neg_().log_().neg_()


@dataclass
class Selection:
    """What a filter picked for each user: vocabulary row ids, cosine scores, straight-through weights, and
    the picks themselves (:class:`PickedTokens`: rows of the filter's table), which the cross-attention
    projects without materialising the (B, K, d_llm) tokens when that is cheaper."""

    token_ids: torch.Tensor  # (B, K) rows of the *full* vocabulary
    scores: torch.Tensor  # (B, K) cosine similarity s_v (eq. 3)
    weights: torch.Tensor  # (B, K) what scales the picked embeddings: the straight-through weights (value 1,
    # gradient through the soft router), or the authors' w / sum(w)
    picks: PickedTokens  # the same picks as rows of the filter's (kept-rows) table, with those weights

    @property
    def tokens(self) -> torch.Tensor:
        """(B, K, d_llm) the selected embeddings scaled by the weights."""
        return self.picks.dense()


class TokenFilter(nn.Module):
    def __init__(self, vocab: torch.Tensor, d_emb: int, top_k: int = 10, tau: float = 0.5,
                 noise: str = "paper", keep_ids: torch.Tensor | None = None, token_scale: str = "straight_through",
                 eval_noise: bool = False, eval_seed: int = 0, trainable_table: bool = False):
        """``vocab`` is the frozen (V, d_llm) table, shared between filters that use the same source;
        ``keep_ids`` (sorted full-vocabulary ids) restricts selection to a pre-filtered subset (token
        classes, cap); ``vocab`` may be the full table or already just those rows."""
        super().__init__()
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}, not {noise!r}")
        if token_scale not in TOKEN_SCALES:
            raise ValueError(f"token_scale must be one of {TOKEN_SCALES}, not {token_scale!r}")
        vocab_rows, keep_ids = kept_rows(vocab, keep_ids)
        if top_k > vocab_rows.shape[0]:
            raise ValueError(f"top_k={top_k} exceeds the vocabulary size {vocab_rows.shape[0]}")
        if trainable_table:
            # The authors' behaviour: the table is this expert's own parameter (a float32 copy), updated by the
            # optimiser and saved in checkpoints. Memory: V x d_llm x 4 bytes, x 4 with Adam's moments and the
            # trainer's best-weights copy.
            self.vocab = nn.Parameter(vocab_rows.detach().float().clone())
        else:
            # Frozen tables are non-persistent buffers: never trained, never written into checkpoints.
            self.register_buffer("vocab", vocab_rows, persistent=False)
        self.register_buffer("keep_ids", keep_ids, persistent=False)
        self.align = nn.Linear(vocab_rows.shape[1], d_emb)
        self.top_k, self.tau, self.noise, self.token_scale = top_k, tau, noise, token_scale
        self.eval_noise, self.eval_seed = eval_noise, eval_seed
        self._eval_generator: torch.Generator | None = None
        self._eval_cache: tuple[tuple, torch.Tensor] | None = None

    def reset_eval_noise(self) -> None:
        """Restart the evaluation-noise stream (``eval_noise``): called at the start of every
        evaluation, so two evaluations of the same model draw the same noise in the same order."""
        self._eval_generator = torch.Generator(device=self.vocab.device).manual_seed(self.eval_seed)

    @property
    def d_llm(self) -> int:
        return self.vocab.shape[1]

    def _project(self) -> torch.Tensor:
        """Eq. (2), L2-normalised for the cosine of eq. (3). A bfloat16 table (``precision``) runs
        the V x d_llm x d_emb product in bfloat16 (about 2x faster on CPUs with AVX512-BF16);
        normalisation and everything after it stay float32."""
        if self.vocab.dtype == torch.bfloat16:
            low = torch.bfloat16
            aligned = F.linear(self.vocab, self.align.weight.to(low), self.align.bias.to(low)).float()
        else:
            aligned = self.align(self.vocab.to(self.align.weight.dtype))
        return F.normalize(aligned, dim=-1)

    def aligned_vocab(self) -> torch.Tensor:
        """The normalised aligned vocabulary; cached at evaluation until the projection changes."""
        if self.training or torch.is_grad_enabled():
            self._eval_cache = None
            return self._project()
        key = (self.align.weight._version, self.align.bias._version, id(self.align.weight), self.vocab.device,
               self.vocab._version, id(self.vocab))
        if self._eval_cache is None or self._eval_cache[0] != key:
            self._eval_cache = (key, self._project())
        return self._eval_cache[1]

    def similarity(self, E: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Eq. (3): (B, V') cosine between each user's interest and every kept token."""
        return F.normalize(interest_vector(E, mask), dim=-1) @ self.aligned_vocab().T

    def selection_logits(self, s: torch.Tensor, noise: str, generator: torch.Generator | None = None) -> torch.Tensor:
        """Eq. (4) and its variants: the routing logits whose top-K is the selection."""
        if noise == "paper":
            return (s + gumbel_like(s, generator)) / self.tau
        if noise == "tempered":
            return s / self.tau + gumbel_like(s, generator)
        return s / self.tau

    def scaled(self, weights: torch.Tensor) -> torch.Tensor:
        """What multiplies the picked embeddings: the straight-through weights (value 1), or the authors'
        ``w / (sum_K w + 1e-8)`` (value 1/K; at K = 1 its gradient is about 1e-8 / w^2, i.e. none)."""
        if self.token_scale == "sum":
            return weights / (weights.sum(-1, keepdim=True) + 1e-8)
        return weights

    def forward(self, E: torch.Tensor, mask: torch.Tensor, top_k: int | None = None, noise: str | None = None,
                generator: torch.Generator | None = None) -> Selection:
        top_k = top_k or self.top_k
        s = self.similarity(E, mask)
        if not self.training:  # evaluation: hard weights (exactly 1), no noise unless eval_noise
            if self.eval_noise and (noise or self.noise) != "none":
                if generator is None:
                    if self._eval_generator is None or self._eval_generator.device != s.device:
                        self.reset_eval_noise()
                    generator = self._eval_generator
                _, picked = self.selection_logits(s, noise or self.noise, generator).topk(top_k, dim=-1)
                scores = s.gather(1, picked)
            else:
                scores, picked = s.topk(top_k, dim=-1)
            weights = self.scaled(torch.ones_like(scores))
            return Selection(token_ids=self.keep_ids[picked], scores=scores, weights=weights,
                             picks=PickedTokens(self.vocab, picked, weights, E.dtype))
        logits = self.selection_logits(s, noise or self.noise, generator)
        picked_logits, picked = logits.topk(top_k, dim=-1)
        # Soft probability of the picked tokens only: softmax's normaliser without a B x V softmax.
        soft = torch.exp(picked_logits - torch.logsumexp(logits, dim=-1, keepdim=True))
        weights = self.scaled((1.0 - soft).detach() + soft)  # hard = 1 at picked positions: value 1, gradient of soft
        return Selection(token_ids=self.keep_ids[picked], scores=s.gather(1, picked), weights=weights,
                         picks=PickedTokens(self.vocab, picked, weights, E.dtype))
