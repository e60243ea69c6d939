"""How sharp is the selection? For a trained model: the similarity percentile of the tokens each
noise mode selects (100 = the user's most similar token), and how much of the vocabulary any
user ever selects. Eq. (4)'s ``(s + g) / tau`` with s in [-1, 1] is expected to pick almost at
random from a large vocabulary (REFERENCE.md section 1); this measures it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from mltfrkit.mltfr.filter import NOISE_MODES
from mltfrkit.train.metrics import pad_left


@torch.no_grad()
def capture_plugin_inputs(model, histories: list[np.ndarray], batch_size: int = 256):
    """(E, mask) batches exactly as the plug-in receives them at evaluation."""
    captured = []
    handle = model.plugin.register_forward_pre_hook(lambda module, args: captured.append((args[0], args[1])))
    model.eval()
    try:
        for start in range(0, len(histories), batch_size):
            model.score_all(pad_left(histories[start:start + batch_size], model.config.max_len))
    finally:
        handle.remove()
    return captured


@torch.no_grad()
def selection_diagnostic(model, histories: list[np.ndarray], modes=NOISE_MODES, top_k: int | None = None,
                         seed: int = 0) -> pd.DataFrame:
    """One row per (expert, noise mode): mean similarity percentile of the selected tokens and
    the fraction of the (pre-filtered) vocabulary selected by at least one user."""
    plugin = model.plugin
    inputs = capture_plugin_inputs(model, histories)
    rows = []
    for expert in plugin.experts:
        filt = expert.filter
        k = top_k or filt.top_k
        for mode in modes:
            generator = torch.Generator().manual_seed(seed)
            percentiles, ever = [], torch.zeros(filt.vocab.shape[0], dtype=torch.bool)
            for E, mask in inputs:
                s = filt.similarity(E, mask)
                picked = filt.selection_logits(s, mode, generator).topk(k, dim=-1).indices
                picked_s = s.gather(1, picked)
                below = torch.searchsorted(s.sort(dim=-1).values, picked_s)  # tokens scoring lower
                percentiles.append(100.0 * below.flatten().float() / s.shape[1])
                ever[picked.flatten()] = True
            rows.append({"expert": expert.name, "noise": mode, "K": k, "V": int(filt.vocab.shape[0]),
                         "mean_percentile": float(torch.cat(percentiles).mean()),
                         "vocab_fraction_selected": float(ever.float().mean()),
                         "distinct_tokens": int(ever.sum())})
    return pd.DataFrame(rows)
