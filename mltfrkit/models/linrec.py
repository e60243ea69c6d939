"""LinRec (Liu et al., SIGIR 2023): L2-normalised linear attention, used as in the MLTFR paper.

Attention (per head, as in LinRec's reference code): Q' = ELU(Q) and K' = ELU(K), each token's
query and key L2-normalised, then ``Q' (K'^T V) / sqrt(d_head)``: no softmax, O(L d^2) instead
of O(L^2 d). The feature map is the plain ELU of the reference code (not ELU + 1, which some
linear-attention variants use); ``elu_plus_one=True`` switches to the latter.

The MLTFR paper (appendix D) combines LinRec with BERT4Rec's prediction mechanism, so this
backbone is BERT4Rec (``ClozeRecommender``: bidirectional post-LN blocks, cloze training,
[MASK] appended at evaluation, output FFN + GELU + bias, full softmax CE) with its softmax
attention replaced by the linear one; being bidirectional, no causal cumulative sums are needed.

Batch-first throughout: K'^T V is a (d_head x d_head) matrix per user and head, so attention
never mixes users (the MLTFR authors' code transposed to (L, B, d) before a batch-first
attention, mixing the users of a batch). Padding keys are zeroed (``mask_padding=True``), so a
user's output does not depend on how much padding the window has; the reference code lets them
in (``mask_padding=False`` reproduces that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mltfrkit.models.base import PostNormSublayer
from mltfrkit.models.bert4rec import BERT4RecConfig, ClozeRecommender


@dataclass
class LinRecConfig(BERT4RecConfig):
    mask_padding: bool = True
    elu_plus_one: bool = False


class L2LinearAttention(PostNormSublayer):
    """LayerNorm(x + dropout(W_o [Q' (K'^T V) / sqrt(d_head)])) with L2-normalised ELU features."""

    def __init__(self, hidden_size: int, n_heads: int, dropout: float, mask_padding: bool = True,
                 elu_plus_one: bool = False):
        super().__init__(hidden_size, dropout)
        if hidden_size % n_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.mask_padding = mask_padding
        self.elu_plus_one = elu_plus_one

    def feature(self, x: torch.Tensor) -> torch.Tensor:
        x = F.elu(x) + 1.0 if self.elu_plus_one else F.elu(x)
        return F.normalize(x, p=2.0, dim=-1)  # each token's vector to unit L2 norm

    def mix(self, x: torch.Tensor, mask: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        B, L, d = x.shape
        h = d // self.n_heads
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, h).permute(2, 0, 3, 1, 4)  # each (B, heads, L, h)
        q, k = self.feature(q), self.feature(k)
        if self.mask_padding:
            k = k * mask[:, None, :, None].to(k.dtype)
        context = q @ (k.transpose(-2, -1) @ v) / math.sqrt(h)  # (B, heads, L, h); K'^T V is per user
        return self.out(context.transpose(1, 2).reshape(B, L, d))


class LinRec(ClozeRecommender):
    config_class = LinRecConfig

    @property
    def padding_free(self) -> bool:
        """Padding keys leave K'^T V only with ``mask_padding`` (the default)."""
        return self.config.mask_padding

    def make_mixer(self, index: int) -> nn.Module:
        c = self.config
        return L2LinearAttention(c.hidden_size, c.n_heads, c.dropout, c.mask_padding, c.elu_plus_one)
