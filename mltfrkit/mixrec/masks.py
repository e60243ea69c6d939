"""Token layouts of MixRec's two inputs and its two attention masks (sections 2.2.2, 2.2.3, 2.3.1).

Inputs:

* next item (2.2.3, Fig. 2b): ``X_u = {T_1, [SEQ], ..., T_n, [SEQ]}``; the hidden state at item j's
  [SEQ] predicts item j + 1. Each item sentence together with its [SEQ] is one *segment*.
* semantic alignment (2.2.2, Fig. 2a): ``{Prompt, T_i, [ALIGN]}``; the prompt is one segment, the
  item's sentence with [ALIGN] another.

Collaborative slots (2.3.2): the projected CF vectors are concatenated to every layer's input as
extra key/value positions placed before the tokens. The next-item input has ``1 + n`` of them (the
user, then one per item slot), the alignment input one (its item). A slot *belongs* to segments:
the user slot to every item segment, item j's slot to item j's segment only. (Read literally,
SameItem(i, j) is True whenever either token is a collaborative representation; applied to the
item slots of a whole sequence that would let item j's [SEQ] see item j + 1's CF vector, its own
target, so each item slot is tied to its item.)

Masks, as boolean (B, 1, T, C + T) tensors with True = may attend (the CF slots' columns first):

* ``MASK_causal`` (2.3.1): token i attends to tokens j <= i; never to a CF slot (the paper's
  "j != 1": the collaborative column is excluded).
* ``MASK_context`` (2.3.1): token i attends to every token of its own segment (before *and* after
  it: intra-item relations) and to the CF slots its segment owns; never to another item's tokens.

Padding keys are never attended; a padding query attends to itself only, so its row stays finite.

Positions of the CF slots (:func:`cf_positions`): a slot takes the position of the first token of
the item it belongs to, the user's slot position 0. This matters for rotary LLMs only (SmolLM2,
Llama): an item's tokens then see their collaborative vector at the short relative distance of a
token of their own item, not at the distance of the sequence's start. The paper's OPT-125M adds
learned absolute positions to token embeddings only, so its CF slots carry no position at all,
which is what our OPT path does too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ALL_SEGMENTS = -2  # a CF slot owned by every segment (the user's)
NO_SEGMENT = -1  # padding


@dataclass
class TokenBatch:
    """A batch laid out for the LLM. ``ids`` (B, T) token ids (ids >= the LLM's vocabulary size are
    MixRec's own special tokens), ``valid`` (B, T), ``segment`` (B, T) segment per token (-1 padding),
    ``positions`` (B, T), ``readout`` (B, R) indices of the [SEQ] / [ALIGN] tokens (-1 where the slot is
    padding), ``cf_owner`` (B, C) the segment each CF slot belongs to (-2 = all, -1 = none/padding)."""

    ids: torch.Tensor
    valid: torch.Tensor
    segment: torch.Tensor
    positions: torch.Tensor
    readout: torch.Tensor
    cf_owner: torch.Tensor

    @property
    def n_cf(self) -> int:
        return self.cf_owner.shape[1]

    def to(self, device) -> "TokenBatch":
        return TokenBatch(*(getattr(self, f).to(device) for f in
                            ("ids", "valid", "segment", "positions", "readout", "cf_owner")))


def _compact(ids: torch.Tensor, valid: torch.Tensor, segment: torch.Tensor, marker: torch.Tensor):
    """Move each row's valid tokens to the front (stable), trim to the longest row."""
    order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices
    ids, valid, segment, marker = (t.gather(1, order) for t in (ids, valid, segment, marker))
    length = int(valid.sum(1).max()) if valid.numel() else 0
    ids, valid, segment, marker = ids[:, :length], valid[:, :length], segment[:, :length], marker[:, :length]
    positions = (valid.cumsum(1) - 1).clamp(min=0)
    return ids, valid, segment.masked_fill(~valid, NO_SEGMENT), marker & valid, positions


def sequence_batch(item_seqs: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, seq_token: int,
                   with_cf: bool) -> TokenBatch:
    """The next-item input X_u for (B, n) left-padded item ids (0 = padding).

    ``tokens`` / ``lengths`` are :class:`~mltfrkit.mixrec.sentences.ItemSentences`'. The readout of slot s
    is item s's [SEQ] token. CF slots (with ``with_cf``): the user, then item slots 0..n-1."""
    B, n = item_seqs.shape
    m = tokens.shape[1]
    item_tokens = tokens[item_seqs]  # (B, n, m)
    item_len = lengths[item_seqs]  # 0 for padding items
    slot = torch.arange(m + 1, device=item_seqs.device)
    ids = torch.cat([item_tokens, torch.full((B, n, 1), seq_token, dtype=torch.long, device=item_seqs.device)], -1)
    # the [SEQ] token sits right after each sentence: put it at column item_len (shift it in from the end)
    at_seq = slot.view(1, 1, -1) == item_len.unsqueeze(-1)
    ids = torch.where(at_seq, torch.full_like(ids, seq_token), ids)
    real = item_seqs.unsqueeze(-1) > 0
    valid = (slot.view(1, 1, -1) <= item_len.unsqueeze(-1)) & real
    segment = torch.arange(n, device=item_seqs.device).view(1, n, 1).expand(B, n, m + 1)
    marker = at_seq & real
    flat = [t.reshape(B, n * (m + 1)) for t in (ids, valid, segment, marker)]
    ids, valid, segment, marker, positions = _compact(*flat)
    # readout: the position of item slot s's [SEQ]
    readout = torch.full((B, n), -1, dtype=torch.long, device=item_seqs.device)
    rows, cols = marker.nonzero(as_tuple=True)
    readout[rows, segment[rows, cols]] = cols
    if with_cf:
        owners = torch.arange(n, device=item_seqs.device).expand(B, n).masked_fill(item_seqs == 0, NO_SEGMENT)
        cf_owner = torch.cat([torch.full((B, 1), ALL_SEGMENTS, dtype=torch.long, device=item_seqs.device), owners], 1)
    else:
        cf_owner = torch.zeros(B, 0, dtype=torch.long, device=item_seqs.device)
    return TokenBatch(ids, valid, segment, positions, readout, cf_owner)


def align_batch(items: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, prompt: torch.Tensor,
                align_token: int, with_cf: bool) -> TokenBatch:
    """The alignment input {Prompt, T_i, [ALIGN]} for (N,) item ids; readout (N, 1) = the [ALIGN] token.
    Segment 0 is the prompt, segment 1 the item (its sentence and [ALIGN]); the CF slot is the item's."""
    N = items.shape[0]
    P, m = prompt.shape[0], tokens.shape[1]
    device = items.device
    item_len = lengths[items]
    body = torch.cat([tokens[items], torch.zeros(N, 1, dtype=torch.long, device=device)], 1)
    slot = torch.arange(m + 1, device=device)
    at_align = slot.view(1, -1) == item_len.unsqueeze(1)
    body = torch.where(at_align, torch.full_like(body, align_token), body)
    ids = torch.cat([prompt.to(device).expand(N, P), body], 1)
    valid = torch.cat([torch.ones(N, P, dtype=torch.bool, device=device), slot.view(1, -1) <= item_len.unsqueeze(1)], 1)
    segment = torch.cat([torch.zeros(N, P, dtype=torch.long, device=device),
                         torch.ones(N, m + 1, dtype=torch.long, device=device)], 1)
    marker = torch.cat([torch.zeros(N, P, dtype=torch.bool, device=device), at_align], 1)
    ids, valid, segment, marker, positions = _compact(ids, valid, segment, marker)
    readout = marker.long().argmax(1, keepdim=True)
    cf_owner = torch.ones(N, 1 if with_cf else 0, dtype=torch.long, device=device)
    return TokenBatch(ids, valid, segment, positions, readout, cf_owner)


def cf_positions(batch: TokenBatch) -> torch.Tensor:
    """(B, C) RoPE positions of the CF slots: the first token of the owning segment; 0 for the user's slot."""
    owner = batch.cf_owner
    if owner.shape[1] == 0:
        return owner.clone()
    match = (batch.segment.unsqueeze(1) == owner.unsqueeze(2)) & (owner >= 0).unsqueeze(2)  # (B, C, T)
    first = match.to(torch.int8).argmax(-1)
    return torch.where(match.any(-1), batch.positions.gather(1, first), torch.zeros_like(first))


def _with_self(mask: torch.Tensor, valid: torch.Tensor, n_cf: int) -> torch.Tensor:
    """Padding queries attend to themselves only (finite rows; their outputs are never read)."""
    T = valid.shape[1]
    eye = torch.eye(T, dtype=torch.bool, device=valid.device).unsqueeze(0)
    pad_rows = (~valid).unsqueeze(-1)
    tokens = torch.where(pad_rows, eye, mask[..., n_cf:])
    cf = mask[..., :n_cf] & ~pad_rows
    return torch.cat([cf, tokens], -1).unsqueeze(1)


def causal_mask(batch: TokenBatch) -> torch.Tensor:
    """MASK_causal: key j <= query i among real tokens; no CF slot (section 2.3.1)."""
    B, T = batch.valid.shape
    order = torch.ones(T, T, dtype=torch.bool, device=batch.valid.device).tril()
    tokens = order.unsqueeze(0) & batch.valid.unsqueeze(1)
    cf = torch.zeros(B, T, batch.n_cf, dtype=torch.bool, device=batch.valid.device)
    return _with_self(torch.cat([cf, tokens], -1), batch.valid, batch.n_cf)


def context_mask(batch: TokenBatch) -> torch.Tensor:
    """MASK_context: SameItem(i, j): the query's own segment, before and after it, plus its CF slots."""
    seg = batch.segment
    tokens = (seg.unsqueeze(2) == seg.unsqueeze(1)) & batch.valid.unsqueeze(1) & batch.valid.unsqueeze(2)
    owner = batch.cf_owner.unsqueeze(1)  # (B, 1, C)
    cf = ((owner == seg.unsqueeze(2)) | (owner == ALL_SEGMENTS)) & batch.valid.unsqueeze(2)
    return _with_self(torch.cat([cf, tokens], -1), batch.valid, batch.n_cf)
