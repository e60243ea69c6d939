"""LLM-TE and LLM-RE, the motivating experiment's baselines (paper Fig. 1).

The paper only says that token embeddings are projected to d_emb and added element-wise to the
sequence embeddings. We make that concrete and reproducible: each item is assigned one row of
the (pre-filtered) vocabulary by a seeded permutation (``assignment_seed``), the rows pass
through a learned ``Linear(d_llm, d_emb)``, and the result is added at every non-padding
position. LLM-RE replaces the rows by Gaussian vectors with the same shape and the same
per-dimension mean and standard deviation as the real rows, so the only difference is semantics.
"""

from __future__ import annotations

import torch
from torch import nn

from mltfrkit.mltfr.tables import kept_rows


def assign_rows(n_items: int, n_candidates: int, seed: int) -> torch.Tensor:
    """Item i (1..n_items) -> a vocabulary candidate index; distinct while candidates last."""
    generator = torch.Generator().manual_seed(seed)
    rounds = -(-n_items // n_candidates)
    order = torch.cat([torch.randperm(n_candidates, generator=generator) for _ in range(rounds)])
    return order[:n_items]


class ItemTokenInjection(nn.Module):
    def __init__(self, n_items: int, vocab: torch.Tensor, keep_ids: torch.Tensor | None, d_emb: int,
                 random_rows: bool = False, assignment_seed: int = 0):
        super().__init__()
        candidates, keep_ids = kept_rows(vocab, keep_ids)
        positions = assign_rows(n_items, len(keep_ids), assignment_seed)
        rows = keep_ids[positions]  # full-vocabulary ids
        table = candidates[positions].float()
        if random_rows:
            generator = torch.Generator().manual_seed(assignment_seed + 1)
            noise = torch.randn(table.shape, generator=generator)
            table = noise * table.std(0, keepdim=True) + table.mean(0, keepdim=True)
        padded = torch.cat([table.new_zeros(1, table.shape[1]), table])  # row 0: padding
        self.register_buffer("item_tokens", padded, persistent=False)  # frozen; rebuilt from the seed
        self.register_buffer("vocab_rows", torch.cat([rows.new_full((1,), -1), rows]), persistent=False)
        self.project = nn.Linear(table.shape[1], d_emb)
        self.n_items = n_items

    def padding_free_scores(self) -> bool:
        """Position-wise, zero at padding: a user's scores do not depend on leading padding columns."""
        return True

    def forward(self, E: torch.Tensor, mask: torch.Tensor, seqs: torch.Tensor | None = None) -> torch.Tensor:
        if seqs is None:
            raise ValueError("LLM-TE/RE needs item ids: the backbone must pass seqs to apply_plugin")
        ids = torch.where(seqs <= self.n_items, seqs, torch.zeros_like(seqs))  # mask tokens get nothing
        return self.project(self.item_tokens[ids]) * mask.unsqueeze(-1).to(E.dtype)
