"""The MLTFR plug-in: experts (filter + cross-attention), a gate, and the consensus expert.

W_output = sum_m g_m(E) W_expert_m (eqs. 11-12) + alpha * W_SC (eq. 15), added to E through the
backbone's hook (eq. 18). Padding positions receive nothing.
"""

from __future__ import annotations

import math

from dataclasses import asdict, dataclass

import torch
from torch import nn

from mltfrkit.mltfr.filter import Selection, TokenFilter
from mltfrkit.mltfr.integration import CrossAttentionIntegration, PickedTokens, dropout_multiplier


@dataclass
class MLTFRConfig:
    llms: str | list[str] = "offline"  # a vocab preset or a list of token sources
    n_experts: int = 4  # the first m sources of the preset (paper default 4)
    top_k: int = 10
    tau: float = 0.5
    noise: str = "paper"  # "paper" (eq. 4), "tempered", "none"
    n_heads: int = 4
    attn_dropout: float = 0.1
    alpha: float = 0.2  # weight of the consensus expert (paper default)
    consensus: bool = True  # False = the paper's "w/o SC" ablation (one round only)
    # Where the plug-in's output goes (README "The authors' MLTFR"): "input" = computed from E, added to E (eq. 18);
    # "from_input_after_first_block" = computed from E, added to block 0's output (the authors' code);
    # "after_first_block" = computed from block 0's output and added there (neither; kept for old runs).
    placement: str = "input"
    exclude_classes: tuple[str, ...] = ("special", "byte")  # vocabulary pre-filter by token class
    max_vocab: int | None = None  # optional cap: the first N kept tokens per source (speed knob)
    precision: str = "float32"  # "bfloat16": tables and the vocabulary projection in bfloat16 (speed knob)
    fisher_samples: int = 512  # training users used to estimate the Fisher information
    fisher_labels: str = "observed"  # "observed" (empirical Fisher) or "sampled" (from the model)
    round2: str = "continue"  # "continue" (Algorithm 1) or "restart" (the authors' code)
    # Which checkpoint is the final model: "both" = the best validation epoch over both rounds (round 1's optimum
    # stays a candidate); "round2" = round 2's best only (the authors' code and this toolkit before 0.1.0's fix).
    round_selection: str = "both"
    keys: str = "user"  # cross-attention keys: this user's K tokens, or "batch": every user's (the authors' code)
    token_scale: str = "straight_through"  # or "sum": w / (sum_K w + 1e-8), the authors' scaling
    expert_dropout: float = 0.0  # dropout on each expert's output before the gate (the authors': 0.1)
    eval_noise: bool = False  # keep the selection noise at evaluation (the authors' code), seeded per evaluation
    # users per evaluation batch when keys="batch" or eval_noise (results depend on it); with keys="batch" also the
    # most rows that share keys in training (a prefix-encoded batch of more windows is split: integration.grouped)
    eval_batch: int = 128
    trainable_tables: bool = False  # the token tables as parameters the optimiser updates (the authors' code)
    # "llm": the sources' real token tables; "random": MLTFR-RE, each expert's table replaced by a seeded Gaussian
    # matrix of the same shape with the real rows' norms (seed = 1000 + expert index): is it the LLM, or capacity?
    tables: str = "llm"

    def __post_init__(self):
        """Reject a mistyped option now, not after hours of round 1."""
        from mltfrkit.vocab.tokens import TokenClass

        from mltfrkit.mltfr.filter import TOKEN_SCALES
        from mltfrkit.models.base import PLACEMENTS

        choices = {"noise": ("paper", "tempered", "none"), "placement": PLACEMENTS,
                   "precision": ("float32", "bfloat16"), "fisher_labels": ("observed", "sampled"),
                   "round2": ("continue", "restart"), "round_selection": ("both", "round2"),
                   "keys": ("user", "batch"), "token_scale": TOKEN_SCALES, "tables": ("llm", "random")}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"MLTFR option {name}={getattr(self, name)!r} is not one of {list(valid)}")
        for name in ("eval_noise", "trainable_tables", "consensus"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MLTFR option {name} must be true or false, not {getattr(self, name)!r}")
        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"MLTFR option {name} must be a finite number, not {value!r} "
                                 f"(the default is {type(self).__dataclass_fields__[name].default})")
            return float(value)

        for name in ("expert_dropout", "attn_dropout"):
            if not 0.0 <= number(name) < 1.0:
                raise ValueError(f"MLTFR option {name} must be in [0, 1), not {getattr(self, name)!r}")
        if number("tau") <= 0:  # eq. (4) divides by it
            raise ValueError(f"MLTFR option tau (the selection temperature of eq. 4) must be > 0, not {self.tau!r}; "
                             f"the default is 0.5")
        if number("alpha") < 0:  # eq. (15): the consensus expert's weight
            raise ValueError(f"MLTFR option alpha (the consensus expert's weight, eq. 15) must be >= 0, not "
                             f"{self.alpha!r}; the paper uses 0.2, the authors' configs 0.01-0.2")
        if self.trainable_tables and self.precision != "float32":
            raise ValueError("trainable_tables needs precision='float32' (Adam on bfloat16 tables loses the updates); "
                             "drop precision=bfloat16 or trainable_tables")
        for name in ("n_experts", "top_k", "n_heads", "fisher_samples", "eval_batch"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"MLTFR option {name} must be a positive integer, not {getattr(self, name)!r}")
        if self.max_vocab is not None and (not isinstance(self.max_vocab, int) or self.max_vocab < self.top_k):
            raise ValueError(f"MLTFR option max_vocab must be None or an integer >= top_k ({self.top_k}), "
                             f"not {self.max_vocab!r}")
        if isinstance(self.exclude_classes, str):  # "special" means ("special",), not its letters
            self.exclude_classes = (self.exclude_classes,)
        self.exclude_classes = tuple(self.exclude_classes)
        for value in self.exclude_classes:
            TokenClass.parse(value)  # names the valid classes when one is unknown

    def to_dict(self) -> dict:
        out = asdict(self)
        out["exclude_classes"] = list(self.exclude_classes)
        return out


