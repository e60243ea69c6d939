"""The interface every backbone shares, and the one hook a plug-in (MLTFR) uses.

A backbone turns a left-padded item sequence into hidden states, scores all items from the
final user representation, and computes its own training loss. The hook: before the blocks
(``placement="input"``, paper eq. 18) or after the first block (the authors' placement), the
attached plug-in receives the representation E and the padding mask and returns a tensor of
E's shape that is added to it. Backbones never import the plug-in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F

PLACEMENTS = ("input", "after_first_block")


class SequencePlugin(Protocol):
    def __call__(self, E: torch.Tensor, mask: torch.Tensor, seqs: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, d), (B, L) bool, (B, L) item ids -> (B, L, d) added to E."""


@dataclass
class BackboneConfig:
    """Fields every backbone has; subclasses add their own with their paper's defaults."""

    hidden_size: int = 64
    max_len: int = 50
    dropout: float = 0.2
    loss: str = "bce"  # "bce": one sampled negative per position (MLTFR eq. 16); "ce": softmax over all items

    def to_dict(self) -> dict:
        return asdict(self)


class SequentialRecommender(nn.Module):
    """Base class: subclasses implement ``encode`` and may override the loss or prediction slot."""

    config_class = BackboneConfig
    bidirectional = False

    def __init__(self, n_items: int, config: BackboneConfig):
        super().__init__()
        if config.loss not in ("bce", "ce"):
            raise ValueError(f"loss must be 'bce' or 'ce', not {config.loss!r}")
        self.n_items = n_items
        self.config = config
        self.plugin: nn.Module | None = None
        self.plugin_placement = "input"

    # -- the plug-in hook ----------------------------------------------------------------
    def attach_plugin(self, plugin: nn.Module | None, placement: str = "input") -> None:
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, not {placement!r}")
        self.plugin = plugin  # registered as a submodule: its parameters train with the backbone
        self.plugin_placement = placement

    def apply_plugin(self, hidden: torch.Tensor, mask: torch.Tensor, stage: str,
                     seqs: torch.Tensor | None = None) -> torch.Tensor:
        """Called by ``encode`` at each stage; adds the plug-in's output where it is placed.
        ``seqs`` (the item ids) lets per-item plug-ins such as LLM-TE look up their rows."""
        if self.plugin is None or stage != self.plugin_placement:
            return hidden
        return hidden + self.plugin(hidden, mask, seqs)

    # -- what subclasses provide ---------------------------------------------------------
    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item ids -> (B, L, d) hidden states."""
        raise NotImplementedError

    def item_embeddings(self) -> torch.Tensor:
        """(n_items + 1, d) output embeddings; row 0 is padding."""
        return self.item_emb.weight[: self.n_items + 1]

    def eval_input(self, history: torch.Tensor) -> torch.Tensor:
        """The sequence fed at evaluation from a (B, max_len) left-padded history."""
        return history

    def user_representation(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, d): the hidden state at the last position (next-item slot)."""
        return self.encode(seqs)[:, -1]

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.item_embeddings().T

    @torch.no_grad()
    def score_all(self, history: torch.Tensor) -> torch.Tensor:
        """(B, n_items + 1) scores for every item; padding gets -inf so it is never ranked."""
        scores = self.output_logits(self.user_representation(self.eval_input(history)))
        scores[:, 0] = float("-inf")
        return scores

    # -- training ------------------------------------------------------------------------
    def loss(self, seqs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Next-item loss at every position of (B, max_len + 1) left-padded training sequences."""
        inputs, targets = seqs[:, :-1], seqs[:, 1:]
        hidden = self.encode(inputs)
        return self.next_item_loss(hidden, targets, seqs, generator)

    def next_item_loss(self, hidden: torch.Tensor, targets: torch.Tensor, seqs: torch.Tensor,
                       generator: torch.Generator | None) -> torch.Tensor:
        valid = targets > 0
        if self.config.loss == "ce":
            logits = self.output_logits(hidden[valid])
            logits[:, 0] = float("-inf")
            return F.cross_entropy(logits, targets[valid])
        negatives = sample_negatives(targets, seqs, self.n_items, generator)
        table = self.item_embeddings()
        pos = (hidden * table[targets]).sum(-1)[valid]
        neg = (hidden * table[negatives]).sum(-1)[valid]
        return F.softplus(-pos).mean() + F.softplus(neg).mean()  # -log sigmoid(pos) - log(1 - sigmoid(neg))


def sample_negatives(targets: torch.Tensor, seqs: torch.Tensor, n_items: int, generator: torch.Generator | None,
                     attempts: int = 5) -> torch.Tensor:
    """Uniform items from 1..n_items, resampled where they fall in the user's own sequence."""
    device = targets.device
    negatives = torch.randint(1, n_items + 1, targets.shape, generator=generator, device="cpu").to(device)
    for _ in range(attempts):
        clash = (negatives.unsqueeze(-1) == seqs.unsqueeze(1)).any(-1)
        if not clash.any():
            break
        fresh = torch.randint(1, n_items + 1, targets.shape, generator=generator, device="cpu").to(device)
        negatives = torch.where(clash, fresh, negatives)
    return negatives


def causal_padding_mask(mask: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, 1, L, L) boolean attention mask: True = may attend. Padding keys are excluded, and
    every position may attend to itself so fully padded rows stay finite."""
    L = mask.shape[1]
    allowed = mask[:, None, None, :].expand(-1, 1, L, L)
    if causal:
        allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=mask.device).tril()
    return allowed | torch.eye(L, dtype=torch.bool, device=mask.device)


class MultiHeadSelfAttention(nn.Module):
    """Plain multi-head attention on (B, L, d) with a boolean mask; uses PyTorch's fused SDPA kernel."""

    def __init__(self, hidden_size: int, n_heads: int, dropout: float):
        super().__init__()
        if hidden_size % n_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.dropout = dropout

    def forward(self, query_input: torch.Tensor, key_input: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, L, d = query_input.shape
        w_q, w_kv = self.qkv.weight.split([d, 2 * d])
        b_q, b_kv = self.qkv.bias.split([d, 2 * d])
        q = F.linear(query_input, w_q, b_q)  # SASRec: queries from the normalised input, keys/values raw
        k, v = F.linear(key_input, w_kv, b_kv).split(d, dim=-1)
        heads = lambda t: t.view(B, L, self.n_heads, d // self.n_heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=allowed,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).reshape(B, L, d))


class PointWiseFeedForward(nn.Module):
    def __init__(self, hidden_size: int, dropout: float, inner: int | None = None, activation: str = "relu"):
        super().__init__()
        inner = inner or hidden_size
        self.fc1, self.fc2 = nn.Linear(hidden_size, inner), nn.Linear(inner, hidden_size)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(self.act(self.fc1(x)))))
