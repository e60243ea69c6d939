"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the item sequence.

Faithful to the paper and its reference code: item embeddings scaled by sqrt(d) plus learned
positions, dropout, padding zeroed; each block normalises the query side (LayerNorm), attends
causally, adds the residual, then a LayerNorm'd point-wise FFN with residual; a final LayerNorm.
Prediction is the dot product with the (shared) item embeddings. Training: next item at every
position, BCE with one sampled negative (MLTFR eq. 16) or full softmax CE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mltfrkit.models.base import (BackboneConfig, MultiHeadSelfAttention, PointWiseFeedForward,
                                  SequentialRecommender, causal_padding_mask, window_positions)


@dataclass
class SASRecConfig(BackboneConfig):
    n_layers: int = 2
    n_heads: int = 2
    initializer_range: float = 0.02


class SASRecBlock(nn.Module):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        d = config.hidden_size
        self.attn_norm = nn.LayerNorm(d, eps=1e-8)
        self.attn = MultiHeadSelfAttention(d, config.n_heads, config.dropout)
        self.ffn_norm = nn.LayerNorm(d, eps=1e-8)
        self.ffn = PointWiseFeedForward(d, config.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q = self.attn_norm(x)
        x = q + self.attn(q, x, allowed)
        x = self.ffn_norm(x)
        x = x + self.ffn(x)
        return x * keep


class SASRec(SequentialRecommender):
    config_class = SASRecConfig
    padding_free = True  # causal attention over real keys only; padding rows zeroed after every block

    def __init__(self, n_items: int, config: SASRecConfig | None = None):
        config = config or SASRecConfig()
        super().__init__(n_items, config)
        d = config.hidden_size
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(SASRecBlock(config) for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(d, eps=1e-8)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # Only this backbone's own layers: a plug-in attached later is never re-initialised.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.xavier_normal_(module.weight) if isinstance(module, nn.Linear) else \
                nn.init.normal_(module.weight, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def embed(self, seqs: torch.Tensor) -> torch.Tensor:
        """E: the input representation the plug-in hook sees (paper's E in eq. 1)."""
        positions = window_positions(seqs.shape[1], self.config.max_len, seqs.device)
        x = self.item_emb(seqs) * math.sqrt(self.config.hidden_size) + self.pos_emb(positions)
        return self.emb_dropout(x) * (seqs > 0).unsqueeze(-1)

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        mask = seqs > 0
        keep = mask.unsqueeze(-1).to(self.item_emb.weight.dtype)
        allowed = causal_padding_mask(mask, causal=True)
        x = self.apply_plugin(self.embed(seqs), mask, "input", seqs)
        for index, block in enumerate(self.blocks):
            x = block(x, allowed, keep)
            if index == 0:
                x = self.apply_plugin(x, mask, "after_first_block", seqs)
        return self.final_norm(x)