# Per-backbone settings from the authors' configs (REFERENCE.md section 1), our defaults too.
AUTHOR_DEFAULTS = {
    "sasrec": {"alpha": 0.01, "top_k": 1}, "cl4srec": {"alpha": 0.01, "top_k": 1},
    "bert4rec": {"alpha": 0.2, "top_k": 1}, "linrec": {"alpha": 0.1, "top_k": 1},
    "fmlprec": {"alpha": 0.05, "top_k": 10}, "bsarec": {"alpha": 0.1, "top_k": 10},
}
# Expert counts of the authors' configs; the paper's text says 4 for every backbone (our default).
AUTHOR_EXPERTS = {"sasrec": 6, "cl4srec": 6, "bsarec": 6, "bert4rec": 4, "linrec": 4, "fmlprec": 4}
# The authors' code's behaviours (REFERENCE.md sections 1 and 5), all together: `authors_configuration`.
AUTHOR_BEHAVIOURS = {"keys": "batch", "placement": "from_input_after_first_block", "token_scale": "sum",
                     "expert_dropout": 0.1, "eval_noise": True, "trainable_tables": True, "round2": "restart",
                     "round_selection": "round2", "noise": "paper"}


class Expert(nn.Module):
    def __init__(self, name: str, token_filter: TokenFilter, d_emb: int, n_heads: int, attn_dropout: float,
                 output_dropout: float = 0.0):
        super().__init__()
        self.name = name
        self.filter = token_filter
        self.integration = CrossAttentionIntegration(d_emb, token_filter.d_llm, n_heads, attn_dropout)
        self.output_dropout = nn.Dropout(output_dropout)  # the authors' Dropout(0.1) per expert; 0 = identity


