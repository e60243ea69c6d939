"""BERT4Rec (Sun et al., CIKM 2019): bidirectional Transformer trained with the cloze objective.

Faithful to the paper and its reference code (the BERT code it builds on, and RecBole's port):
E = dropout(LayerNorm(item + learned position)); post-LN blocks of bidirectional multi-head
self-attention (padding keys masked) and a GELU feed-forward of inner size 4d; weights from
N(0, 0.02). Training (cloze): each item of the training sequence is replaced by [MASK] with
probability ``mask_ratio`` and predicted from both sides. Output: an FFN with GELU (and the
LayerNorm of the reference code) on the hidden state, dot product with the shared item
embeddings, plus an output bias; full softmax cross-entropy (the default, ``loss="ce"``).

[MASK] is an extra item row, id ``n_items + 1``; ``item_embeddings()`` returns rows 0..n_items
only, so scores have shape (B, n_items + 1) and [MASK] is never a candidate. At evaluation a
[MASK] is appended after the history (the oldest item drops out of the window) and the user
representation is the hidden state at that slot, not at the last real item (the MLTFR authors'
code predicted from the last real item).

``loss="bce"`` keeps the cloze training and scores each masked position against its true item
and one sampled negative (BCE, MLTFR eq. 16) instead of all items.

Training length: BERT4Rec is known to need many more updates than SASRec (Petrov & Macdonald,
RecSys 2022); with the trainer's default patience 10 it may stop early; give it
``--patience 20`` or more (and enough ``--epochs``) when a fair comparison matters.

``ClozeRecommender`` holds everything above except the attention; LinRec reuses it with its
linear attention (``mltfrkit/models/linrec.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mltfrkit.models.base import BackboneConfig, PostNormBackbone, PostNormSelfAttention


@dataclass
class BERT4RecConfig(BackboneConfig):
    n_layers: int = 2
    n_heads: int = 2
    mask_ratio: float = 0.2  # cloze: probability that an item of a training sequence is masked
    initializer_range: float = 0.02
    loss: str = "ce"  # cloze + softmax over all items; "bce": cloze + one sampled negative per masked item


class ClozeRecommender(PostNormBackbone):
    """Bidirectional post-LN encoder, cloze training, prediction at an appended [MASK]."""

    config_class = BERT4RecConfig
    bidirectional = True
    causal_attention = False
    extra_item_rows = 1  # the [MASK] token, row n_items + 1
    padding_free = True  # padding keys are masked out of the attention; every other step is position-wise

    def __init__(self, n_items: int, config: BERT4RecConfig | None = None):
        config = config or self.config_class()
        if not 0.0 < config.mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1], not {config.mask_ratio}")
        super().__init__(n_items, config)
        d = config.hidden_size
        self.mask_id = n_items + 1
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=1e-12))
        self.head.apply(self.init_weights)  # own module, at construction
        self.output_bias = nn.Parameter(torch.zeros(n_items + 1))

    # -- prediction at the [MASK] slot ---------------------------------------------------------
    def eval_input(self, history: torch.Tensor) -> torch.Tensor:
        """(B, w) history -> its most recent w - 1 items followed by [MASK] (w = max_len, or a narrower chunk's
        width: the evaluator makes it one column wider than the chunk's longest history, so nothing is dropped)."""
        mask = torch.full_like(history[:, :1], self.mask_id)
        return torch.cat([history[:, 1:], mask], dim=1)

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden) @ self.item_embeddings().T + self.output_bias

    def pair_scores(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.head(hidden) * self.item_embeddings()[items]).sum(-1) + self.output_bias[items]

    # -- cloze training --------------------------------------------------------------------------
    def cloze_mask(self, items: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Boolean (B, L): which real items are masked, drawn from ``generator`` (resume-exact)."""
        draw = torch.rand(items.shape, generator=generator, device="cpu").to(items.device)
        return (items > 0) & (draw < self.config.mask_ratio)

    def loss(self, seqs: torch.Tensor, generator: torch.Generator | None = None,
             scored: torch.Tensor | None = None) -> torch.Tensor:
        """Cloze loss on the most recent max_len items of (B, max_len + 1) training sequences; with
        ``scored`` (B, max_len), only those items are masked and predicted (the rest are context)."""
        items = seqs[:, -self.config.max_len:]
        masked = self.cloze_mask(items, generator)
        if scored is not None:
            masked = masked & scored
        hidden = self.encode(items.masked_fill(masked, self.mask_id))
        if not masked.any():  # nothing masked in this batch (tiny batches of short sequences)
            return hidden.sum() * 0.0
        targets = items.masked_fill(~masked, 0)
        return self.next_item_loss(hidden, targets, items, generator)


class BERT4Rec(ClozeRecommender):
    config_class = BERT4RecConfig

    def make_mixer(self, index: int) -> nn.Module:
        return PostNormSelfAttention(self.config.hidden_size, self.config.n_heads, self.config.dropout)
