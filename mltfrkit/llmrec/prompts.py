"""Every prompt of the text-prompted LLM recommender, in one place.

The paper's black-box baseline (Table 4, RQ4) gives an LLM the user's recent item titles and a
candidate list and reads back one candidate. Its prompt is not published, so ours is written here,
versioned, and stored verbatim with every result (``PromptSet.to_dict``): a result can always be
traced to the exact text the model saw, and a changed prompt is a new cache key, never a silent
overwrite.

Both variants share one prefix (system message + the user's history), so a backend that caches
key/values computes the history once per user for both:

- ``generation``: prefix + lettered candidates + a question; the model answers, and
  :func:`mltfrkit.llmrec.parse.parse_answer` maps the answer to a candidate (or to none: invalid).
- ``likelihood``: prefix + a question without candidates; each candidate's title is scored as the
  assistant's answer by its mean token log-likelihood. No parsing, so no invalid answers.

Chat models get the messages through their chat template (:meth:`PromptSet.chat_parts`); the
``{kind}`` placeholder reads "movie" for MovieLens and "item" otherwise.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import asdict, dataclass

PROMPT_VERSION = 1
LETTERS = string.ascii_uppercase  # generation pools of up to 26 candidates

SYSTEM = ("You are a recommender system. You read what a user {consumed} in order and predict the {kind} "
          "they will {consume} next.")
HISTORY = "The user {consumed} these {kind}s, oldest first:\n{history}\n"
GENERATION_QUESTION = ("\nCandidates:\n{candidates}\n\nWhich candidate will the user {consume} next? "
                       "Answer with the letter of one candidate only.")
LIKELIHOOD_QUESTION = "\nWhich {kind} will the user {consume} next? Answer with its title only."
UNTITLED = "(title unknown)"

_WORDS = {"movie": {"kind": "movie", "consumed": "watched", "consume": "watch"},
          "item": {"kind": "item", "consumed": "bought", "consume": "buy"}}


@dataclass(frozen=True)
class PromptSet:
    """The prompt texts and how many history titles go in (the most recent ``history_len``)."""

    kind: str = "item"  # "movie" or "item": wording only
    history_len: int = 10
    system: str = SYSTEM
    history: str = HISTORY
    generation_question: str = GENERATION_QUESTION
    likelihood_question: str = LIKELIHOOD_QUESTION
    version: int = PROMPT_VERSION

    def __post_init__(self):
        if self.kind not in _WORDS:
            raise ValueError(f"prompt kind must be one of {sorted(_WORDS)}, not {self.kind!r}")
        if self.history_len < 1:
            raise ValueError(f"history_len must be >= 1, not {self.history_len}")

    @classmethod
    def for_dataset(cls, dataset: str, **options) -> "PromptSet":
        """MovieLens datasets are worded as movies, everything else as items."""
        return cls(kind="movie" if dataset.lower().startswith("ml-") else "item", **options)

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def _fill(self, text: str, **extra) -> str:
        return text.format(**_WORDS[self.kind], **extra)

    def history_text(self, titles: list[str]) -> str:
        recent = titles[-self.history_len:]
        return self._fill(self.history, history="\n".join(f"- {t}" for t in recent))

    def candidates_text(self, titles: list[str]) -> str:
        if len(titles) > len(LETTERS):
            raise ValueError(f"the generation prompt letters at most {len(LETTERS)} candidates, got {len(titles)}: "
                             f"use a pool of at most {len(LETTERS)} (or the likelihood variant)")
        return "\n".join(f"{LETTERS[i]}. {t}" for i, t in enumerate(titles))

    def chat_parts(self, history_titles: list[str], candidate_titles: list[str] | None = None
                   ) -> tuple[str, str, str]:
        """(system, shared user prefix, variant suffix): the user message is prefix + suffix. Without
        candidates the suffix is the likelihood question."""
        prefix = self.history_text(history_titles)
        if candidate_titles is None:
            suffix = self._fill(self.likelihood_question)
        else:
            suffix = self._fill(self.generation_question, candidates=self.candidates_text(candidate_titles))
        return self._fill(self.system), prefix, suffix

    def messages(self, history_titles: list[str], candidate_titles: list[str] | None = None) -> list[dict]:
        """OpenAI-style chat messages (what a chat endpoint receives)."""
        system, prefix, suffix = self.chat_parts(history_titles, candidate_titles)
        return [{"role": "system", "content": system}, {"role": "user", "content": prefix + suffix}]