class ConsensusExpert(nn.Module):
    """Frozen Fisher-weighted merge of same-width experts' integrations (eqs. 13-15). Its keys and
    values are the mean of the member experts' selected token matrices."""

    def __init__(self, members: list[int], integration: CrossAttentionIntegration):
        super().__init__()
        self.members = list(members)
        self.integration = integration
        self.integration.requires_grad_(False)

    def forward(self, E: torch.Tensor, selections: list[Selection], batch_keys: bool | int = False,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.integration(E, PickedTokens.mean([selections[m].picks for m in self.members]), batch_keys, mask)


class MLTFRPlugin(nn.Module):
    def __init__(self, tables: list[tuple[str, torch.Tensor, torch.Tensor | None]], d_emb: int,
                 config: MLTFRConfig = MLTFRConfig()):
        """``tables``: (source name, frozen (V, d_llm) tensor, kept row ids or None) per expert."""
        super().__init__()
        self.config = config
        self.experts = nn.ModuleList(
            Expert(name, TokenFilter(vocab, d_emb, config.top_k, config.tau, config.noise, keep,
                                     token_scale=config.token_scale, eval_noise=config.eval_noise, eval_seed=index,
                                     trainable_table=config.trainable_tables), d_emb,
                   config.n_heads, config.attn_dropout, config.expert_dropout)
            for index, (name, vocab, keep) in enumerate(tables))
        self.gate = nn.Linear(d_emb, len(self.experts))
        self.consensus: ConsensusExpert | None = None
        self.record = False  # keep the last selections and gate weights (token inspector)
        self.last: dict = {}
        # Set by a prefix-encoded backbone around its training windows (PrefixEncodedMixin): compute at the
        # windows' real positions only (:meth:`_forward_at_real_positions`), half of them padding on average.
        self.skip_leading_padding = False

    def set_consensus(self, consensus: ConsensusExpert | None) -> None:
        self.consensus = consensus

    def forward(self, E: torch.Tensor, mask: torch.Tensor, seqs: torch.Tensor | None = None) -> torch.Tensor:
        # "batch": rows share keys in groups of eval_batch (the authors' batch size), one group unless a
        # prefix-encoded backbone turned the batch into more windows than that (CrossAttentionIntegration.grouped)
        batch_keys = self.config.eval_batch if self.config.keys == "batch" else False
        selections = [expert.filter(E, mask) for expert in self.experts]
        if (self.skip_leading_padding and self.training and torch.is_grad_enabled() and not self.record
                and E.device.type == "cpu" and not torch.compiler.is_compiling() and mask.any()
                and (batch_keys is False or E.shape[0] > batch_keys)):
            return self._forward_at_real_positions(E, mask, selections, batch_keys)
        return self._forward_whole(E, mask, selections, batch_keys)

    def _forward_whole(self, E: torch.Tensor, mask: torch.Tensor, selections: list[Selection],
                       batch_keys: bool | int) -> torch.Tensor:
        """Eqs. (8)-(15) at every position of every row (padding positions zeroed at the end)."""
        outputs = torch.stack([expert.output_dropout(expert.integration(E, sel.picks, batch_keys, mask))
                               for expert, sel in zip(self.experts, selections)], dim=2)  # (B, L, m, d)
        gates = torch.softmax(self.gate(E), dim=-1)  # eq. (11): per-position routing
        output = (gates.unsqueeze(-1) * outputs).sum(2)  # eq. (12): W_base
        if self.consensus is not None:
            output = output + self.config.alpha * self.consensus(E, selections, batch_keys, mask)  # eq. (15)
        if self.record:
            self.last = {"selections": selections, "gates": gates.detach()}
        return output * mask.unsqueeze(-1).to(output.dtype)

    def _forward_at_real_positions(self, E: torch.Tensor, mask: torch.Tensor, selections: list[Selection],
                                   batch_keys: bool | int) -> torch.Tensor:
        """:meth:`forward` computed only from each row's first real position on: the same value up to float
        rounding, the same gradients, the same random numbers drawn in the same order.

        A prefix-encoded backbone (FMLP-Rec, BSARec) trains on one right-aligned window per position: on
        ml-100k about 5,100 windows of 50 positions per batch of 128 users, half of them leading padding, whose
        plug-in output the mask zeroes. Everything after the filter is position-wise given the row's picks (the
        queries, the per-position gate of eq. 11, the mix of eq. 12, the consensus term of eq. 15), so rows are
        bucketed by where their real positions start (rounded down to a multiple of L // 10) and each bucket is
        computed from there; the mask then zeroes the few padding positions a bucket still covers. The dropout
        multipliers are drawn whole, exactly as the full computation draws them (attention weights, then the
        expert's output, expert by expert, then the consensus), and sliced: a run trains on the same random
        stream as before. On CPU only: there ``F.dropout`` and the math path of ``F.scaled_dot_product_attention``
        draw their masks with ``bernoulli_``, as :meth:`CrossAttentionIntegration.attention_keep` does; CUDA's
        fused dropout and attention kernels draw theirs differently, so a GPU (and a compiled graph) computes
        whole windows. Grouped batch keys (``keys="batch"``: :meth:`CrossAttentionIntegration.grouped`) already
        query real positions only and are computed whole."""
        W, L, d = E.shape
        grouped = batch_keys is not False

        def integration_parts(integration: CrossAttentionIntegration, picks: PickedTokens):
            if grouped:
                return integration(E, picks, batch_keys, mask), None, None  # (W, L, d): sliced below
            k, v = integration.keys_values(picks)
            return None, (k, v), integration.attention_keep(W, L, k.shape[1], E)

        def output_keep(dropout: nn.Dropout) -> torch.Tensor | None:  # nn.Dropout's own draw
            return dropout_multiplier(E.shape, dropout.p, E) if dropout.training else None

        experts = []
        for expert, selection in zip(self.experts, selections):
            parts = integration_parts(expert.integration, selection.picks)
            experts.append((expert.integration, *parts, output_keep(expert.output_dropout)))
        consensus = None
        if self.consensus is not None:
            picks = PickedTokens.mean([selections[m].picks for m in self.consensus.members])
            consensus = (self.consensus.integration, *integration_parts(self.consensus.integration, picks), None)

        def part(integration, whole, kv, keep, out_keep, rows, start, E_b):
            if whole is not None:
                out = whole[rows, start:]
            else:
                out = integration.attend(E_b, kv[0][rows], kv[1][rows], None if keep is None else keep[rows, :, start:])
            return out if out_keep is None else out * out_keep[rows, start:]

        real = mask.any(1)
        first = torch.where(real, mask.to(torch.int8).argmax(1), L)  # each row's first real position
        step = max(1, L // 10)
        starts = first.div(step, rounding_mode="floor") * step
        # One index_put of every bucket at the end, not ``result[rows, start:] = output`` per bucket: timed side
        # by side (forward + backward of 2,000 windows, one thread), the per-bucket writes were the slower.
        index_rows, index_cols, values = [], [], []
        for start in starts[real].unique().tolist():
            rows = (starts == start).nonzero(as_tuple=True)[0]
            E_b = E[rows, start:]
            outputs = torch.stack([part(*expert, rows, start, E_b) for expert in experts], dim=2)
            gates = torch.softmax(self.gate(E_b), dim=-1)  # eq. (11)
            output = (gates.unsqueeze(-1) * outputs).sum(2)  # eq. (12)
            if consensus is not None:
                output = output + self.config.alpha * part(*consensus, rows, start, E_b)  # eq. (15)
            index_rows.append(rows.repeat_interleave(L - start))
            index_cols.append(torch.arange(start, L, device=E.device).repeat(len(rows)))
            values.append(output.reshape(-1, d))
        result = E.new_zeros(W, L, d)
        if values:
            result = result.index_put((torch.cat(index_rows), torch.cat(index_cols)), torch.cat(values))
        return result * mask.unsqueeze(-1).to(result.dtype)

    def eval_batch_users(self) -> int | None:
        """A fixed evaluation batch when a user's scores depend on its batch (``keys="batch"``) or on the
        noise stream's order (``eval_noise``): users are then scored ``eval_batch`` at a time in dataset
        order, so an evaluation is deterministic. None: any chunking gives the same scores."""
        return self.config.eval_batch if self.config.keys == "batch" or self.config.eval_noise else None

    def padding_free_scores(self) -> bool:
        """Whether a user's scores are those of its real positions alone: the interest vector (eq. 1) is a
        mask-aware mean and everything after the filter is position-wise, so yes, unless the keys are shared
        by a batch or evaluation draws noise (then users are scored in fixed batches: :meth:`eval_batch_users`)."""
        return self.eval_batch_users() is None

    def begin_evaluation(self) -> None:
        """Called by the evaluator before scoring: restarts every filter's evaluation-noise stream."""
        for expert in self.experts:
            expert.filter.reset_eval_noise()

    def eval_bytes_per_user(self) -> int:
        """Evaluation memory per user: each expert's similarity row and its top-K workspace."""
        return sum(3 * 4 * expert.filter.vocab.shape[0] for expert in self.experts)

    def same_width_groups(self) -> list[list[int]]:
        """Experts grouped by d_llm: only same-width experts can be merged parameter-wise."""
        groups: dict[int, list[int]] = {}
        for index, expert in enumerate(self.experts):
            groups.setdefault(expert.filter.d_llm, []).append(index)
        return list(groups.values())

    def consensus_group(self) -> list[int]:
        """The largest same-width group with at least two experts (first on ties); [] if none."""
        groups = [g for g in self.same_width_groups() if len(g) >= 2]
        return max(groups, key=len) if groups else []
