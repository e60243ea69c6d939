"""Hard samples for L_cl (MixRec Appendix A).

For each item j: the top 0.5% nearest items by L2 distance between item *text* embeddings, united
with the top 0.5% nearest by L2 distance between *matrix-factorisation* item vectors (dimension
1,000), minus every item that co-occurs with j in a training sequence (and j itself).

Two substitutions, both because of what is reachable offline: the paper's text encoder is
BERT-base (mean of its token states); here it is any (n_items + 1, e) matrix the caller passes, by
default the frozen MixRec LLM's own mean last hidden state over each sentence
(:func:`llm_text_embeddings`). The MF vectors are the leading singular vectors of the binary
user-item training matrix scaled by their singular values (least-squares MF), at rank
min(1000, users - 1, items - 1) because a rank above the matrix's own is meaningless.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def interaction_matrix(sequences: Sequence[np.ndarray], n_items: int) -> torch.Tensor:
    """(users, n_items + 1) sparse binary matrix of training interactions."""
    rows = np.concatenate([np.full(len(s), u) for u, s in enumerate(sequences)]) if len(sequences) else np.zeros(0)
    cols = np.concatenate(list(sequences)) if len(sequences) else np.zeros(0)
    index = torch.as_tensor(np.stack([rows, cols]), dtype=torch.long)
    matrix = torch.sparse_coo_tensor(index, torch.ones(index.shape[1]), (len(sequences), n_items + 1),
                                     check_invariants=True)
    return matrix.coalesce().sign()


def mf_item_vectors(matrix: torch.Tensor, rank: int = 1000, seed: int = 0) -> torch.Tensor:
    """(n_items + 1, r) item latent vectors: V S of a rank-r SVD of the interaction matrix."""
    r = max(1, min(rank, matrix.shape[0] - 1, matrix.shape[1] - 2))
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        _, s, v = torch.svd_lowrank(matrix, q=r, niter=4)
    finally:
        torch.random.set_rng_state(generator_state)
    return v * s


def nearest(vectors: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """(n_items + 1, k) indices of each item's k nearest other items by L2 distance (row 0 unused)."""
    x = vectors[1:].float()
    out = torch.zeros(vectors.shape[0], k, dtype=torch.long)
    for start in range(0, len(x), chunk):
        d = torch.cdist(x[start:start + chunk], x)
        d[torch.arange(d.shape[0]), torch.arange(start, start + d.shape[0])] = float("inf")  # not itself
        out[1 + start:1 + start + d.shape[0]] = d.topk(k, largest=False).indices + 1
    return out


def co_occurrence(sequences: Sequence[np.ndarray], n_items: int) -> list[np.ndarray]:
    """For each item, the items it shares at least one training sequence with (itself included)."""
    users_of: list[list[int]] = [[] for _ in range(n_items + 1)]
    items_of = [np.unique(s) for s in sequences]
    for user, items in enumerate(items_of):
        for item in items:
            users_of[item].append(user)
    return [np.unique(np.concatenate([items_of[u] for u in users])) if users else np.zeros(0, dtype=np.int64)
            for users in users_of]


def hard_negative_sets(sequences: Sequence[np.ndarray], n_items: int, text_embeddings: torch.Tensor,
                       fraction: float = 0.005, mf_rank: int = 1000, seed: int = 0) -> list[torch.Tensor]:
    """N_j for every item j (index 0 empty): Appendix A's union of nearest sets minus co-occurring items."""
    if text_embeddings.shape[0] != n_items + 1:
        raise ValueError(f"text_embeddings has {text_embeddings.shape[0]} rows; it needs n_items + 1 = "
                         f"{n_items + 1} (row 0 = padding)")
    k = max(1, math.ceil(fraction * n_items))
    k = min(k, n_items - 1)
    matrix = interaction_matrix(sequences, n_items)
    by_text = nearest(text_embeddings, k)
    by_mf = nearest(mf_item_vectors(matrix, mf_rank, seed), k)
    together = co_occurrence(sequences, n_items)
    sets = [torch.zeros(0, dtype=torch.long)]
    for item in range(1, n_items + 1):
        candidates = torch.unique(torch.cat([by_text[item], by_mf[item]]))
        banned = torch.zeros(n_items + 1, dtype=torch.bool)
        banned[torch.as_tensor(together[item], dtype=torch.long)] = True
        banned[item] = True
        sets.append(candidates[~banned[candidates]])
    return sets


@torch.no_grad()
def llm_text_embeddings(model, batch_items: int = 64) -> torch.Tensor:
    """(n_items + 1, d): the frozen LLM's mean last hidden state over each item sentence (no adapters,
    causal mask): the stand-in for Appendix A's BERT encoder."""
    from mltfrkit.mixrec.llm import attention
    from mltfrkit.mixrec.masks import TokenBatch, causal_mask

    parts = model.parts
    tokens, lengths = model.item_tokens, model.item_lengths
    out = torch.zeros(model.n_items + 1, parts.hidden_size)
    for start in range(1, model.n_items + 1, batch_items):
        items = torch.arange(start, min(start + batch_items, model.n_items + 1), device=tokens.device)
        ids = tokens[items]
        valid = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0) < lengths[items].unsqueeze(1)
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        batch = TokenBatch(ids, valid, torch.where(valid, 0, -1), positions,
                           torch.zeros(len(items), 1, dtype=torch.long), torch.zeros(len(items), 0, dtype=torch.long))
        mask = causal_mask(batch)
        x = parts.embed(ids, positions)
        for layer in model.layers:
            normed = layer.attn_norm(x)
            (a,) = attention(parts, layer, normed, normed, positions, positions, [mask])
            x = x + a
            x = x + layer.ffn(layer.ffn_norm(x))
        x = parts.final_norm(x).float()
        out[items.cpu()] = ((x * valid.unsqueeze(-1)).sum(1) / valid.sum(1, keepdim=True)).cpu()
    return out
