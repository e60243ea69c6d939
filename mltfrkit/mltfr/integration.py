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

import math

import torch
from torch import nn
from torch.nn import functional as F


def dropout_multiplier(shape: tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor | None:
    """What training-mode dropout multiplies a tensor of ``shape`` by, drawn as CPU dropout draws it
    (``F.dropout``, and the math path of ``F.scaled_dot_product_attention``: a Bernoulli(1 - p) tensor of that
    shape divided by 1 - p), so it consumes the same random numbers. None when p = 0 (nothing is drawn)."""
    if p <= 0:
        return None
    return torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(1 - p).div_(1 - p)


class PickedTokens:
    """The tokens a cross-attention reads: K rows picked per user from a frozen (V, d_llm) table, each scaled by
    its weight (:class:`mltfrkit.mltfr.filter.Selection`), or the mean of several such picks (:meth:`mean`: the
    consensus expert's keys and values, eq. 15's mean of its members' selected token matrices).

    Keys and values are linear in the tokens: ``W (mean_m w_m t_m) + b = mean_m w_m (W t_m) + b``. So there are
    two orders to compute them in, with the same value up to float rounding and the same gradients (to the
    projection, the weights and, with trainable tables, the picked rows): the picks as tokens, then projected
    (:meth:`dense`), or each table projected once and its projected rows picked (:meth:`project`).
    :attr:`table_first` chooses the second in training when some table has fewer rows than it has picks: a
    prefix-encoded batch (FMLP-Rec, BSARec) is a window per position, thousands of windows x K, against 2,000
    rows. Otherwise, and always at evaluation (a pass without gradients, cheap either way), the first, which is
    exactly the computation before this class existed (the tokens made once, shared by the expert's keys and
    values and by the consensus mean): runs that pick no more than their tables in training (SASRec, BERT4Rec:
    128 users x K = 1) train and score bit for bit as before."""

    def __init__(self, table: torch.Tensor | None, rows: torch.Tensor | None, weights: torch.Tensor | None,
                 dtype: torch.dtype = torch.float32, members: list["PickedTokens"] | None = None):
        self.table, self.rows, self.weights, self.dtype = table, rows, weights, dtype
        self.members = members  # set by mean(): this is their mean, the rest is None
        self._dense: torch.Tensor | None = None

    @classmethod
    def mean(cls, members: list["PickedTokens"]) -> "PickedTokens":
        return cls(None, None, None, members[0].dtype, members=list(members))

    def _parts(self) -> list["PickedTokens"]:
        return self.members or [self]

    @property
    def table_first(self) -> bool:
        """Project the tables, then pick (:meth:`project`): in training, when some table has fewer rows than picks."""
        return torch.is_grad_enabled() and any(part.rows.numel() > part.table.shape[0] for part in self._parts())

    def dense(self) -> torch.Tensor:
        """(..., K, d_llm): the scaled tokens themselves (made once; a mean reuses its members' tokens)."""
        if self._dense is None:
            if self.members:
                self._dense = torch.stack([member.dense() for member in self.members]).mean(0)
            else:
                self._dense = self.table[self.rows].to(self.dtype) * self.weights.unsqueeze(-1)
        return self._dense

    def project(self, linear: nn.Linear, flat: bool = False) -> torch.Tensor:
        """``linear(self.dense())`` (..., K, d_out) in the other order: each table projected, its rows picked,
        scaled and averaged. ``flat``: every user's picks in one row, (1, B x K, d_out)."""
        outputs = []
        for part in self._parts():
            rows, weights = (part.rows.reshape(1, -1), part.weights.reshape(1, -1)) if flat else (part.rows, part.weights)
            outputs.append(F.linear(part.table.to(self.dtype), linear.weight)[rows] * weights.unsqueeze(-1))
        out = outputs[0] if len(outputs) == 1 else torch.stack(outputs).mean(0)
        return out if linear.bias is None else out + linear.bias


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

    def forward(self, E: torch.Tensor, tokens: torch.Tensor | PickedTokens, batch_keys: bool | int = False,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, d_emb), tokens (B, K, d_llm) or their :class:`PickedTokens` -> (B, L, d_emb); ``batch_keys``:
        True, every row attends over all B x K tokens; an int n, the same when B <= n, otherwise the rows are
        dealt into ceil(B / n) groups of at most n (row i to group i mod the group count) and each row attends
        over its group's tokens (:meth:`grouped`; needs ``mask``)."""
        B, L, d = E.shape
        if batch_keys is not True and batch_keys and B > batch_keys:
            if mask is None:
                raise ValueError("grouped batch keys need the padding mask: integration(E, tokens, n, mask)")
            return self.grouped(E, tokens, int(batch_keys), mask)
        k, v = map(self.heads, self.keys_values(tokens, flat=bool(batch_keys)))
        if batch_keys:
            k, v = k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)
        q = self.heads(self.query(E))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).reshape(B, L, d))

    def heads(self, t: torch.Tensor) -> torch.Tensor:
        """(n, T, d_emb) -> (n, heads, T, d_emb / heads)."""
        return t.reshape(t.shape[0], t.shape[1], self.n_heads, t.shape[2] // self.n_heads).transpose(1, 2)

    def attention_keep(self, rows: int, queries: int, keys: int, like: torch.Tensor) -> torch.Tensor | None:
        """The attention-dropout multiplier ``forward`` applies to (rows, heads, queries, keys) attention weights,
        drawn as ``F.scaled_dot_product_attention`` draws it on the CPU's math path (a Bernoulli(1 - p) tensor
        of that shape, divided by 1 - p): the same random numbers, so :meth:`attend` on any slice of the rows and
        queries computes what ``forward`` computes there. None when no dropout applies (evaluation, p = 0)."""
        if not self.training:
            return None
        return dropout_multiplier((rows, self.n_heads, queries, keys), self.attn_dropout, like)

    def attend(self, E: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """``forward`` for per-row keys, spelled out: E (n, T, d_emb) against its rows' projected keys and values
        (n, K, d_emb), ``keep`` the dropout multiplier (n, heads, T, K) or None. The attention of the math path of
        ``F.scaled_dot_product_attention`` (both sides scaled by the root of 1 / sqrt(d_head)), so its value
        equals ``forward``'s up to float rounding."""
        n, T, d = E.shape
        root = math.sqrt(1.0 / math.sqrt(d // self.n_heads))
        q, k, v = self.heads(self.query(E)), self.heads(k), self.heads(v)
        weights = torch.softmax((q * root) @ (k * root).transpose(-2, -1), dim=-1)
        if keep is not None:
            weights = weights * keep
        return self.out((weights @ v).transpose(1, 2).reshape(n, T, d))

    def keys_values(self, tokens: torch.Tensor | PickedTokens, flat: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the tokens, (B, K, d_emb) each; ``flat``: every row's tokens in one row, (1, B x K,
        d_emb), projected once to be shared (not B copies of B x K projections)."""
        if isinstance(tokens, PickedTokens) and tokens.table_first:
            return tokens.project(self.key, flat), tokens.project(self.value, flat)
        tokens = tokens.dense() if isinstance(tokens, PickedTokens) else tokens
        if flat:
            tokens = tokens.reshape(1, -1, tokens.shape[-1])
        return self.key(tokens), self.value(tokens)

    def grouped(self, E: torch.Tensor, tokens: torch.Tensor | PickedTokens, group: int, mask: torch.Tensor) -> torch.Tensor:
        """Batch-wide keys over groups of at most ``group`` rows, queries at real positions only.

        The authors' code shares keys across its batch of 128 *samples*. A prefix-encoded backbone (FMLP-Rec,
        BSARec) makes each training prefix a sample, so a batch of 128 users is hundreds or thousands of windows
        here; sharing all of their W x K tokens with every window would be a (W x L) x (W x K) attention, tens of
        GB at K = 10 on Pantry (a run was killed for it), and not what the authors ran. Rows are dealt round-robin
        into groups of at most ``group`` windows (consecutive windows belong to one user; dealing spreads a group
        over many users, as the authors' shuffled prefixes are), and each window attends over its group's
        tokens. Only real positions are queried: a padding position's output is zeroed by the plug-in anyway,
        and a query's attention does not depend on other queries, so this changes no real position's value."""
        B, L, d = E.shape
        n_groups = -(-B // group)
        member = torch.arange(B, device=E.device) % n_groups
        k_all, v_all = self.keys_values(tokens)  # (B, K, d_emb)
        q_all = self.query(E)
        split = lambda t: self.heads(t.unsqueeze(0))  # noqa: E731  (N, d) -> (1, heads, N, d / heads)
        rows_out, cols_out, outputs = [], [], []
        for g in range(n_groups):
            in_group = member == g
            rows, cols = (mask & in_group.unsqueeze(1)).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            k, v = split(k_all[in_group].reshape(-1, d)), split(v_all[in_group].reshape(-1, d))
            q = split(q_all[rows, cols])
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
            rows_out.append(rows), cols_out.append(cols), outputs.append(out.transpose(1, 2).reshape(-1, d))
        result = E.new_zeros(B, L, d)
        if outputs:
            result = result.index_put((torch.cat(rows_out), torch.cat(cols_out)), self.out(torch.cat(outputs)))
        return result
