"""How sharp is the selection? For a trained model: the similarity percentile of the tokens each
noise mode selects (100 = the user's most similar token), and how much of the vocabulary any
user ever selects. Eq. (4)'s ``(s + g) / tau`` with s in [-1, 1] is expected to pick almost at
random from a large vocabulary (REFERENCE.md section 1); this measures it."""

from __future__ import annotations

import re

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


# -- Does the user-guided filter select task-relevant tokens? (paper section 2.1, Fig. 1 upper panel) ----
# Words too common to say anything about what a user watched or bought.
STOP_WORDS = frozenset("""a an and are as at be by de del der des die du el for from his her in is it its
la le les los my no not of on or our the their this to un une und with your you""".split())
TITLE_WORD = re.compile(r"[^\W\d_][\w'&-]*[^\W_]|[^\W\d_]", re.UNICODE)


def title_words(title: str) -> list[str]:
    """The content words of an item title: letters (years, numbers and punctuation dropped), lower-cased,
    stop words and single letters out. "Toy Story (1995)" -> ["toy", "story"]."""
    return [w for w in (m.group(0).lower() for m in TITLE_WORD.finditer(title or ""))
            if len(w) > 1 and w not in STOP_WORDS]


class TitleSpace:
    """One token source's own embedding space, for judging what its expert selected.

    Rows are the source's real table (never a trained or randomised copy: an MLTFR-RE run is judged in
    the LLM's space too), centred on the mean of the kept vocabulary (LLM token tables share a common
    direction that would make every cosine look alike) and L2-normalised. A title word maps to the
    tokens that spell it (:func:`mltfrkit.vocab.neighbours.find_word`: the whole word when the vocabulary
    has it, else word-start + pieces), looked up in the *full* vocabulary, so a title word is not lost
    because the expert's vocabulary cap dropped it."""

    def __init__(self, name: str, keep_ids: torch.Tensor):
        from mltfrkit.vocab import load_table
        from mltfrkit.vocab.neighbours import WordIndex

        self.name = name
        self.table = load_table(name)
        self.keep_ids = keep_ids.cpu().long()
        kept = torch.from_numpy(np.asarray(self.table.matrix[self.keep_ids.numpy()], dtype=np.float32))
        self.mean = kept.mean(0)
        self.kept = torch.nn.functional.normalize(kept - self.mean, dim=-1)  # (V', d_llm)
        self.index = WordIndex(self.table)
        self._items: dict[int, torch.Tensor | None] = {}

    def item_vector(self, item: int, title: str | None) -> torch.Tensor | None:
        """Mean of the normalised, centred vectors of the tokens spelling the title's words (None: no word)."""
        if item not in self._items:
            from mltfrkit.vocab.neighbours import find_word

            ids = []
            for word in title_words(title or ""):
                try:
                    ids.extend(find_word(self.table, word, self.index))
                except KeyError:  # cannot be spelled in this vocabulary: it says nothing here
                    continue
            if not ids:
                self._items[item] = None
            else:
                rows = torch.from_numpy(np.asarray(self.table.matrix[sorted(set(ids))], dtype=np.float32))
                self._items[item] = torch.nn.functional.normalize(rows - self.mean, dim=-1).mean(0)
        return self._items[item]

    def history_direction(self, history: np.ndarray, titles: dict[int, str]) -> torch.Tensor | None:
        """Where the user's history points in this space: the normalised mean of its titles' vectors."""
        vectors = [v for v in (self.item_vector(int(i), titles.get(int(i))) for i in history) if v is not None]
        if not vectors:
            return None
        return torch.nn.functional.normalize(torch.stack(vectors).mean(0), dim=0)


