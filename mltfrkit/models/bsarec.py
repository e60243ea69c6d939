"""BSARec (Shin et al., AAAI 2024): "beyond self-attention", a frequency layer mixed into each attention layer.

Faithful to the paper and its reference code: E = dropout(LayerNorm(item + learned position));
each block's mixer is ``alpha * F(x) + (1 - alpha) * A(x)`` followed by a GELU feed-forward
(inner 4d), post-LN, where

- A(x) = LayerNorm(x + dropout(MHA(x))): causal multi-head self-attention (padding keys masked);
- F(x) = LayerNorm(x + dropout(low + beta^2 * (x - low))): ``low`` keeps the first c // 2 + 1
  rfft bins of x along the sequence (orthonormal FFT), ``x - low`` is the high-pass part, and
  ``sqrt_beta`` (one value per dimension, initialised from N(0, 1)) is learned.

Defaults: alpha 0.9, c 3 (the paper's defaults), d 64, 2 layers, 2 heads, dropout 0.2 (MLTFR's
setup). The paper's Beauty setting is lr 5e-4, alpha 0.7, c 5, 1 head, dropout 0.5, CE loss.

Loss: BCE with one sampled negative at every position by default, as the MLTFR authors trained
it; the official code uses softmax CE over all items (``loss="ce"``). The frequency layer mixes
the whole window (not causal), so, as in the official code (every prefix of a training
sequence is a sample), each position is encoded from its own prefix (``PrefixEncodedMixin``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mltfrkit.models.base import (
    BackboneConfig,
    PostNormBackbone,
    PostNormSelfAttention,
    PostNormSublayer,
    PrefixEncodedMixin,
)


@dataclass
class BSARecConfig(BackboneConfig):
    n_layers: int = 2
    n_heads: int = 2
    alpha: float = 0.9  # weight of the frequency layer; 1 - alpha goes to self-attention
    c: int = 3  # low-pass cut-off: the first c // 2 + 1 frequency bins are "low"
    initializer_range: float = 0.02


class FrequencyLayer(PostNormSublayer):
    """LayerNorm(x + dropout(low + beta^2 * high)): BSARec's inductive-bias branch."""

    def __init__(self, hidden_size: int, c: int, dropout: float):
        super().__init__(hidden_size, dropout)
        if c < 1:
            raise ValueError(f"c must be >= 1, not {c}")
        self.bins = c // 2 + 1
        self.sqrt_beta = nn.Parameter(torch.randn(hidden_size))

    def mix(self, x: torch.Tensor, mask: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        L = x.shape[1]
        spectrum = torch.fft.rfft(x, dim=1, norm="ortho")
        low = torch.fft.irfft(spectrum[:, : self.bins], n=L, dim=1, norm="ortho")  # missing bins = 0
        return low + self.sqrt_beta ** 2 * (x - low)


class BSARecMixer(nn.Module):
    """alpha * FrequencyLayer(x) + (1 - alpha) * SelfAttention(x)."""

    def __init__(self, hidden_size: int, n_heads: int, c: int, alpha: float, dropout: float):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], not {alpha}")
        self.alpha = alpha
        self.frequency = FrequencyLayer(hidden_size, c, dropout)
        self.attention = PostNormSelfAttention(hidden_size, n_heads, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        return self.alpha * self.frequency(x, mask, allowed) + (1 - self.alpha) * self.attention(x, mask, allowed)


class BSARec(PrefixEncodedMixin, PostNormBackbone):
    config_class = BSARecConfig
    causal_attention = True

    def __init__(self, n_items: int, config: BSARecConfig | None = None):
        super().__init__(n_items, config or BSARecConfig())

    def make_mixer(self, index: int) -> nn.Module:
        c = self.config
        return BSARecMixer(c.hidden_size, c.n_heads, c.c, c.alpha, c.dropout)
