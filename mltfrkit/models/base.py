"""The interface every backbone shares, and the one hook a plug-in (MLTFR) uses.

A backbone turns a left-padded item sequence into hidden states, scores all items from the
final user representation, and computes its own training loss. The hook: before the blocks
(``placement="input"``, paper eq. 18) or after the first block (the authors' placement), the
attached plug-in receives the representation E and the padding mask and returns a tensor of
E's shape that is added to it; or (``"from_input_after_first_block"``, the MLTFR authors' code) it
receives E and its output is added after the first block. Backbones never import the plug-in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F

# "input": computed from E, added to E (eq. 18). "from_input_after_first_block": computed from E, added to the
# output of block 0 (the MLTFR authors' code). "after_first_block": computed from block 0's output, added there.
PLACEMENTS = ("input", "from_input_after_first_block", "after_first_block")


class SequencePlugin(Protocol):
    def __call__(self, E: torch.Tensor, mask: torch.Tensor, seqs: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, d), (B, L) bool, (B, L) item ids -> (B, L, d) added to E."""


LOSSES = ("bce", "bpr", "ce")


@dataclass
class BackboneConfig:
    """Fields every backbone has; subclasses add their own with their paper's defaults."""

    hidden_size: int = 64
    max_len: int = 50
    dropout: float = 0.2
    # "bce": one sampled negative per position (MLTFR eq. 16); "bpr": the same negative, -log sigmoid(pos - neg)
    # (RecBole's SASRec loss, for side-by-side runs); "ce": softmax over all items
    loss: str = "bce"

    def __post_init__(self):
        check_ranges(self)

    def to_dict(self) -> dict:
        return asdict(self)


# Valid ranges of the numeric options of every backbone config (a field a config lacks is skipped):
# (low, high, low inclusive, high inclusive). Values out of range used to fail deep inside torch
# (max_len=0: IndexError, hidden_size=0: ZeroDivisionError).
RANGES = {
    "hidden_size": (1, None, True, True), "max_len": (1, None, True, True), "n_layers": (1, None, True, True),
    "n_heads": (1, None, True, True), "c": (1, None, True, True),
    "dropout": (0.0, 1.0, True, False), "mask_ratio": (0.0, 1.0, False, True), "crop_ratio": (0.0, 1.0, False, True),
    "reorder_ratio": (0.0, 1.0, True, True), "alpha": (0.0, 1.0, True, True),
    "initializer_range": (0.0, None, False, True), "temperature": (0.0, None, False, True),
    "cl_weight": (0.0, None, True, True),
}


def check_ranges(config) -> None:
    """Refuse out-of-range or non-finite numeric options, naming the option, its range and its default."""
    import math
    from dataclasses import fields

    defaults = {f.name: f.default for f in fields(config)}
    for name, (low, high, low_in, high_in) in RANGES.items():
        value = getattr(config, name, None)
        if name not in defaults or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # absent here, or a wrong type (make_config names that)
        ok = math.isfinite(value) and (low is None or (value >= low if low_in else value > low)) and \
            (high is None or (value <= high if high_in else value < high))
        if not ok:
            span = (f"{'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}" if high is not None
                    else f">= {low}" if low_in else f"> {low}")
            raise ValueError(f"{type(config).__name__}: {name}={value} is out of range (must be {span}; default "
                             f"{defaults[name]}): set it with --set {name}=VALUE")
    heads = getattr(config, "n_heads", None)
    if isinstance(heads, int) and heads >= 1 and config.hidden_size % heads:
        raise ValueError(f"{type(config).__name__}: hidden_size={config.hidden_size} is not divisible by "
                         f"n_heads={heads}; change one of them (--set hidden_size=... / n_heads=...)")


