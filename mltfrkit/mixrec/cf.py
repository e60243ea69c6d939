"""The collaborative-filtering model M_cf trained jointly with MixRec (section 2.3.2, 3.4).

Any embedding-based CF model works; the paper uses NCF by default (He et al. 2017, NeuMF: GMF and an
MLP tower, trained with binary cross-entropy on observed vs sampled items) and compares MF trained
with BPR (Rendle et al. 2009; Fig. 6). Each exposes ``user_vectors(u)`` and ``item_vectors(i)``
(e_u^user, e_i^item of 2.3.2) and ``loss(users, positives, negatives)`` (L_cf in eq. of 2.4).
MixRec projects the vectors to the LLM's hidden size (:class:`CFInjection`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

CF_MODELS = ("ncf", "bpr_mf", "none")


class NCF(nn.Module):
    """NeuMF: GMF (element-wise product) and a 3-layer MLP tower on separate embeddings, fused by a
    linear output; e_u / e_i are the concatenation of a user's (item's) GMF and MLP embeddings."""

    def __init__(self, n_users: int, n_items: int, dim: int = 32):
        super().__init__()
        self.gmf_user, self.gmf_item = nn.Embedding(n_users, dim), nn.Embedding(n_items + 1, dim)
        self.mlp_user, self.mlp_item = nn.Embedding(n_users, dim), nn.Embedding(n_items + 1, dim)
        self.tower = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim // 2), nn.ReLU())
        self.out = nn.Linear(dim + dim // 2, 1)
        for table in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(table.weight, std=0.01)
        self.vector_size = 2 * dim

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        gmf = self.gmf_user(users) * self.gmf_item(items)
        mlp = self.tower(torch.cat([self.mlp_user(users), self.mlp_item(items)], -1))
        return self.out(torch.cat([gmf, mlp], -1)).squeeze(-1)

    def loss(self, users, positives, negatives) -> torch.Tensor:
        return F.softplus(-self.score(users, positives)).mean() + F.softplus(self.score(users, negatives)).mean()

    def user_vectors(self, users):
        return torch.cat([self.gmf_user(users), self.mlp_user(users)], -1)

    def item_vectors(self, items):
        return torch.cat([self.gmf_item(items), self.mlp_item(items)], -1)


class BPRMF(nn.Module):
    """Matrix factorisation with the BPR loss: score = <p_u, q_i>; e_u = p_u, e_i = q_i."""

    def __init__(self, n_users: int, n_items: int, dim: int = 64):
        super().__init__()
        self.user, self.item = nn.Embedding(n_users, dim), nn.Embedding(n_items + 1, dim)
        nn.init.normal_(self.user.weight, std=0.01)
        nn.init.normal_(self.item.weight, std=0.01)
        self.vector_size = dim

    def loss(self, users, positives, negatives) -> torch.Tensor:
        u = self.user(users)
        return F.softplus((u * self.item(negatives)).sum(-1) - (u * self.item(positives)).sum(-1)).mean()

    def user_vectors(self, users):
        return self.user(users)

    def item_vectors(self, items):
        return self.item(items)


def build_cf(kind: str, n_users: int, n_items: int, dim: int) -> nn.Module | None:
    if kind == "ncf":
        return NCF(n_users, n_items, dim)
    if kind == "bpr_mf":
        return BPRMF(n_users, n_items, dim)
    if kind == "none":
        return None
    raise ValueError(f"cf must be one of {list(CF_MODELS)}, not {kind!r}")


class CFInjection(nn.Module):
    """Section 2.3.2: single-layer feed-forward projections of e_u^user and e_i^item to the LLM's hidden
    size, h_u^user and h_i^item: the collaborative slots c^k concatenated to every layer's input."""

    def __init__(self, cf: nn.Module, hidden_size: int):
        super().__init__()
        self.cf = cf
        self.user_proj = nn.Linear(cf.vector_size, hidden_size)
        self.item_proj = nn.Linear(cf.vector_size, hidden_size)

    def sequence_slots(self, users: torch.Tensor, item_seqs: torch.Tensor) -> torch.Tensor:
        """(B,) users, (B, n) items -> (B, 1 + n, d): the user's slot, then one per item slot."""
        return torch.cat([self.user_proj(self.cf.user_vectors(users)).unsqueeze(1),
                          self.item_proj(self.cf.item_vectors(item_seqs))], 1)

    def item_slots(self, items: torch.Tensor) -> torch.Tensor:
        """(N,) items -> (N, 1, d)."""
        return self.item_proj(self.cf.item_vectors(items)).unsqueeze(1)
