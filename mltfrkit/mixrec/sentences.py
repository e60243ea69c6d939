"""Item "sentences" (MixRec section 2.2.1): each item's attribute dictionary flattened to
``k_1 v_1 ... k_g v_g`` as in RecFormer, tokenised by the LLM's own tokenizer and truncated to
``max_tokens`` tokens (the paper: 30, section 3.1.4).

The builder takes the text as data: a mapping from our item index (1..n_items, as in a prepared
split) to either a string (a title) or a dict of attributes. The readers that produce such
mappings (MovieLens titles, Amazon metadata, a CSV) live in :mod:`mltfrkit.data`; nothing here
reads files. Key-value flattening writes ``key: value`` pairs separated by spaces, so that a
byte-level BPE tokenizer sees ordinary words.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping

import torch

ALIGN_PROMPT = "Give the ID of the item described by:"  # section 2.2.2


def flatten_attributes(attributes: Mapping[str, object] | str) -> str:
    """``{"title": "Toy Story", "genre": "Animation"}`` -> ``"title: Toy Story genre: Animation"``.

    A plain string is taken as the item's title. Lists (Amazon categories) are joined with commas;
    empty values are dropped, so an item without a brand has no ``brand:`` key."""
    if isinstance(attributes, str):
        attributes = {"title": attributes}
    parts = []
    for key, value in attributes.items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value if str(v).strip())
        text = " ".join(str(value).split()) if value is not None else ""
        if text:
            parts.append(f"{key}: {text}")
    return " ".join(parts)


@dataclass
class ItemSentences:
    """Token ids of every item's sentence: ``tokens`` (n_items + 1, max_tokens), right-padded with
    0, ``lengths`` (n_items + 1,); row 0 (padding) is empty. ``texts`` keeps the flattened strings."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    texts: list[str]
    max_tokens: int

    @property
    def n_items(self) -> int:
        return self.tokens.shape[0] - 1


def build_item_sentences(texts: Mapping[int, Mapping[str, object] | str], n_items: int, tokenizer,
                         max_tokens: int = 30, fallback: Mapping[int, str] | None = None) -> ItemSentences:
    """Tokenise every item 1..n_items. ``fallback`` (e.g. the original item ids) names items without
    text (``"item: <id>"``), with a warning saying how many; without it, a missing item is an error."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, not {max_tokens} (the paper uses 30)")
    missing = [i for i in range(1, n_items + 1) if not flatten_attributes(texts.get(i, "") or "")]
    if missing and fallback is None:
        raise ValueError(f"{len(missing)} of {n_items} items have no text (first: {missing[:5]}); pass texts for "
                         f"every item 1..{n_items}, or fallback= (e.g. the original ids) to name them")
    if missing:
        warnings.warn(f"{len(missing)} of {n_items} items have no text; they are described by their id "
                      f"('item: <id>')", stacklevel=2)
    flat = [""]
    for item in range(1, n_items + 1):
        text = flatten_attributes(texts.get(item, "") or "")
        flat.append(text or f"item: {fallback[item]}")
    encoded = tokenizer(flat[1:], add_special_tokens=False)["input_ids"]
    tokens = torch.zeros(n_items + 1, max_tokens, dtype=torch.long)
    lengths = torch.zeros(n_items + 1, dtype=torch.long)
    for item, ids in enumerate(encoded, start=1):
        ids = ids[:max_tokens]
        if not ids:
            raise ValueError(f"item {item}'s sentence {flat[item]!r} tokenises to nothing")
        tokens[item, :len(ids)] = torch.tensor(ids)
        lengths[item] = len(ids)
    return ItemSentences(tokens, lengths, flat, max_tokens)


def prompt_tokens(tokenizer, prompt: str = ALIGN_PROMPT) -> torch.Tensor:
    return torch.tensor(tokenizer(prompt, add_special_tokens=False)["input_ids"], dtype=torch.long)
