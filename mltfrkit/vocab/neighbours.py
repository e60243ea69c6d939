"""Nearest tokens by cosine similarity: a quick look at whether a table carries meaning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .table import TokenTable
from .tokens import TokenClass


@dataclass
class Neighbour:
    index: int
    token: str
    display: str
    cosine: float


class WordIndex:
    """Display form -> token id, per class, exact and case-folded (built once per table)."""

    def __init__(self, table: TokenTable):
        self.exact: dict[tuple[int, str], int] = {}
        self.folded: dict[tuple[int, str], int] = {}
        for index, (text, token_class) in enumerate(zip(table.display, table.token_class.tolist(), strict=True)):
            self.exact.setdefault((token_class, text), index)
            self.folded.setdefault((token_class, text.lower()), index)
        self.name = table.name


def find_word(table: TokenTable, word: str, index: WordIndex | None = None) -> list[int]:
    """Token ids that spell ``word``: one whole-word token if the vocabulary has it, else a
    greedy longest-match split (a word start, then continuation pieces).

    Prefers word-start tokens over pieces and an exact case over a case-insensitive match.
    """
    index = index or WordIndex(table)
    lowered = word.lower()
    for token_class in (TokenClass.WORD, TokenClass.PIECE):
        for table_, key in ((index.exact, word), (index.folded, lowered)):
            if (int(token_class), key) in table_:
                return [table_[(int(token_class), key)]]

    # Not a single token: split it greedily, a word start first and pieces after it.
    ids, position, token_class = [], 0, int(TokenClass.WORD)
    while position < len(lowered):
        for end in range(len(lowered), position, -1):
            found = index.folded.get((token_class, lowered[position:end]))
            if found is not None:
                ids.append(found)
                position = end
                break
        else:
            raise KeyError(f"{word!r} cannot be spelled with the tokens of {table.name}")
        token_class = int(TokenClass.PIECE)
    return ids


def nearest(
    table: TokenTable,
    word: str,
    k: int = 10,
    exclude: Iterable[str] = ("special", "byte", "punct"),
    dedupe: bool = True,
    index: WordIndex | None = None,
) -> tuple[list[int], list[Neighbour]]:
    """The ``k`` tokens closest to ``word`` by cosine.

    Returns the query token ids (averaged when the word needs several tokens) and the
    neighbours. ``dedupe`` keeps one token per display form (``▁Guitar``/``Guitar``).
    """
    return nearest_many(table, [word], k, exclude, dedupe, index)[word]


def nearest_many(
    table: TokenTable,
    words: list[str],
    k: int = 10,
    exclude: Iterable[str] = ("special", "byte", "punct"),
    dedupe: bool = True,
    index: WordIndex | None = None,
    block_rows: int = 32768,
) -> dict[str, tuple[list[int], list[Neighbour]]]:
    """:func:`nearest` for several words in one pass over the matrix (row blocks, float32)."""
    index = index or WordIndex(table)
    query_ids = {word: find_word(table, word, index) for word in words}
    queries = np.stack([np.asarray(table.matrix[ids], dtype=np.float32).mean(axis=0) for ids in query_ids.values()])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True) + 1e-12
    scores = np.empty((table.V, len(words)), dtype=np.float32)
    for start in range(0, table.V, block_rows):
        block = np.asarray(table.matrix[start : start + block_rows], dtype=np.float32)
        norms = np.linalg.norm(block, axis=1, keepdims=True) + 1e-12
        scores[start : start + len(block)] = block @ queries.T / norms
    scores[~table.keep_mask(exclude)] = -np.inf

    results = {}
    for column, (word, ids) in enumerate(query_ids.items()):
        column_scores = scores[:, column].copy()
        column_scores[ids] = -np.inf
        seen = {table.display[i].lower() for i in ids} | {word.lower()}
        found = []
        for row in np.argsort(-column_scores):
            if len(found) == k or not np.isfinite(column_scores[row]):
                break
            form = table.display[row].lower()
            if dedupe and form in seen:
                continue
            seen.add(form)
            found.append(Neighbour(int(row), table.tokens[row], table.display[row], float(column_scores[row])))
        results[word] = (ids, found)
    return results
