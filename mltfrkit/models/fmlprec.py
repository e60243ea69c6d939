"""FMLP-Rec (Zhou et al., WWW 2022): self-attention replaced by learnable filters in the frequency domain.

Faithful to the paper and its reference code: E = dropout(LayerNorm(item + learned position));
each block is a filter layer, ``LayerNorm(x + dropout(irfft(W * rfft(x))))`` with the FFT along
the sequence (orthonormal) and W a learnable complex filter of shape (max_len // 2 + 1, d)
initialised from N(0, 0.02) in its real and imaginary parts, followed by a GELU feed-forward
(inner 4d), post-LN. Prediction: dot product with the item embeddings. Weights from N(0, 0.02).

The filter is a circular convolution over the whole window: not causal. The reference code
trains on every prefix of a training sequence as its own sample (loss at the last position), so
no position sees its target; ``PrefixEncodedMixin`` does exactly that for every position of the
trainer's sequences (see its docstring), making the default loss (BCE with one sampled negative
at every position, as the MLTFR authors trained it; ``loss="ce"`` for full softmax) leak-free.

Initialisation happens once, at construction, on this backbone's own modules only. The
reference code (and the MLTFR authors' copy of it) re-initialised every ``nn.Embedding`` after
loading, which wiped the plug-in's LLM token tables; a plug-in attached here is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mltfrkit.models.base import (
    BackboneConfig,
    PostNormBackbone,
    PostNormSublayer,
    PrefixEncodedMixin,
)


@dataclass
class FMLPRecConfig(BackboneConfig):
    n_layers: int = 2
    initializer_range: float = 0.02


class FilterLayer(PostNormSublayer):
    """LayerNorm(x + dropout(irfft(W * rfft(x)))), W complex (max_len // 2 + 1, d)."""

    def __init__(self, hidden_size: int, max_len: int, dropout: float, init_std: float = 0.02):
        super().__init__(hidden_size, dropout)
        self.max_len = max_len
        # stored as real pairs (..., 2): plain real parameters for the optimiser and checkpoints
        self.weight = nn.Parameter(torch.randn(max_len // 2 + 1, hidden_size, 2) * init_std)

    @property
    def complex_weight(self) -> torch.Tensor:
        return torch.view_as_complex(self.weight)

    def mix(self, x: torch.Tensor, mask: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        if x.shape[1] != self.max_len:
            raise ValueError(f"FMLP-Rec filters windows of exactly max_len={self.max_len} positions, got {x.shape[1]}")
        spectrum = torch.fft.rfft(x, dim=1, norm="ortho")
        return torch.fft.irfft(spectrum * self.complex_weight, n=self.max_len, dim=1, norm="ortho")


class FMLPRec(PrefixEncodedMixin, PostNormBackbone):
    config_class = FMLPRecConfig
    causal_attention = None  # no attention: the filters need no mask

    def __init__(self, n_items: int, config: FMLPRecConfig | None = None):
        super().__init__(n_items, config or FMLPRecConfig())

    def make_mixer(self, index: int) -> nn.Module:
        c = self.config
        return FilterLayer(c.hidden_size, c.max_len, c.dropout, c.initializer_range)
