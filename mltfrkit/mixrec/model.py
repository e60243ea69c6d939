"""MixRec, MixRec_base and LLMRec (Liu et al., "Beyond Inter-Item Relations: Dynamic Adaptive
Mixture-of-Experts for LLM-Based Sequential Recommendation").

Variants (section 3.1.3, 3.3, Fig. 5):

* ``llmrec``: the frozen LLM, no adapters, item projection only, trained with L_seq alone.
* ``mixrec_base`` (section 2.2): two recommendation adapters per layer (after the frozen attention
  and after the frozen FFN, eq. of 2.2.5, bottleneck 64), causal masking, losses L_seq + lambda_1
  L_align + lambda_2 L_cl (2.2.2-2.2.4).
* ``mixrec`` (section 2.3): every replaced layer (replacement frequency r, Fig. 12) is a DAMoE layer:
  the causal and the context expert (2.3.1, 2.3.3) over one set of Q, K, V (Appendix C), each a
  serial or parallel adapter expert, a softmax gate over [q_i, p_i], then the recommendation
  adapter around the frozen FFN, again serial or parallel; collaborative slots from a jointly
  trained CF model concatenated to every layer's input (2.3.2); L_cf added with lambda_3 (2.4).
  ``design`` holds the 3L serial/parallel bits that Bayesian optimisation searches
  (:mod:`mltfrkit.mixrec.search`); ``None`` = every part serial (the paper's "Variation 2").

Adapter (2.2.5): ``Adapter(h) = W_2 (W_1 h + b_1) + b_2 + h`` (the paper writes no non-linearity;
``adapter_activation`` adds one). W_2 starts at zero, so a serial adapter starts as the identity
and MixRec_base starts as the pretrained LLM. Serial / parallel (2.3.3, Appendix D):
``Adapter(SelfAttention(h, MASK))`` / ``(SelfAttention(h, MASK) + Adapter(h)) / 2``, where ``h`` is
the layer's normed input (what the frozen attention sees); the result is added to the residual
stream as the attention output would be. The third part of a layer is the same choice around
the frozen FFN.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from mltfrkit.mixrec.cf import CF_MODELS, CFInjection, build_cf
from mltfrkit.mixrec.llm import DecoderParts, attention
from mltfrkit.mixrec.masks import TokenBatch, align_batch, causal_mask, cf_positions, context_mask, sequence_batch
from mltfrkit.mixrec.sentences import ItemSentences

VARIANTS = ("llmrec", "mixrec_base", "mixrec")
SERIAL, PARALLEL = 0, 1
PARTS_PER_LAYER = 3  # causal expert, context expert, recommendation adapter (2.3.3: 3L bits)


@dataclass
class MixRecConfig:
    """Defaults from the paper (section 3.1.4, Table 3, Fig. 9); ``history_len`` is ours (the paper
    does not state one; its Amazon sequences average 7-9 items)."""

    variant: str = "mixrec"
    max_tokens: int = 30  # item sentence length (3.1.4)
    history_len: int = 20  # items per input sequence
    bottleneck: int = 64  # adapter bottleneck (3.1.4, Fig. 10)
    adapter_activation: str = "none"  # "none" (the paper's equation), "gelu", "relu"
    design: tuple[int, ...] | None = None  # 3L bits, 0 = serial, 1 = parallel, per replaced layer in order
    replace_every: int = 1  # replacement frequency r (Fig. 12): DAMoE at layers r-1, 2r-1, ...
    context_expert_mask: str = "context"  # "context"; "causal" = Fig. 8's "MoE" control (both experts causal)
    cf: str = "ncf"  # "ncf", "bpr_mf", "none" (section 3.4)
    cf_dim: int = 32
    lambda_align: float = 1e-1  # lambda_1 (Fig. 9's best on Pantry)
    lambda_cl: float = 1e-6  # lambda_2
    lambda_cf: float = 1e-2  # lambda_3
    n_s: int = 1  # items sampled per sequence for L_cl (3.1.4)
    n_cl: int = 5  # hard negatives per sampled item
    tau: float = 1.0  # InfoNCE temperature
    hard_fraction: float = 0.005  # Appendix A: top 0.5% nearest items per similarity
    max_align_items: int = 64  # items per batch in L_align (the batch's CL items first)
    gradient_checkpointing: bool = False
    # Keep only the LLM's first k layers (None = all): a CPU-budget reduction, never the paper's setting
    llm_layers: int | None = None

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, not {self.variant!r}")
        if self.cf not in CF_MODELS:
            raise ValueError(f"cf must be one of {list(CF_MODELS)}, not {self.cf!r}")
        if self.adapter_activation not in ("none", "gelu", "relu"):
            raise ValueError(f"adapter_activation must be none, gelu or relu, not {self.adapter_activation!r}")
        if self.context_expert_mask not in ("context", "causal"):
            raise ValueError(f"context_expert_mask must be 'context' or 'causal', not {self.context_expert_mask!r}")
        for name in ("max_tokens", "history_len", "bottleneck", "replace_every", "cf_dim", "n_s", "n_cl",
                     "max_align_items"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.llm_layers is not None and self.llm_layers < 1:
            raise ValueError(f"llm_layers must be at least 1 (or None = all), not {self.llm_layers}")
        if not (self.tau > 0 and math.isfinite(self.tau)):
            raise ValueError(f"tau must be positive, not {self.tau}")
        if self.design is not None:
            self.design = tuple(int(b) for b in self.design)
            if any(b not in (0, 1) for b in self.design):
                raise ValueError(f"design holds 0 (serial) / 1 (parallel) bits, not {self.design}")

    @property
    def uses_cf(self) -> bool:
        return self.variant == "mixrec" and self.cf != "none"

    def losses_used(self) -> dict[str, float]:
        """The weight of each loss term (LLMRec: L_seq only; MixRec_base: no L_cf)."""
        if self.variant == "llmrec":
            return {"seq": 1.0}
        weights = {"seq": 1.0, "align": self.lambda_align, "cl": self.lambda_cl}
        if self.uses_cf:
            weights["cf"] = self.lambda_cf
        return weights

    def to_dict(self) -> dict:
        out = asdict(self)
        out["design"] = list(self.design) if self.design is not None else None
        return out


class Adapter(nn.Module):
    """Section 2.2.5: ``W_2 (W_1 h + b_1) + b_2 + h``; W_2 = 0 at the start (identity)."""

    def __init__(self, hidden: int, bottleneck: int, activation: str = "none"):
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.activation = {"none": nn.Identity(), "gelu": nn.GELU(), "relu": nn.ReLU()}[activation]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.activation(self.down(h))) + h


def adapted(form: int, adapter: Adapter, frozen_out: torch.Tensor, frozen_in: torch.Tensor) -> torch.Tensor:
    """Serial: Adapter(F(h)); parallel: (F(h) + Adapter(h)) / 2 (section 2.3.3, Appendix D)."""
    if form == SERIAL:
        return adapter(frozen_out)
    return (frozen_out + adapter(frozen_in)) / 2


class LayerAdapters(nn.Module):
    """The trainable parts of one LLM layer: MixRec_base's two adapters, or a DAMoE layer's two
    adapter experts, gate and recommendation adapter, with their serial/parallel forms."""

    def __init__(self, kind: str, hidden: int, config: MixRecConfig, forms: tuple[int, int, int]):
        super().__init__()
        self.kind = kind
        self.forms = forms
        make = lambda: Adapter(hidden, config.bottleneck, config.adapter_activation)  # noqa: E731
        if kind == "base":
            self.attn_adapter, self.ffn_adapter = make(), make()
        elif kind == "damoe":
            self.causal_expert, self.context_expert, self.rec_adapter = make(), make(), make()
            self.gate = nn.Linear(2 * hidden, 2)  # beta = Softmax([q, p] W_gate + b_gate)
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)


class MixRec(nn.Module):
    """The LLM (frozen), its per-layer adapters, the item projection and (MixRec) the CF model."""

    def __init__(self, parts: DecoderParts, sentences: ItemSentences, prompt: torch.Tensor, n_users: int,
                 config: MixRecConfig):
        super().__init__()
        self.config = config
        self.parts = parts
        for p in parts.parameters():
            p.requires_grad_(False)
        self.n_items = sentences.n_items
        self.n_users = n_users
        if config.llm_layers is not None and config.llm_layers > parts.n_layers:
            raise ValueError(f"llm_layers={config.llm_layers}, but the LLM has {parts.n_layers} layers")
        self.n_layers = config.llm_layers or parts.n_layers
        self.layers = parts.layers[:self.n_layers]
        d = parts.hidden_size
        self.register_buffer("item_tokens", sentences.tokens.clone(), persistent=False)
        self.register_buffer("item_lengths", sentences.lengths.clone(), persistent=False)
        self.register_buffer("prompt", prompt.clone(), persistent=False)
        self.align_id, self.seq_id = parts.vocab_size, parts.vocab_size + 1
        # [ALIGN] and [SEQ] (2.2.2, 2.2.3): new trainable embeddings, started at the scale of the real ones
        table = parts.token_embeddings().weight.detach().float()
        self.special = nn.Parameter(table.mean(0).repeat(2, 1) + table.std() * torch.randn(2, d))
        self.item_projection = nn.Linear(d, self.n_items + 1)  # W_item, b_item (2.2.2)
        self.damoe_layers = self._damoe_layer_indices()
        if config.design is not None and len(config.design) != PARTS_PER_LAYER * len(self.damoe_layers):
            raise ValueError(f"design has {len(config.design)} bits; this LLM has {len(self.damoe_layers)} DAMoE "
                             f"layers (n_layers={self.n_layers}, replace_every={config.replace_every}), so it needs "
                             f"3 x {len(self.damoe_layers)} = {PARTS_PER_LAYER * len(self.damoe_layers)}")
        adapters = []
        for k in range(self.n_layers):
            if config.variant == "llmrec":
                adapters.append(LayerAdapters("none", d, config, (SERIAL,) * 3))
            elif config.variant == "mixrec_base":
                adapters.append(LayerAdapters("base", d, config, (SERIAL,) * 3))
            elif k in self.damoe_layers:
                j = self.damoe_layers.index(k)
                forms = tuple(config.design[3 * j:3 * j + 3]) if config.design is not None else (SERIAL,) * 3
                adapters.append(LayerAdapters("damoe", d, config, forms))
            else:  # an unreplaced layer stays the frozen LLM layer (Fig. 12)
                adapters.append(LayerAdapters("none", d, config, (SERIAL,) * 3))
        self.adapters = nn.ModuleList(adapters)
        cf = build_cf(config.cf, n_users, self.n_items, config.cf_dim) if config.uses_cf else None
        self.cf = CFInjection(cf, d) if cf is not None else None
        self.hard_negatives: list[torch.Tensor] | None = None  # Appendix A, set by the trainer

    def _damoe_layer_indices(self) -> list[int]:
        if self.config.variant != "mixrec":
            return []
        r = self.config.replace_every
        return [k for k in range(self.n_layers) if (k + 1) % r == 0]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The parameters MixRec trains (what a checkpoint needs; the frozen LLM is reloaded)."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor], source: str = "the checkpoint") -> None:
        """Load :meth:`trainable_state`'s tensors; anything missing or extra is an error naming it."""
        expected = set(self.trainable_state())
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or extra:
            raise ValueError(f"{source} does not fit this MixRec (missing {missing[:5]}, unexpected {extra[:5]}): it "
                             f"was written by another configuration; delete it to start over")
        self.load_state_dict(state, strict=False)

    # -- the forward pass --------------------------------------------------------------
    def embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        special = ids >= self.parts.vocab_size
        hidden = self.parts.embed(ids.masked_fill(special, 0), positions)
        rows = (ids - self.parts.vocab_size).clamp(min=0)
        return torch.where(special.unsqueeze(-1), self.special[rows].to(hidden.dtype), hidden)

    def hidden_states(self, batch: TokenBatch, cf_slots: torch.Tensor | None) -> torch.Tensor:
        """(B, T, d) last-layer hidden states after the final norm."""
        masks = {"causal": causal_mask(batch)}
        if self.damoe_layers:
            masks["context"] = masks["causal"] if self.config.context_expert_mask == "causal" else context_mask(batch)
        x = self.embed(batch.ids, batch.positions)
        C = batch.n_cf
        if cf_slots is None or C == 0:
            cf_slots = x.new_zeros(x.shape[0], 0, x.shape[-1])
            if C:  # no CF model: the slots exist in the layout but are never visible
                masks = {k: v[..., C:] for k, v in masks.items()}
                C = 0
        k_pos = torch.cat([cf_positions(batch)[:, :C], batch.positions], 1)
        for layer, adapters in zip(self.layers, self.adapters):
            run = lambda x_, slots_, layer=layer, adapters=adapters: self._layer(  # noqa: E731
                layer, adapters, x_, slots_, batch.positions, k_pos, masks)
            if self.config.gradient_checkpointing and self.training:
                x = checkpoint(run, x, cf_slots, use_reentrant=False)
            else:
                x = run(x, cf_slots)
        return self.parts.final_norm(x)

    def _layer(self, layer, adapters: LayerAdapters, x, cf_slots, q_pos, k_pos, masks):
        normed = layer.attn_norm(x)
        kv = layer.attn_norm(torch.cat([cf_slots.to(x.dtype), x], 1)) if cf_slots.shape[1] else normed
        if adapters.kind == "damoe":
            causal, context = attention(self.parts, layer, normed, kv, q_pos, k_pos,
                                        [masks["causal"], masks["context"]])
            q = adapted(adapters.forms[0], adapters.causal_expert, causal, normed)  # F_causal
            p = adapted(adapters.forms[1], adapters.context_expert, context, normed)  # F_context
            beta = torch.softmax(adapters.gate(torch.cat([q, p], -1)), -1)  # gating network G (2.3.3)
            x = x + beta[..., :1] * q + beta[..., 1:] * p
            ffn_in = layer.ffn_norm(x)
            return x + adapted(adapters.forms[2], adapters.rec_adapter, layer.ffn(ffn_in), ffn_in)
        (attn,) = attention(self.parts, layer, normed, kv, q_pos, k_pos, [masks["causal"]])
        if adapters.kind == "base":
            x = x + adapters.attn_adapter(attn)
            ffn_in = layer.ffn_norm(x)
            return x + adapters.ffn_adapter(layer.ffn(ffn_in))
        x = x + attn
        return x + layer.ffn(layer.ffn_norm(x))

    def _readout(self, hidden: torch.Tensor, batch: TokenBatch) -> torch.Tensor:
        index = batch.readout.clamp(min=0)
        return hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))

    def sequence_states(self, users: torch.Tensor, item_seqs: torch.Tensor) -> torch.Tensor:
        """h^SEQ_{u,j} for every item slot of (B, n) left-padded sequences: (B, n, d)."""
        batch = sequence_batch(item_seqs, self.item_tokens, self.item_lengths, self.seq_id, self.cf is not None)
        slots = self.cf.sequence_slots(users, item_seqs) if self.cf is not None else None
        return self._readout(self.hidden_states(batch, slots), batch)

    def align_states(self, items: torch.Tensor) -> torch.Tensor:
        """h^ALIGN_i for (N,) items: (N, d)."""
        batch = align_batch(items, self.item_tokens, self.item_lengths, self.prompt, self.align_id,
                            self.cf is not None)
        slots = self.cf.item_slots(items) if self.cf is not None else None
        return self._readout(self.hidden_states(batch, slots), batch)[:, 0]

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.item_projection(hidden.to(self.item_projection.weight.dtype))
        logits[..., 0] = float("-inf")  # padding is never an item
        return logits

    @torch.no_grad()
    def score_all(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """(B, n_items + 1) scores for the next item after each (B, n) left-padded history (full ranking)."""
        return self.item_logits(self.sequence_states(users, history)[:, -1]).float()

    # -- the losses (2.2.2-2.2.4, 2.4) -------------------------------------------------
    def losses(self, users: torch.Tensor, window: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Each loss term for (B,) users and (B, n + 1) left-padded training windows."""
        weights = self.config.losses_used()
        inputs, targets = window[:, :-1], window[:, 1:]
        valid = targets > 0
        states = self.sequence_states(users, inputs)
        out = {"seq": F.cross_entropy(self.item_logits(states[valid]), targets[valid])}  # L_seq (2.2.3)
        if "align" in weights or "cl" in weights:
            anchors, positives, negatives = self._contrastive_samples(states, targets, valid, generator)
            cl_items = torch.cat([positives, negatives.flatten()])
            batch_items = targets[valid]
            extra = batch_items[torch.randperm(len(batch_items), generator=generator)[:self.config.max_align_items]]
            items, inverse = torch.unique(torch.cat([cl_items, extra.to(cl_items.device)]), return_inverse=True)
            aligned = self.align_states(items)
            out["align"] = F.cross_entropy(self.item_logits(aligned), items)  # L_align (2.2.2)
            pos = aligned[inverse[:len(positives)]]
            neg = aligned[inverse[len(positives):len(cl_items)]].view(*negatives.shape, -1)
            out["cl"] = info_nce(anchors, pos, neg, self.config.tau)  # L_cl (2.2.4)
        if "cf" in weights:
            out["cf"] = self._cf_loss(users, window, generator)
        out["total"] = sum(weights[name] * out[name] for name in weights)
        return out

    def _contrastive_samples(self, states, targets, valid, generator):
        """Section 2.2.4: n_s positions per sequence (any but the last item, i.e. one with a next item), the
        next item j+ as positive and n_cl items of its hard set N_{j+} (Appendix A) as negatives."""
        B, n = targets.shape
        scores = torch.rand(B, n, generator=generator).to(valid.device).masked_fill(~valid, -1.0)
        k = min(self.config.n_s, n)
        picked = scores.topk(k, dim=1).indices  # (B, k)
        keep = valid.gather(1, picked)
        anchors = states.gather(1, picked.unsqueeze(-1).expand(-1, -1, states.shape[-1]))[keep]
        positives = targets.gather(1, picked)[keep]
        negatives = sample_hard_negatives(positives, self.hard_negatives, self.n_items, self.config.n_cl, generator)
        return anchors, positives, negatives.to(positives.device)

    def _cf_loss(self, users, window, generator) -> torch.Tensor:
        """L_cf: the CF model's own loss on the users' training items, one uniform negative each."""
        real = window > 0
        rows = users.unsqueeze(1).expand_as(window)[real]
        positives = window[real]
        negatives = torch.randint(1, self.n_items + 1, positives.shape, generator=generator).to(positives.device)
        return self.cf.cf.loss(rows, positives, negatives)


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, tau: float) -> torch.Tensor:
    """L_cl of section 2.2.4 with cosine similarity: (N, d), (N, d), (N, n_cl, d) -> mean over anchors."""
    if anchor.shape[0] == 0:
        return anchor.sum() * 0
    pos = F.cosine_similarity(anchor, positive, dim=-1).unsqueeze(1)
    neg = F.cosine_similarity(anchor.unsqueeze(1), negatives, dim=-1)
    logits = torch.cat([pos, neg], 1) / tau
    return F.cross_entropy(logits, torch.zeros(len(anchor), dtype=torch.long, device=anchor.device))


def sample_hard_negatives(items: torch.Tensor, hard: list[torch.Tensor] | None, n_items: int, n_cl: int,
                          generator: torch.Generator) -> torch.Tensor:
    """(N,) items -> (N, n_cl) negatives from each item's hard set (with replacement when it is smaller
    than n_cl). An item whose hard set is empty, or no hard sets at all, draws uniform items other than
    itself: the paper does not say what to do then."""
    out = torch.randint(1, n_items + 1, (len(items), n_cl), generator=generator)
    clash = out == items.cpu().unsqueeze(1)
    out[clash] = out[clash] % n_items + 1
    if hard is None:
        return out
    for row, item in enumerate(items.tolist()):
        pool = hard[item]
        if len(pool):
            out[row] = pool[torch.randint(len(pool), (n_cl,), generator=generator)]
    return out
