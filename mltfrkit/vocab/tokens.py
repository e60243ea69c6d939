"""Token strings: where they come from, how an inspector shows them, what kind they are.

Three tokenizer families cover every source we read, and each marks word boundaries its
own way: WordPiece marks a word *continuation* with ``##``; byte-level BPE (GPT-2, Qwen,
SmolLM2) maps raw bytes to printable characters and shows a leading space as ``Ġ``;
SentencePiece (Llama-2, T5/P5, XLM-R, Gemma) shows a leading space as ``▁`` and spells
bytes it has no piece for as ``<0xAB>``. The *display form* removes those markers
(``Ġguitar`` -> ``guitar``); the *token class* sorts tokens for the vocabulary pre-filter.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache
from pathlib import Path

from . import _protobuf as pb

WORDPIECE, BYTE_BPE, SENTENCEPIECE, PLAIN = "wordpiece", "byte_bpe", "sentencepiece", "plain"
FAMILIES = (WORDPIECE, BYTE_BPE, SENTENCEPIECE, PLAIN)


class TokenClass(IntEnum):
    """Token classes stored in ``TokenTable.token_class`` (int8). Order is part of the format.

    SPECIAL: control and added tokens (``[CLS]``, ``<s>``, ``<|endoftext|>``, ``<unused3>``)
        and matrix rows no token string maps to.
    BYTE: byte-fallback pieces (``<0x0A>``) and byte-BPE tokens that are not whole UTF-8
        characters.
    PUNCT: no letter or digit at all: punctuation, symbols, emoji, whitespace.
    PIECE: a word continuation (``##ing``; ``ing`` without a word-start marker).
    WORD: starts a word (``▁guitar``, ``Ġguitar``; WordPiece tokens without ``##``;
        every alphanumeric token of a family without markers).
    """

    SPECIAL = 0
    BYTE = 1
    PUNCT = 2
    PIECE = 3
    WORD = 4

    @classmethod
    def parse(cls, value: "str | int | TokenClass") -> "TokenClass":
        """Accept ``'special'``, ``'punctuation'``, ``'punct'``, ``3`` or a member."""
        if isinstance(value, str):
            key = value.strip().upper()
            key = {"PUNCTUATION": "PUNCT", "SUBWORD": "PIECE", "SUB-WORD": "PIECE"}.get(key, key)
            try:
                return cls[key]
            except KeyError:
                raise ValueError(f"unknown token class {value!r}; use one of {[c.name.lower() for c in cls]}") from None
        return cls(int(value))


@dataclass
class Vocabulary:
    """Token strings in id order plus what the tokenizer files say about some of them.

    ``kinds`` maps an id to ``"special"`` or ``"byte"`` where the tokenizer itself flags
    the token (added special tokens, SentencePiece CONTROL/BYTE types, GGUF token types).
    """

    tokens: list[str]
    family: str
    kinds: dict[int, str] = field(default_factory=dict)
    origin: str = ""

    def fitted_to(self, n_rows: int) -> "Vocabulary":
        """Match the matrix height: models often pad the embedding beyond the tokenizer
        (Qwen3: 151669 tokens, 151936 rows; e5-small: 250002 tokens, 250037 rows).
        Extra rows get placeholder strings classed as special, so the pre-filter drops them."""
        tokens = list(self.tokens)
        if len(tokens) > n_rows:
            raise ValueError(
                f"tokenizer ({self.origin}) has {len(tokens)} tokens but the embedding matrix only "
                f"{n_rows} rows: they do not belong together"
            )
        kinds = dict(self.kinds)
        for row in range(len(tokens), n_rows):
            tokens.append(f"<|padding_row_{row}|>")
            kinds[row] = "special"
        return Vocabulary(tokens, self.family, kinds, self.origin)


# --------------------------------------------------------------------------- classification

_SPECIAL_PATTERNS = re.compile(
    r"<\|[^|\s]*\|>"  # <|endoftext|>, <|im_start|>, our padding rows
    r"|\[(?:PAD|UNK|CLS|SEP|MASK|unused\d+)\]"  # BERT
    r"|<(?:s|/s|pad|unk|mask|bos|eos|cls|sep|extra_id_\d+|unused\d+)>"  # SentencePiece models, T5
)
_SP_BYTE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte <-> printable character table (printable bytes stand for themselves,
    the others are shifted to code points 256 and up, in byte order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            alphabet[chr(byte)] = byte
        else:
            alphabet[chr(256 + shifted)] = byte
            shifted += 1
    return alphabet


def _visible(text: str) -> str:
    """A display for a token that is only whitespace (else it would show as nothing)."""
    if not text:
        return "∅"
    return "".join({" ": "␣", "\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(ch, ch) for ch in text)


def _has_alnum(text: str) -> bool:
    """Letters, digits, or combining marks (a Devanagari vowel sign is part of a word)."""
    return any(ch.isalnum() or unicodedata.category(ch).startswith("M") for ch in text)


def describe_token(token: str, family: str, kind: str | None = None) -> tuple[str, TokenClass]:
    """Return ``(display form, class)`` for one token of a tokenizer family."""
    if kind == "special" or _SPECIAL_PATTERNS.fullmatch(token):
        return token, TokenClass.SPECIAL
    if kind == "byte" or (family == SENTENCEPIECE and _SP_BYTE.fullmatch(token)):
        return token, TokenClass.BYTE

    starts_word = True
    if family == WORDPIECE:
        if token.startswith("##") and len(token) > 2:
            text, starts_word = token[2:], False
        else:
            text = token
    elif family == BYTE_BPE:
        alphabet = _byte_level_alphabet()
        if all(ch in alphabet for ch in token):
            raw = bytes(alphabet[ch] for ch in token)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                return "".join(f"\\x{b:02x}" for b in raw), TokenClass.BYTE
        else:  # an added token spelled in plain text
            text = token
        starts_word = text.startswith(" ")
    elif family == SENTENCEPIECE:
        text = token.replace("▁", " ")
        starts_word = text.startswith(" ")
    else:
        text = token

    body = text.strip()
    display = body if body else _visible(text)
    if not _has_alnum(body):
        return display, TokenClass.PUNCT
    return display, TokenClass.WORD if starts_word else TokenClass.PIECE


def describe_vocabulary(vocab: Vocabulary) -> tuple[list[str], list[int]]:
    """Display forms and class codes for every token of ``vocab``."""
    displays, classes = [], []
    for index, token in enumerate(vocab.tokens):
        display, token_class = describe_token(token, vocab.family, vocab.kinds.get(index))
        displays.append(display)
        classes.append(int(token_class))
    return displays, classes


def guess_family(tokens: list[str]) -> str:
    """Family of a bare token list, from the share of tokens carrying each marker."""
    counts = {
        WORDPIECE: sum(t.startswith("##") for t in tokens),
        BYTE_BPE: sum(t.startswith("Ġ") for t in tokens),
        SENTENCEPIECE: sum(t.startswith("▁") for t in tokens),
    }
    family, count = max(counts.items(), key=lambda item: item[1])
    return family if count > 0.01 * max(1, len(tokens)) else PLAIN


# --------------------------------------------------------------------------- readers


def _walk_types(node) -> set[str]:
    """All ``"type"`` values in a nested tokenizer.json component (sequences included)."""
    found = set()
    if isinstance(node, dict):
        if isinstance(node.get("type"), str):
            found.add(node["type"])
        for value in node.values():
            found |= _walk_types(value)
    elif isinstance(node, list):
        for value in node:
            found |= _walk_types(value)
    return found


def _place(tokens: list[str | None], index: int, token: str) -> None:
    if index >= len(tokens):
        tokens.extend([None] * (index + 1 - len(tokens)))
    tokens[index] = token


def _fill_gaps(tokens: list[str | None], kinds: dict[int, str]) -> list[str]:
    for index, token in enumerate(tokens):
        if token is None:
            tokens[index] = f"<|unassigned_id_{index}|>"
            kinds[index] = "special"
    return tokens  # type: ignore[return-value]


def read_tokenizer_json(path: str | Path) -> Vocabulary:
    """A Hugging Face ``tokenizer.json`` (the fast-tokenizer file)."""
    path = Path(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    model = doc["model"]
    kind = model.get("type") or ("Unigram" if isinstance(model.get("vocab"), list) else "BPE")
    tokens: list[str | None] = []
    kinds: dict[int, str] = {}
    if kind == "Unigram":
        for index, (piece, _score) in enumerate(model["vocab"]):
            _place(tokens, index, piece)
    else:
        for piece, index in model["vocab"].items():
            _place(tokens, int(index), piece)
    for added in doc.get("added_tokens") or []:
        _place(tokens, int(added["id"]), added["content"])
        if added.get("special"):
            kinds[int(added["id"])] = "special"

    component_types = _walk_types([doc.get("pre_tokenizer"), doc.get("decoder"), doc.get("normalizer")])
    if kind == "WordPiece":
        family = WORDPIECE
    elif kind == "Unigram" or "Metaspace" in component_types or model.get("byte_fallback"):
        family = SENTENCEPIECE
    elif "ByteLevel" in component_types:
        family = BYTE_BPE
    else:
        family = guess_family([t for t in tokens if t is not None])
    return Vocabulary(_fill_gaps(tokens, kinds), family, kinds, str(path))


def read_vocab_txt(path: str | Path) -> Vocabulary:
    """BERT's ``vocab.txt``: one WordPiece token per line, line number = id."""
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return Vocabulary([line.rstrip("\r") for line in lines], WORDPIECE, {}, str(path))


def read_vocab_json(path: str | Path) -> Vocabulary:
    """GPT-2's ``vocab.json`` (token -> id) of a byte-level BPE."""
    mapping = json.loads(Path(path).read_text(encoding="utf-8"))
    tokens: list[str | None] = []
    for piece, index in mapping.items():
        _place(tokens, int(index), piece)
    kinds: dict[int, str] = {}
    return Vocabulary(_fill_gaps(tokens, kinds), BYTE_BPE, kinds, str(path))


# SentencePiece piece types (sentencepiece_model.proto); GGUF's token_type uses the same numbers.
_SP_TYPE_KIND = {2: "special", 3: "special", 5: "special", 6: "byte"}  # UNKNOWN, CONTROL, UNUSED, BYTE


def read_sentencepiece_model(path: str | Path) -> Vocabulary:
    """A SentencePiece ``.model`` file (``tokenizer.model``, ``spiece.model``)."""
    buf = Path(path).read_bytes()
    tokens, kinds = [], {}
    for field_number, _wire, span in pb.iter_fields(buf):
        if field_number != 1:  # ModelProto.pieces
            continue
        piece, piece_type = "", 1
        for sub, _sub_wire, value in pb.iter_fields(buf, span[0], span[0] + span[1]):
            if sub == 1:
                piece = buf[value[0] : value[0] + value[1]].decode("utf-8")
            elif sub == 3:
                piece_type = value
        if piece_type in _SP_TYPE_KIND:
            kinds[len(tokens)] = _SP_TYPE_KIND[piece_type]
        tokens.append(piece)
    if not tokens:
        raise ValueError(f"{path}: no SentencePiece pieces found")
    return Vocabulary(tokens, SENTENCEPIECE, kinds, str(path))


def t5_extra_ids(vocab: Vocabulary, count: int = 100) -> Vocabulary:
    """T5/P5 append ``<extra_id_99>`` ... ``<extra_id_0>`` after the SentencePiece pieces."""
    size = len(vocab.tokens) + count
    extra = [f"<extra_id_{size - 1 - index}>" for index in range(len(vocab.tokens), size)]
    kinds = dict(vocab.kinds) | {index: "special" for index in range(len(vocab.tokens), size)}
    return Vocabulary(vocab.tokens + extra, vocab.family, kinds, vocab.origin + " + T5 extra ids")


_GGUF_FAMILY = {"llama": SENTENCEPIECE, "t5": SENTENCEPIECE, "gemma": SENTENCEPIECE, "gpt2": BYTE_BPE, "bert": WORDPIECE}


def gguf_field(reader, key):
    field_ = reader.fields.get(key)
    if field_ is None:
        return None
    if hasattr(field_, "contents"):
        return field_.contents()
    # Older gguf releases: strings are parts indexed by field.data.
    values = [bytes(field_.parts[i]) for i in field_.data]
    return [v.decode("utf-8", "replace") for v in values] if field_.types and field_.types[-1].name == "STRING" else values


def read_gguf_vocabulary(reader, origin: str = "") -> Vocabulary:
    """Tokens and token types stored in a GGUF file's ``tokenizer.ggml.*`` metadata."""
    tokens = gguf_field(reader, "tokenizer.ggml.tokens")
    if not tokens:
        raise ValueError(f"{origin}: GGUF file carries no tokenizer.ggml.tokens")
    types = gguf_field(reader, "tokenizer.ggml.token_type") or []
    model = gguf_field(reader, "tokenizer.ggml.model") or ""
    kinds = {index: _SP_TYPE_KIND[int(t)] for index, t in enumerate(types) if int(t) in _SP_TYPE_KIND}
    family = _GGUF_FAMILY.get(str(model), guess_family(tokens))
    return Vocabulary(list(tokens), family, kinds, origin or "gguf")


def read_token_list(path: str | Path) -> Vocabulary:
    """A bare token list for a user's own matrix: JSON list, or text with one token per line."""
    path = Path(path)
    if path.suffix == ".json":
        tokens = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(tokens, dict):  # token -> id
            ordered: list[str | None] = []
            for piece, index in tokens.items():
                _place(ordered, int(index), piece)
            tokens = _fill_gaps(ordered, {})
    else:
        tokens = path.read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"{path}: expected a list of token strings")
    return Vocabulary(tokens, guess_family(tokens), {}, str(path))


_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json")


def read_folder_vocabulary(folder: str | Path, model_type: str | None = None) -> Vocabulary:
    """Token strings of a Hugging Face model folder, from the best tokenizer file present."""
    folder = Path(folder)
    for name in _TOKENIZER_FILES:
        path = folder / name
        if not path.exists():
            continue
        if name == "tokenizer.json":
            return read_tokenizer_json(path)
        if name == "vocab.txt":
            return read_vocab_txt(path)
        if name == "vocab.json":
            return read_vocab_json(path)
        vocab = read_sentencepiece_model(path)
        return t5_extra_ids(vocab) if model_type == "t5" else vocab
    raise FileNotFoundError(f"{folder}: no tokenizer file (looked for {', '.join(_TOKENIZER_FILES)})")
