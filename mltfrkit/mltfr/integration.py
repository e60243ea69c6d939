"""Semantic integration (eqs. 8-10): multi-head cross-attention from the sequence to the tokens
selected for **this** user. Queries come from E (d_emb), keys and values from the user's own K
selected tokens (d_llm); the output is k x d_emb. As in the authors' code there is no residual
or LayerNorm inside; attention dropout 0.1.

``keys="user"`` (default): keys never include other users' tokens, so a prediction does not depend
on who else is in the batch (with K = 1 the attention over a single key is a constant per user and
its query/key projections get no gradient). ``keys="batch"`` (the authors' code): every user attends
over the B x K tokens selected for the whole batch, which makes a user's output depend on its batch;
evaluation then scores users in fixed batches (``MLTFRConfig.eval_batch``) in dataset order."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class CrossAttentionIntegration(nn.Module):
    def __init__(self, d_emb: int, d_llm: int, n_heads: int = 4, attn_dropout: float = 0.1):
        super().__init__()
        if d_emb % n_heads:
            raise ValueError(f"d_emb {d_emb} is not divisible by n_heads {n_heads}")
        self.n_heads, self.d_llm, self.attn_dropout = n_heads, d_llm, attn_dropout
        self.query = nn.Linear(d_emb, d_emb)
        self.key = nn.Linear(d_llm, d_emb)
        self.value = nn.Linear(d_llm, d_emb)
        self.out = nn.Linear(d_emb, d_emb)

    def forward(self, E: torch.Tensor, tokens: torch.Tensor, batch_keys: bool = False) -> torch.Tensor:
        """(B, L, d_emb), (B, K, d_llm) -> (B, L, d_emb); ``batch_keys``: every row attends over all B x K tokens."""
        B, L, d = E.shape
        heads = lambda t: t.reshape(t.shape[0], t.shape[1], self.n_heads, d // self.n_heads).transpose(1, 2)  # noqa: E731
        if batch_keys:  # project the B x K tokens once, then share them: not B copies of B x K projections
            tokens = tokens.reshape(1, -1, tokens.shape[-1])
            k, v = (heads(t).expand(B, -1, -1, -1) for t in (self.key(tokens), self.value(tokens)))
        else:
            k, v = heads(self.key(tokens)), heads(self.value(tokens))
        q = heads(self.query(E))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).reshape(B, L, d))
