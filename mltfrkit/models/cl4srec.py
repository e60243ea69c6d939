"""CL4SRec (Xie et al., ICDE 2022): SASRec plus a contrastive loss between augmented views.

Encoder and next-item loss are SASRec's (``mltfrkit/models/sasrec.py``; BCE with one sampled
negative at every position by default, as the MLTFR authors trained it, or ``loss="ce"``). The
contrastive task: each training sequence (its most recent max_len items) gets two views made by
two *different* augmentations drawn at random from

- crop (eta = ``crop_ratio``, 0.6): a random contiguous run of floor(eta * n) items (at least 1);
- mask (gamma = ``mask_ratio``, 0.3): floor(gamma * n) random items become [MASK], an extra item
  row (id n_items + 1; never scored: ``item_embeddings()`` stops at n_items);
- reorder (beta = ``reorder_ratio``, 0.6): a random contiguous run of floor(beta * n) items is shuffled.

Each view is encoded (left-padded, same encoder and plug-in) and represented by its last hidden
state; InfoNCE with dot-product similarity / ``temperature`` pulls a sequence's two views
together against the other 2N - 2 views of the batch. Total loss = next-item loss + ``cl_weight``
* InfoNCE (weight 0.05 and temperature 1.0 as in the MLTFR authors' configuration).

All randomness (choice of augmentations, crop/reorder offsets, masked positions, shuffles) is
drawn from the ``generator`` handed to ``loss``, so a resumed run repeats it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mltfrkit.models.sasrec import SASRec, SASRecConfig

CROP, MASK, REORDER = 0, 1, 2


@dataclass
class CL4SRecConfig(SASRecConfig):
    cl_weight: float = 0.05  # lambda: weight of the InfoNCE term
    temperature: float = 1.0
    crop_ratio: float = 0.6  # eta
    mask_ratio: float = 0.3  # gamma
    reorder_ratio: float = 0.6  # beta


def _uniform(shape, generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device="cpu").to(device)


def _offsets(lengths: torch.Tensor, span: torch.Tensor, generator) -> torch.Tensor:
    """A uniform start in [0, length - span] per row."""
    room = (lengths - span + 1).clamp(min=1)
    return (_uniform(lengths.shape, generator, lengths.device) * room).long().minimum(room - 1)


def crop(seqs: torch.Tensor, ratio: float, generator=None) -> torch.Tensor:
    """Keep a random contiguous run of max(1, floor(ratio * n)) items of each left-padded row."""
    L = seqs.shape[1]
    lengths = (seqs > 0).sum(1)
    keep = (ratio * lengths).floor().long().clamp(min=1).minimum(lengths)
    start = _offsets(lengths, keep, generator)
    cols = torch.arange(L, device=seqs.device).unsqueeze(0)
    # output column c >= L - keep takes source column (L - n + start) + (c - (L - keep))
    source = cols + (keep - lengths + start).unsqueeze(1)
    out = seqs.gather(1, source.clamp(0, L - 1))
    return out.masked_fill(cols < (L - keep).unsqueeze(1), 0)


def mask_items(seqs: torch.Tensor, ratio: float, mask_id: int, generator=None) -> torch.Tensor:
    """Replace floor(ratio * n) random items of each row by ``mask_id``."""
    valid = seqs > 0
    count = (ratio * valid.sum(1)).floor().long()
    keys = _uniform(seqs.shape, generator, seqs.device).masked_fill(~valid, 2.0)  # padding sorts last
    rank = keys.argsort(1).argsort(1)
    return seqs.masked_fill((rank < count.unsqueeze(1)) & valid, mask_id)


def reorder(seqs: torch.Tensor, ratio: float, generator=None) -> torch.Tensor:
    """Shuffle a random contiguous run of floor(ratio * n) items of each row."""
    L = seqs.shape[1]
    lengths = (seqs > 0).sum(1)
    span = (ratio * lengths).floor().long()
    begin = (L - lengths + _offsets(lengths, span, generator)).unsqueeze(1)
    cols = torch.arange(L, device=seqs.device).unsqueeze(0).expand_as(seqs)
    inside = (cols >= begin) & (cols < begin + span.unsqueeze(1))
    # sort keys: a column's own index outside the run, a random point of [begin, begin + span) inside
    random_keys = begin + _uniform(seqs.shape, generator, seqs.device) * span.unsqueeze(1)
    keys = torch.where(inside, random_keys, cols.to(random_keys.dtype))
    return seqs.gather(1, keys.argsort(1))


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """InfoNCE over 2N views: row i's positive is its other view; the other 2N - 2 are negatives."""
    n = a.shape[0]
    z = torch.cat([a, b])
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, targets)


class CL4SRec(SASRec):
    config_class = CL4SRecConfig

    def __init__(self, n_items: int, config: CL4SRecConfig | None = None):
        config = config or CL4SRecConfig()
        super().__init__(n_items, config)
        # SASRec's table plus one row for the augmentation's [MASK] (id n_items + 1); own module, at construction
        self.item_emb = nn.Embedding(n_items + 2, config.hidden_size, padding_idx=0)
        self._init_weights(self.item_emb)
        self.mask_id = n_items + 1

    def augment(self, seqs: torch.Tensor, methods: torch.Tensor, generator=None) -> torch.Tensor:
        """One view per row, row i made by augmentation ``methods[i]`` (CROP, MASK or REORDER)."""
        c = self.config
        views = [crop(seqs, c.crop_ratio, generator), mask_items(seqs, c.mask_ratio, self.mask_id, generator),
                 reorder(seqs, c.reorder_ratio, generator)]
        out = views[CROP]
        for method in (MASK, REORDER):
            out = torch.where((methods == method).unsqueeze(1), views[method], out)
        return out

    def views(self, seqs: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views per row by two different augmentations chosen uniformly."""
        first = torch.randint(0, 3, (seqs.shape[0],), generator=generator).to(seqs.device)
        second = (first + torch.randint(1, 3, (seqs.shape[0],), generator=generator).to(seqs.device)) % 3
        return self.augment(seqs, first, generator), self.augment(seqs, second, generator)

    def contrastive_loss(self, seqs: torch.Tensor, generator=None) -> torch.Tensor:
        one, two = self.views(seqs, generator)
        z = self.user_representation(torch.cat([one, two]))
        return info_nce(z[: len(seqs)], z[len(seqs):], self.config.temperature)

    def loss(self, seqs: torch.Tensor, generator: torch.Generator | None = None,
             scored: torch.Tensor | None = None) -> torch.Tensor:
        # ``scored`` limits the next-item term; the contrastive term sees each window as a sequence (with
        # overlapping windows a user's windows can be each other's in-batch negatives).
        main = super().loss(seqs, generator, scored)
        if self.config.cl_weight == 0:
            return main
        return main + self.config.cl_weight * self.contrastive_loss(seqs[:, -self.config.max_len:], generator)
