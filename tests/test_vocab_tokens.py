"""Display forms and token classes, on real token strings of each tokenizer family.

The strings below are copied from the real vocabularies (bert-base-uncased WordPiece;
GPT-2 / SmolLM2 byte-level BPE; Llama-2 / Gemma-3 / XLM-R SentencePiece). The real
packages are checked end to end in test_vocab_real.py.
"""

from __future__ import annotations

import json

import pytest

from mltfrkit.vocab.tokens import (
    BYTE_BPE,
    PLAIN,
    SENTENCEPIECE,
    WORDPIECE,
    TokenClass,
    Vocabulary,
    describe_token,
    describe_vocabulary,
    guess_family,
    read_folder_vocabulary,
    read_tokenizer_json,
    read_vocab_json,
    t5_extra_ids,
)

S, B, P, PC, W = TokenClass.SPECIAL, TokenClass.BYTE, TokenClass.PUNCT, TokenClass.PIECE, TokenClass.WORD

REAL_TOKENS = {
    WORDPIECE: [  # bert-base-uncased vocab.txt
        ("[CLS]", "[CLS]", S),
        ("[unused5]", "[unused5]", S),
        ("guitar", "guitar", W),
        ("1990", "1990", W),
        ("##ing", "ing", PC),
        ("!", "!", P),
        ("##~", "~", P),
        ("##.", ".", P),
    ],
    BYTE_BPE: [  # GPT-2 / SmolLM2 vocab
        ("<|endoftext|>", "<|endoftext|>", S),
        ("Ġguitar", "guitar", W),
        ("ĠcafÃ©", "café", W),
        ("ing", "ing", PC),
        ("Ã©", "é", PC),
        ("Ġ(", "(", P),
        ("Â°", "°", P),
        ("Ċ", "\\n", P),
        ("ĊĊĠĠĠ", "\\n\\n␣␣␣", P),
        ("éĻ", "\\xe9\\x99", B),  # first two bytes of a three-byte character
        ("ë", "\\xeb", B),
    ],
    SENTENCEPIECE: [  # Llama-2 / Gemma-3 / XLM-R
        ("<s>", "<s>", S),
        ("<unused12>", "<unused12>", S),
        ("<mask>", "<mask>", S),
        ("<0x0A>", "<0x0A>", B),
        ("▁guitar", "guitar", W),
        ("▁café", "café", W),
        ("ing", "ing", PC),
        ("電", "電", PC),
        ("▁", "␣", P),
        ("▁(", "(", P),
        ("\n", "\\n", P),
    ],
}


@pytest.mark.parametrize("family", [WORDPIECE, BYTE_BPE, SENTENCEPIECE])
def test_display_and_class_of_real_tokens(family):
    for token, display, token_class in REAL_TOKENS[family]:
        assert describe_token(token, family) == (display, token_class), token


def test_tokenizer_flags_override_the_text():
    # An added special token that looks like a word, and a GGUF BYTE-typed token.
    assert describe_token("<start_of_turn>", SENTENCEPIECE, "special") == ("<start_of_turn>", S)
    assert describe_token("<start_of_turn>", SENTENCEPIECE)[1] == PC  # without the flag it is only text
    assert describe_token("a", BYTE_BPE, "byte")[1] == B


def test_plain_family_and_combining_marks():
    assert describe_token("guitar", PLAIN) == ("guitar", W)
    assert describe_token("▁ा", SENTENCEPIECE)[1] == W  # a Devanagari vowel sign is part of a word
    assert describe_token("...", PLAIN)[1] == P


def test_guess_family():
    assert guess_family(["[CLS]", "the", "##s", "##ing"]) == WORDPIECE
    assert guess_family(["Ġthe", "Ġa", "ing"]) == BYTE_BPE
    assert guess_family(["▁the", "▁a", "s"]) == SENTENCEPIECE
    assert guess_family(["the", "a", "guitar"]) == PLAIN


def test_padding_rows_become_special():
    vocab = Vocabulary(["<s>", "▁a"], SENTENCEPIECE).fitted_to(4)
    displays, classes = describe_vocabulary(vocab)
    assert vocab.tokens[2:] == ["<|padding_row_2|>", "<|padding_row_3|>"]
    assert classes == [S, W, S, S]
    with pytest.raises(ValueError, match="do not belong together"):
        Vocabulary(["a", "b", "c"], PLAIN).fitted_to(2)


def _tokenizer_json(model: dict, added=(), pre_tokenizer=None, decoder=None, normalizer=None) -> dict:
    return {"model": model, "added_tokens": list(added), "pre_tokenizer": pre_tokenizer,
            "decoder": decoder, "normalizer": normalizer}


def test_tokenizer_json_families(tmp_path):
    cases = {
        "wordpiece": (_tokenizer_json({"type": "WordPiece", "vocab": {"[PAD]": 0, "the": 1, "##s": 2}}), WORDPIECE),
        "gpt2": (_tokenizer_json({"type": "BPE", "vocab": {"!": 0, "Ġthe": 1}},
                                 added=[{"id": 2, "content": "<|endoftext|>", "special": True}],
                                 pre_tokenizer={"type": "ByteLevel"}), BYTE_BPE),
        "qwen": (_tokenizer_json({"type": "BPE", "vocab": {"!": 0, "Ġthe": 1}},
                                 pre_tokenizer={"type": "Sequence", "pretokenizers": [{"type": "Split"}, {"type": "ByteLevel"}]}),
                 BYTE_BPE),
        "llama2": (_tokenizer_json({"type": "BPE", "byte_fallback": True, "vocab": {"<unk>": 0, "<0x0A>": 1, "▁the": 2}},
                                   normalizer={"type": "Sequence", "normalizers": [{"type": "Prepend"}, {"type": "Replace"}]}),
                   SENTENCEPIECE),
        "xlmr": (_tokenizer_json({"type": "Unigram", "vocab": [["<s>", 0.0], ["<pad>", 0.0], ["▁the", -3.1]]},
                                 pre_tokenizer={"type": "Metaspace"}), SENTENCEPIECE),
    }
    for name, (doc, family) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        vocab = read_tokenizer_json(path)
        assert vocab.family == family, name
    gpt2 = read_tokenizer_json(tmp_path / "gpt2.json")
    assert gpt2.tokens == ["!", "Ġthe", "<|endoftext|>"] and gpt2.kinds == {2: "special"}
    assert read_tokenizer_json(tmp_path / "xlmr.json").tokens == ["<s>", "<pad>", "▁the"]


def test_vocab_json_and_t5_extra_ids(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"Ġthe": 1, "!": 0, "<|endoftext|>": 3}))
    vocab = read_vocab_json(tmp_path / "vocab.json")
    assert vocab.tokens == ["!", "Ġthe", "<|unassigned_id_2|>", "<|endoftext|>"] and vocab.kinds == {2: "special"}
    t5 = t5_extra_ids(Vocabulary(["<pad>", "</s>", "<unk>", "▁the"], SENTENCEPIECE), count=3)
    assert t5.tokens[4:] == ["<extra_id_2>", "<extra_id_1>", "<extra_id_0>"]
    assert all(t5.kinds[i] == "special" for i in (4, 5, 6))
    assert read_folder_vocabulary(tmp_path).tokens[1] == "Ġthe"
