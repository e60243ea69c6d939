"""Map a free-text LLM answer to one lettered candidate, or to none.

Why so careful: the paper notes the LLM "sometimes answers with an item that is not in the pool"; such
an answer counts as wrong and its rate is reported, so the parser must neither invent a choice (reading
the article "A" of "A movie about..." as option A) nor miss one the model clearly made ("The answer is
C", "(B) GoldenEye", or the title alone). Rules, first match wins:

0. an answer that lists candidates chose none: None. A list is two or more lines starting with
   different letters ("A. ...\nB. ...", as small models often answer), or three or more different
   "X." letters anywhere ("A. Candidate E. Candidate J.");
1. the answer starts with a letter standing alone: "B", "B.", "B)", "(B)", "B:", "B -", "**B**";
2. a phrase naming a letter: "answer is B", "answer: B", "option B", "candidate B", 'letter "B"'
   (phrases naming two different letters, "Candidate A, Candidate B", choose none: None), or a
   sentence ending "... is B.";
3. a candidate's title in the answer (case-insensitive; also without a trailing "(year)"): the
   longest title found wins, then the earliest; a title shorter than 4 characters is not matched;
4. otherwise: None (invalid).

A letter outside the pool ("Z" for 20 candidates) is not a choice; rule 3 may still find a title.
"""

from __future__ import annotations

import re

from mltfrkit.llmrec.prompts import LETTERS

_LEADING = re.compile(r"^\W{0,3}?(?:\*\*)?\(?([A-Z])\)?(?:\*\*)?(?=$|[.):\]\-,]|\s*$|\s+[-–:]|\s*\n)")
_NAMED = re.compile(r"(?:answer(?:\s+is)?|option|candidate|letter|choice)\s*[:\-]?\s*[\"'(]?\**([A-Z])\**[\"')]?"
                    r"(?![a-z])", re.IGNORECASE)
_FINAL = re.compile(r"\bis:?\s+\(?([A-Z])\)?\.?\s*$")
_LISTED = re.compile(r"^\s*\(?([A-Z])[.)]\s", re.MULTILINE)
_DOTTED = re.compile(r"(?<![A-Za-z.])([A-Z])\.(?=\s|$)")
_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")


def _letter(letter: str, n: int) -> int | None:
    index = LETTERS.find(letter.upper())
    return index if 0 <= index < n else None


def parse_answer(answer: str, candidates: list[str]) -> int | None:
    """Index of the chosen candidate in ``candidates`` (their titles, in lettered order), or None."""
    text = answer.strip()
    n = len(candidates)
    if len({m.group(1) for m in _LISTED.finditer(text) if _letter(m.group(1), n) is not None}) >= 2:
        return None
    if len({m.group(1) for m in _DOTTED.finditer(text) if _letter(m.group(1), n) is not None}) >= 3:
        return None
    match = _LEADING.match(text)
    if match and (index := _letter(match.group(1), n)) is not None:
        return index
    named = {index for match in _NAMED.finditer(text) if match.group(1).isupper()
             and (index := _letter(match.group(1), n)) is not None}
    if len(named) > 1:
        return None
    if named:
        return named.pop()
    match = _FINAL.search(text)
    if match and (index := _letter(match.group(1), n)) is not None:
        return index
    lowered = text.lower()
    found = []
    for index, title in enumerate(candidates):
        for form in {title, _YEAR.sub("", title)}:
            form = form.strip().lower()
            if len(form) >= 4 and (at := lowered.find(form)) >= 0:
                found.append((-len(form), at, index))
    if found:
        return min(found)[2]
    return None