class SequentialRecommender(nn.Module):
    """Base class: subclasses implement ``encode`` and may override the loss or prediction slot."""

    config_class = BackboneConfig
    bidirectional = False

    def __init__(self, n_items: int, config: BackboneConfig):
        super().__init__()
        if config.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {config.loss!r}")
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
        if self.plugin is None:
            return hidden
        if self.plugin_placement == "from_input_after_first_block":
            # Computed from the input E, held until block 0 has run, then added to its output.
            if stage == "input":
                self._plugin_pending = self.plugin(hidden, mask, seqs)
                return hidden
            pending, self._plugin_pending = self._plugin_pending, None
            return hidden + pending
        if stage != self.plugin_placement:
            return hidden
        return hidden + self.plugin(hidden, mask, seqs)

    # Whether this backbone's scores for a user depend only on the user's real items, not on how many leading
    # padding columns the input has (positions stay those of the full window: ``window_positions``). True
    # where padding keys are masked out of every mixing step and padding rows are position-wise (SASRec,
    # BERT4Rec, LinRec with mask_padding); False where a filter mixes the whole window (FMLP-Rec, BSARec).
    padding_free = False

    def padding_free_scores(self) -> bool:
        """May the evaluator score a chunk of users with its leading all-padding columns dropped? Only if the
        backbone and its plug-in (``plugin.padding_free_scores()``, default no) both say so: the same scores up
        to float rounding, with less work on short histories (``tests/test_metrics.py`` checks each padding-free
        backbone alone, with LLM-TE/RE and with MLTFR at each placement against the full window)."""
        if not self.padding_free:
            return False
        return self.plugin is None or bool(getattr(self.plugin, "padding_free_scores", lambda: False)())

    # -- what subclasses provide ---------------------------------------------------------
    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item ids -> (B, L, d) hidden states."""
        raise NotImplementedError

    def item_embeddings(self) -> torch.Tensor:
        """(n_items + 1, d) output embeddings; row 0 is padding."""
        return self.item_emb.weight[: self.n_items + 1]

    def eval_input(self, history: torch.Tensor) -> torch.Tensor:
        """The sequence fed at evaluation from a (B, w) left-padded history (w <= max_len: the window's right end)."""
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
    def loss(self, seqs: torch.Tensor, generator: torch.Generator | None = None,
             scored: torch.Tensor | None = None) -> torch.Tensor:
        """Next-item loss at every position of (B, max_len + 1) left-padded training sequences, or only
        where the (B, max_len) bool ``scored`` is True (the rest are context: overlapping windows)."""
        inputs, targets = seqs[:, :-1], seqs[:, 1:]
        if scored is not None:
            targets = targets.masked_fill(~scored, 0)
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
        pos = self.pair_scores(hidden[valid], targets[valid])
        neg = self.pair_scores(hidden[valid], negatives[valid])
        if self.config.loss == "bpr":
            return F.softplus(neg - pos).mean()  # -log sigmoid(pos - neg)
        return F.softplus(-pos).mean() + F.softplus(neg).mean()  # -log sigmoid(pos) - log(1 - sigmoid(neg))

    def pair_scores(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of given items: (N, d) hidden states and (N,) item ids -> (N,). Must agree with
        ``output_logits`` (a backbone with an output head or bias overrides both)."""
        return (hidden * self.item_embeddings()[items]).sum(-1)


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


def window_positions(length: int, max_len: int, device: torch.device | str) -> torch.Tensor:
    """Position ids of a (B, ``length``) input. Sequences are left-padded, so an input narrower than ``max_len``
    is the right end of a ``max_len`` window (positions max_len - length .. max_len - 1): the evaluator drops
    a chunk's leading all-padding columns for backbones whose scores do not depend on them
    (:meth:`SequentialRecommender.padding_free_scores`). At ``max_len``, the positions 0 .. max_len - 1."""
    if length > max_len:
        raise ValueError(f"a sequence of {length} positions does not fit max_len={max_len}: "
                         f"keep its most recent {max_len} items (mltfrkit.train.metrics.pad_left does)")
    return torch.arange(max_len - length, max_len, device=device)


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
    """fc2(act(fc1 x)) with dropout after fc2, and after the activation too unless ``inner_dropout=False``
    (SASRec drops out both; BERT, FMLP-Rec and BSARec only the output)."""

    def __init__(self, hidden_size: int, dropout: float, inner: int | None = None, activation: str = "relu",
                 inner_dropout: bool = True):
        super().__init__()
        inner = inner or hidden_size
        self.fc1, self.fc2 = nn.Linear(hidden_size, inner), nn.Linear(inner, hidden_size)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.inner_dropout = inner_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = self.act(self.fc1(x))
        return self.dropout(self.fc2(self.dropout(inner) if self.inner_dropout else inner))


# -- shared by the BERT-style backbones (BERT4Rec, LinRec, FMLP-Rec, BSARec) ----------------

def prefix_windows(seqs: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(N, L) windows, one per True entry (row, t) of the (B, L) boolean ``positions``: the items
    ``seqs[row, : t + 1]`` right-aligned and left-padded to L, i.e. that prefix as its own sequence."""
    L = seqs.shape[1]
    rows, ends = positions.nonzero(as_tuple=True)
    cols = ends.unsqueeze(1) + torch.arange(1 - L, 1, device=seqs.device)  # (N, L): end - (L-1) .. end
    windows = seqs[rows.unsqueeze(1), cols.clamp(min=0)]
    return windows.masked_fill(cols < 0, 0)


class PostNormSublayer(nn.Module):
    """BERT-style residual sublayer: LayerNorm(x + dropout(mix(x))). Subclasses define ``mix``:
    softmax attention, L2-normalised linear attention (LinRec), a frequency filter (FMLP-Rec, BSARec)."""

    def __init__(self, hidden_size: int, dropout: float, eps: float = 1e-12):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)

    def mix(self, x: torch.Tensor, mask: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        return self.norm(x + self.dropout(self.mix(x, mask, allowed)))


class PostNormSelfAttention(PostNormSublayer):
    """Multi-head softmax self-attention (dropout on the attention weights too) as a post-LN sublayer."""

    def __init__(self, hidden_size: int, n_heads: int, dropout: float):
        super().__init__(hidden_size, dropout)
        self.attention = MultiHeadSelfAttention(hidden_size, n_heads, dropout)

    def mix(self, x: torch.Tensor, mask: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        return self.attention(x, x, allowed)


class PostNormFeedForward(nn.Module):
    """LayerNorm(x + dropout(W2 GELU(W1 x + b1) + b2)), inner size 4d: BERT's feed-forward sublayer."""

    def __init__(self, hidden_size: int, dropout: float, inner: int | None = None):
        super().__init__()
        self.ffn = PointWiseFeedForward(hidden_size, dropout, inner or 4 * hidden_size, "gelu", inner_dropout=False)
        self.norm = nn.LayerNorm(hidden_size, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.ffn(x))


class PostNormBackbone(SequentialRecommender):
    """Skeleton of the BERT-style backbones: E = dropout(LayerNorm(item + learned position)), then
    ``n_layers`` blocks of [mixer sublayer, feed-forward sublayer], both post-LN; weights drawn from
    N(0, initializer_range), biases 0, LayerNorm 1/0 (BERT's initialisation). Subclasses provide
    ``make_mixer`` and may reserve extra item rows (BERT4Rec's [MASK]).

    The config must have ``n_layers`` and ``initializer_range``. Weight initialisation touches only
    the modules built here, once, at construction: a plug-in attached later is never re-initialised.
    """

    extra_item_rows = 0
    causal_attention: bool | None = True  # the attention mask handed to mixers; None: mixers use none

    def __init__(self, n_items: int, config: BackboneConfig):
        super().__init__(n_items, config)
        d = config.hidden_size
        self.item_emb = nn.Embedding(n_items + 1 + self.extra_item_rows, d, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.emb_norm = nn.LayerNorm(d, eps=1e-12)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.mixers = nn.ModuleList(self.make_mixer(index) for index in range(config.n_layers))
        self.ffns = nn.ModuleList(PostNormFeedForward(d, config.dropout) for _ in range(config.n_layers))
        self.apply(self.init_weights)

    def make_mixer(self, index: int) -> nn.Module:
        """The sequence-mixing sublayer of block ``index``: called as ``mixer(x, mask, allowed)``."""
        raise NotImplementedError

    def init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def embed(self, seqs: torch.Tensor) -> torch.Tensor:
        """E: the input representation the plug-in hook sees."""
        positions = window_positions(seqs.shape[1], self.config.max_len, seqs.device)
        return self.emb_dropout(self.emb_norm(self.item_emb(seqs) + self.pos_emb(positions)))

    def encode(self, seqs: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``last_only``: only the last position's hidden state, (B, 1, d), which is all a prefix-encoded
        window is used for (:class:`PrefixEncodedMixin`). The last block's mixer still reads the whole
        window; its feed-forward sublayer, position-wise, then runs on the last position alone (the same
        value as slicing afterwards; the dropout draws fewer random numbers). Unless a plug-in needs the
        whole output of a first block that is also the last."""
        mask = seqs > 0
        allowed = None if self.causal_attention is None else causal_padding_mask(mask, self.causal_attention)
        x = self.apply_plugin(self.embed(seqs), mask, "input", seqs)
        last = len(self.mixers) - 1
        slice_early = last_only and (last > 0 or self.plugin is None or self.plugin_placement == "input")
        for index, (mixer, ffn) in enumerate(zip(self.mixers, self.ffns)):
            x = mixer(x, mask, allowed)
            if slice_early and index == last:
                x = x[:, -1:]
            x = ffn(x)
            if index == 0:
                x = self.apply_plugin(x, mask, "after_first_block", seqs)
        return x[:, -1:] if last_only else x


class PrefixEncodedMixin:
    """For encoders whose mixing is not causal although they predict the next item (the FFT filters
    of FMLP-Rec and BSARec mix every position of the window with every other). Running them once
    over a training sequence would let position t see the item it must predict. As in those
    papers' code (every prefix of a training sequence is its own sample), the hidden state at
    position t is computed from the prefix ending at t, right-aligned in its own window, so the
    next-item loss at every position is leak-free and ``encode`` is causal; the user
    representation is the plain encoder's last position. Cost: one window per non-padding
    position in training (none extra at evaluation), or only per scored target with overlapping
    windows (``loss(scored=...)``). Put before the backbone class in the bases.
    """

    def encode(self, seqs: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``positions`` (B, L) bool: encode only these (zeros elsewhere); default every real item."""
        positions = seqs > 0 if positions is None else positions & (seqs > 0)
        if not positions.any():  # nothing but padding: no windows to encode
            return super().encode(seqs) * 0.0
        windows = prefix_windows(seqs, positions)
        skips = hasattr(self.plugin, "skip_leading_padding")  # MLTFR: computed at real positions only
        if skips:
            self.plugin.skip_leading_padding = True
        try:
            last = super().encode(windows, last_only=True)[:, -1]
        finally:
            if skips:
                self.plugin.skip_leading_padding = False
        hidden = last.new_zeros(*seqs.shape, last.shape[-1])
        hidden[positions] = last
        return hidden

    def loss(self, seqs: torch.Tensor, generator: torch.Generator | None = None,
             scored: torch.Tensor | None = None) -> torch.Tensor:
        if scored is None:
            return super().loss(seqs, generator)
        targets = seqs[:, 1:].masked_fill(~scored, 0)  # a window per scored target, none for the context
        return self.next_item_loss(self.encode(seqs[:, :-1], targets > 0), targets, seqs, generator)

    def user_representation(self, seqs: torch.Tensor) -> torch.Tensor:
        return super().encode(seqs, last_only=True)[:, -1]