def token_percentiles(relevance: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """Percentile of each picked token's relevance among all V tokens: the share of the *other* tokens
    scoring lower, ties counting half, so a uniformly random pick averages exactly 50 and the most
    relevant token scores 100."""
    chosen = relevance[picked]
    below = (relevance.unsqueeze(0) < chosen.unsqueeze(1)).sum(1).float()
    ties = (relevance.unsqueeze(0) == chosen.unsqueeze(1)).sum(1).float() - 1  # minus the token itself
    return 100.0 * (below + 0.5 * ties) / (len(relevance) - 1)


def relevance_percentiles(model, histories: list[np.ndarray], titles: dict[int, str], modes=NOISE_MODES,
                          seed: int = 0, spaces: dict[str, TitleSpace] | None = None,
                          users: list[int] | None = None) -> pd.DataFrame:
    """Per (user, expert, noise mode): how related the selected tokens are to the user's history titles,
    as a percentile against the expert's whole (capped) vocabulary.

    For user u and expert e, every kept token v gets the relevance ``cos(v, h_u)`` in e's own LLM space
    (:class:`TitleSpace`), where h_u is the direction of the titles of the items the model sees (the last
    ``max_len`` of the history). A selected token's percentile is the share of kept tokens less relevant
    than it (ties count half): the expected percentile of tokens drawn at random from the same vocabulary
    is exactly 50, so **a percentile near 50 means the selection is unrelated to what the user watched**;
    100 would mean the filter picks the tokens closest to the user's titles. One row per user and
    expert and mode with the mean over the K selected tokens (``percentile``), users whose visible
    history has no title word in the vocabulary left out. ``users``: the user index of each history (default
    its position)."""
    plugin = model.plugin
    max_len = model.config.max_len
    inputs = capture_plugin_inputs(model, histories)
    visible = [h[-max_len:] for h in histories]
    spaces = {} if spaces is None else spaces
    rows = []
    for number, expert in enumerate(plugin.experts):
        filt = expert.filter
        if expert.name not in spaces:
            spaces[expert.name] = TitleSpace(expert.name, filt.keep_ids)
        space = spaces[expert.name]
        directions = [space.history_direction(h, titles) for h in visible]
        for mode in modes:
            generator = torch.Generator().manual_seed(seed + number)
            start = 0
            for E, mask in inputs:
                s = filt.similarity(E, mask)
                picked = filt.selection_logits(s, mode, generator).topk(filt.top_k, dim=-1).indices.cpu()
                for row in range(s.shape[0]):
                    user, direction = start + row, directions[start + row]
                    if direction is None:
                        continue
                    relevance = space.kept @ direction  # (V',)
                    rows.append({"user": user if users is None else users[user], "expert": expert.name,
                                 "noise": mode, "K": filt.top_k, "V": len(relevance),
                                 "percentile": float(token_percentiles(relevance, picked[row]).mean())})
                start += s.shape[0]
    return pd.DataFrame(rows, columns=["user", "expert", "noise", "K", "V", "percentile"])


RELEVANCE_RULE = ("relevant: the 95% interval over users lies above 50 and the mean is at least 55; "
                  "barely above chance: above 50 but the mean below 55; chance: the interval contains 50; "
                  "below chance: the interval lies below 50")


def relevance_verdict(mean: float, low: float, high: float) -> str:
    """:data:`RELEVANCE_RULE`: an interval that excludes 50 is not enough on its own (with a thousand users a
    one-point excess is significant and means nothing), so "relevant" also needs five points over chance."""
    if low > 50:
        return "relevant" if mean >= 55 else "barely above chance"
    return "below chance" if high < 50 else "chance"


def relevance_report(run_dir, data_dir=None, modes=NOISE_MODES, max_users: int | None = None, seed: int = 0,
                     untrained: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, per-user frame) of :func:`relevance_percentiles` for a stored MLTFR run on its test users,
    for the trained model and (``untrained``) the same architecture freshly initialised with the run's seed:
    what the selection is worth before any training. ``max_users`` samples test users (seeded)."""
    from mltfrkit.runs import build_model, load_trained

    spec, split, model = load_trained(run_dir, data_dir)
    if model.plugin is None or not hasattr(model.plugin, "experts"):
        raise ValueError(f"{run_dir} is not an MLTFR run: nothing selects tokens there")
    titles = split.item_titles
    if not titles:
        raise ValueError(f"{split.name} has no item titles, so the relevance of the selected tokens cannot be "
                         f"measured; use a dataset with titles (ml-100k, or one whose titles the toolkit reads)")
    histories, _ = split.eval_pairs("test")
    users = list(range(len(histories)))
    if max_users is not None and max_users < len(histories):
        users = np.sort(np.random.default_rng(seed).choice(len(histories), max_users, replace=False)).tolist()
        histories = [histories[i] for i in users]
    models = [("trained", model)]
    if untrained:
        fresh, _ = build_model(spec, split.n_items)
        models.append(("untrained", fresh))
    spaces, frames = {}, []
    for label, candidate in models:
        candidate.eval()
        frame = relevance_percentiles(candidate, histories, titles, modes, seed, spaces, users)
        frame.insert(0, "model", label)
        frames.append(frame)
    per_user = pd.concat(frames, ignore_index=True)
    return summarise_relevance(per_user), per_user


def summarise_relevance(per_user: pd.DataFrame, by=("model", "expert", "noise"), n_boot: int = 2000,
                        seed: int = 0) -> pd.DataFrame:
    """Mean percentile per group with a bootstrap 95% interval over users, the share of users above 50,
    and a verdict per row (:data:`RELEVANCE_RULE`)."""
    rng = np.random.default_rng(seed)
    out = []
    for key, frame in per_user.groupby(list(by), sort=False):
        values = frame["percentile"].to_numpy()
        means = rng.choice(values, size=(n_boot, len(values)), replace=True).mean(1)
        low, high = np.percentile(means, [2.5, 97.5])
        verdict = relevance_verdict(float(values.mean()), float(low), float(high))
        out.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "users": len(values),
                    "mean percentile": float(values.mean()), "CI low": float(low), "CI high": float(high),
                    "share of users above 50": float((values > 50).mean()), "verdict": verdict})
    return pd.DataFrame(out)


def relevance_gain(per_user: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """What training adds: per (expert, noise mode), the trained model's percentile minus the untrained
    one's, paired by user, with a bootstrap 95% interval. The untrained model is the right baseline for
    the claim: a random interest vector already favours some kinds of token (whole words over pieces and
    punctuation, say), which the vocabulary-wide 50 does not control for."""
    rng = np.random.default_rng(seed)
    wide = per_user.pivot_table(index=["expert", "noise", "user"], columns="model", values="percentile")
    if not {"trained", "untrained"} <= set(wide.columns):
        return pd.DataFrame(columns=["expert", "noise", "users", "trained - untrained", "CI low", "CI high"])
    out = []
    for (expert, noise), frame in wide.dropna().groupby(level=["expert", "noise"], sort=False):
        diff = (frame["trained"] - frame["untrained"]).to_numpy()
        means = rng.choice(diff, size=(n_boot, len(diff)), replace=True).mean(1)
        low, high = np.percentile(means, [2.5, 97.5])
        out.append({"expert": expert, "noise": noise, "users": len(diff), "trained - untrained": float(diff.mean()),
                    "CI low": float(low), "CI high": float(high)})
    return pd.DataFrame(out)


def relevance_sentence(summary: pd.DataFrame, noise: str = "none", gain: pd.DataFrame | None = None) -> str:
    """The one-line verdict of :func:`summarise_relevance`'s table for one noise mode (default: evaluation's
    deterministic selection): per model, each expert's mean percentile and verdict."""
    parts = []
    for model, frame in summary[summary["noise"] == noise].groupby("model", sort=False):
        experts = ", ".join(f"{row['expert']} {row['mean percentile']:.0f} ({row['verdict']})"
                            for _, row in frame.iterrows())
        parts.append(f"{model}: {experts}")
    line = (f"Relevance of the selected tokens to the user's history titles (noise={noise}; percentile, "
            f"50 = a random token of the same vocabulary): " + "; ".join(parts) + ".")
    if gain is not None and len(gain):
        rows = gain[gain["noise"] == noise]
        line += " Training adds: " + ", ".join(
            f"{row['expert']} {row['trained - untrained']:+.1f} points [{row['CI low']:+.1f}, {row['CI high']:+.1f}]"
            for _, row in rows.iterrows()) + "."
    return line
