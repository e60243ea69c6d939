"""Token inspector: what each MLTFR expert selects for a user, from a stored run (no retraining).

:func:`load_run` rebuilds the model of a finished MLTFR run from its directory (the best weights
of its last round, with the consensus expert of round 2 when there is one); :meth:`LoadedRun.inspect`
runs one user's history through it and returns plain tables: the history (with titles where the
dataset has them), each expert's top-K tokens in display form with cosine score and
straight-through weight, and the gate weights per position. K and the noise mode can differ from
the trained ones: evaluation is deterministic (``noise="none"``), ``paper``/``tempered`` draw the
training-time Gumbel noise from a seeded generator, so a selection is reproducible.

:class:`TokenInspector` wraps this in ipywidgets (run, searchable user, expert, K, noise, seed).
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mltfrkit.store import ResultStore
from mltfrkit.train.metrics import pad_left

NOISE_CHOICES = ("none", "paper", "tempered")  # "none" = what evaluation does


def mltfr_runs(store: ResultStore | None = None) -> pd.DataFrame:
    """Finished MLTFR runs in a store (one row each), newest configuration options included; runs imported
    from a result archive are left out (their weights stayed behind: there is nothing to inspect)."""
    records = (store or ResultStore()).records()
    if records.empty:
        return records
    return records[(records["plugin"] == "mltfr") & ~records["imported"]].reset_index(drop=True)


def run_label(row) -> str:
    consensus = "" if row.get("consensus", True) else ", w/o SC"
    return (f"{row['dataset']} {row['backbone']} m={int(row['n_experts'])} K={int(row['top_k'])} "
            f"noise={row['noise']}{consensus} seed={row['seed']} ({Path(row['run_dir']).name[-16:]})")


@dataclass
class Inspection:
    user: str
    history: pd.DataFrame  # position, item, item_id, title
    tokens: dict[str, pd.DataFrame]  # expert -> rank, token_id, token, score, weight, in_eval_selection, relevance
    gates: pd.DataFrame  # positions x experts
    top_k: int
    noise: str


@dataclass
class LoadedRun:
    run_dir: Path
    result: dict
    spec: object
    split: object
    model: torch.nn.Module
    plugin: object
    round: int
    displays: list = field(default_factory=list)  # per expert: the token table's display strings
    spaces: dict = field(default_factory=dict)  # expert name -> TitleSpace (built on first use)

    def title_space(self, expert):
        """The expert's LLM space for judging relevance to titles (:class:`~mltfrkit.mltfr.diagnostics.TitleSpace`)."""
        from mltfrkit.mltfr.diagnostics import TitleSpace

        if expert.name not in self.spaces:
            self.spaces[expert.name] = TitleSpace(expert.name, expert.filter.keep_ids)
        return self.spaces[expert.name]

    @property
    def expert_names(self) -> list[str]:
        return [expert.name for expert in self.plugin.experts]

    @property
    def user_ids(self) -> list[str]:
        return [str(u) for u in self.split.user_ids]

    def user_index(self, user: str | int) -> int:
        if isinstance(user, (int, np.integer)):
            return int(user)
        try:
            return self.user_ids.index(str(user))
        except ValueError:
            raise KeyError(f"unknown user {user!r} in {self.split.name}") from None

    def _title(self, item: int) -> str:
        titles = self.split.item_titles or {}
        return titles.get(int(item), "")

    def _relevance(self, expert, items: list[int], token_ids: list[int]) -> list[float]:
        """Each selected token's relevance percentile to the titles of the history the model sees (the
        token-inspector notebook's relevance section; 50 = as related as a random token of the same
        vocabulary). NaN without titles."""
        from mltfrkit.mltfr.diagnostics import token_percentiles

        titles = self.split.item_titles
        if not titles:
            return [float("nan")] * len(token_ids)
        space = self.title_space(expert)
        direction = space.history_direction(np.asarray([i for i in items if i <= self.split.n_items]), titles)
        if direction is None:
            return [float("nan")] * len(token_ids)
        rows = torch.searchsorted(space.keep_ids, torch.as_tensor(token_ids, dtype=torch.long))
        return token_percentiles(space.kept @ direction, rows).tolist()

    @torch.no_grad()
    def inspect(self, user: str | int, top_k: int | None = None, noise: str = "none", seed: int = 0) -> Inspection:
        """The user's test-time view: history = every item but the held-out test item."""
        if noise not in NOISE_CHOICES:
            raise ValueError(f"noise must be one of {NOISE_CHOICES}, not {noise!r}")
        index = self.user_index(user)
        top_k = int(top_k or self.plugin.config.top_k)
        history = pad_left([self.split.sequences[index][:-1]], self.model.config.max_len)
        seqs = self.model.eval_input(history)
        captured = {}
        hook = self.plugin.register_forward_pre_hook(lambda module, args: captured.update(E=args[0], mask=args[1]))
        self.plugin.record = True
        try:
            self.model.score_all(history)
        finally:
            hook.remove()
            self.plugin.record = False
        E, mask = captured["E"], captured["mask"]
        keep = mask[0].bool()
        items = seqs[0][keep].tolist()
        rows = [{"position": p + 1, "item": i,
                 "item_id": str(self.split.item_ids[i]) if i <= self.split.n_items else "[mask]",
                 "title": self._title(i) if i <= self.split.n_items else ""} for p, i in enumerate(items)]
        history_table = pd.DataFrame(rows, columns=["position", "item", "item_id", "title"])
        gates = self.plugin.last["gates"][0][keep].cpu().numpy()
        gate_table = pd.DataFrame(gates, columns=self.expert_names, index=history_table["position"])

        tokens = {}
        for expert, display in zip(self.plugin.experts, self.displays):
            token_filter = expert.filter
            reference = token_filter(E, mask, top_k=top_k, noise="none")  # evaluation: deterministic
            if noise == "none":
                selection = reference
            else:
                token_filter.train()
                try:
                    selection = token_filter(E, mask, top_k=top_k, noise=noise,
                                             generator=torch.Generator(device=E.device).manual_seed(seed))
                finally:
                    token_filter.eval()
            ids = selection.token_ids[0].tolist()
            in_eval = set(reference.token_ids[0].tolist())
            tokens[expert.name] = pd.DataFrame({
                "rank": range(1, len(ids) + 1), "token_id": ids, "token": [display[i] for i in ids],
                "score": selection.scores[0].cpu().numpy(), "weight": selection.weights[0].cpu().numpy(),
                "in_eval_selection": [i in in_eval for i in ids],
                "relevance": self._relevance(expert, items, ids)})
        return Inspection(user=self.user_ids[index], history=history_table, tokens=tokens, gates=gate_table,
                          top_k=top_k, noise=noise)


def load_run(run_dir: str | Path, data_dir: str | None = None, device: str = "cpu") -> LoadedRun:
    """A finished MLTFR run, rebuilt from its directory by :func:`mltfrkit.runs.load_trained` (best
    weights of its last round, consensus expert included): nothing is retrained."""
    from mltfrkit.runs import load_trained
    from mltfrkit.vocab import load_table

    run_dir = Path(run_dir)
    result_file = run_dir / "result.json"
    if not result_file.exists():
        raise FileNotFoundError(f"{run_dir} has no result.json: the run has not finished")
    from mltfrkit.store import read_result

    result = read_result(result_file)
    if result is None:
        raise ValueError(f"{result_file} is not a valid result file: re-run the run's training command "
                         f"(it resumes from the checkpoint and rewrites the file)")
    if result["config"].get("plugin") != "mltfr":
        raise ValueError(f"{run_dir} is a {result['config'].get('plugin')!r} run; the inspector needs an MLTFR run")
    spec, split, model = load_trained(run_dir, data_dir)
    model.to(device).eval()
    plugin = model.plugin
    last = 2 if (run_dir / "round2" / "checkpoint.pt").exists() else 1
    displays = [load_table(expert.name).display for expert in plugin.experts]
    return LoadedRun(run_dir, result, spec, split, model, plugin, last, displays)


# -- widgets ----------------------------------------------------------------------------------
def _table_html(frame: pd.DataFrame, caption: str = "", highlight: str | None = None) -> str:
    styled = frame.copy()
    for column in ("score", "weight"):
        if column in styled:
            styled[column] = styled[column].map(lambda v: f"{v:.4f}")
    if "relevance" in styled:
        styled["relevance"] = styled["relevance"].map(lambda v: "" if pd.isna(v) else f"{v:.0f}")
    body = styled.to_html(index=False, escape=True, border=0)
    head = f"<b>{html.escape(caption)}</b>" if caption else ""
    style = ' style="border:2px solid #e69f00;padding:4px"' if highlight else ' style="padding:4px"'
    return f"<div{style}>{head}{body}</div>"


class TokenInspector:
    """ipywidgets front end: pick a run, a user (type to search), an expert, K, the noise mode."""

    MAX_USER_OPTIONS = 300

    def __init__(self, store: ResultStore | None = None, runs: pd.DataFrame | None = None,
                 data_dir: str | None = None, device: str = "cpu"):
        import ipywidgets as w

        self.store = store or ResultStore()
        self.runs = runs if runs is not None else mltfr_runs(self.store)
        if self.runs.empty:
            raise LookupError(f"no finished MLTFR run in {self.store.root}; train one first "
                              f"(e.g. the table2 notebook)")
        self.data_dir = data_dir if data_dir is not None else self.store.data_dir
        self.device = device
        self._loaded: dict[str, LoadedRun] = {}
        self.loaded: LoadedRun | None = None
        self.current: Inspection | None = None
        self._busy = False

        self.run = w.Dropdown(options=[(run_label(r), r["run_dir"]) for _, r in self.runs.iterrows()],
                              description="run", layout=w.Layout(width="95%"))
        self.search = w.Text(description="search user", placeholder="part of a user id")
        self.user = w.Dropdown(description="user")
        self.expert = w.Dropdown(description="expert")
        self.k = w.IntSlider(description="K", min=1, max=50, value=1, continuous_update=False)
        self.noise = w.ToggleButtons(description="noise", options=list(NOISE_CHOICES), value="none")
        self.seed = w.IntText(description="noise seed", value=0)
        self.status = w.HTML()
        self.history_html = w.HTML()
        self.tokens_html = w.HTML()
        self.gates_image = w.Image(format="png")
        self.gates_figure = None

        self.run.observe(lambda change: self._on_run(), names="value")
        self.search.observe(lambda change: self._on_search(), names="value")
        for control in (self.user, self.expert, self.k, self.noise, self.seed):
            control.observe(lambda change: self.refresh(), names="value")
        self.widget = w.VBox([
            self.run, w.HBox([self.search, self.user]), w.HBox([self.expert, self.k]),
            w.HBox([self.noise, self.seed]), self.status,
            w.HBox([w.VBox([w.HTML("<h4>history</h4>"), self.history_html]),
                    w.VBox([w.HTML("<h4>selected tokens</h4>"), self.tokens_html]),
                    w.VBox([w.HTML("<h4>gates</h4>"), self.gates_image])])])
        self._on_run()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # -- callbacks ----------------------------------------------------------------------
    def _on_run(self):
        run_dir = self.run.value
        if run_dir not in self._loaded:
            self._loaded[run_dir] = load_run(run_dir, self.data_dir, self.device)
        self.loaded = self._loaded[run_dir]
        self._busy = True
        try:
            self.expert.options = ["all"] + self.loaded.expert_names
            self.expert.value = "all"
            self.k.value = int(self.loaded.plugin.config.top_k)
            self._on_search()
        finally:
            self._busy = False
        self.refresh()

    def matching_users(self, text: str) -> list[str]:
        text = text.strip().lower()
        users = self.loaded.user_ids
        hits = [u for u in users if text in u.lower()] if text else users
        return hits[:self.MAX_USER_OPTIONS]

    def show_user(self, user) -> None:
        """Open a user by exact id (as the search box and the dropdown would)."""
        user = str(user)
        if user not in self.loaded.user_ids:
            close = self.matching_users(user)[:5]
            raise LookupError(f"no user {user!r} in {self.loaded.split.name}"
                              + (f"; ids containing it: {close}" if close else "; search with part of an id"))
        self.search.value = user
        self.user.value = user

    def _on_search(self):
        hits = self.matching_users(self.search.value)
        busy, self._busy = self._busy, True
        try:
            previous = self.user.value
            self.user.options = hits
            self.user.value = previous if previous in hits else (hits[0] if hits else None)
        finally:
            self._busy = busy
        self.status.value = f"{len(hits)} matching users" + (" (first shown)" if len(hits) ==
                                                               self.MAX_USER_OPTIONS else "")
        if not busy:
            self.refresh()

    def refresh(self):
        if self._busy or self.loaded is None or self.user.value is None:
            return
        self.current = self.loaded.inspect(self.user.value, top_k=self.k.value, noise=self.noise.value,
                                           seed=self.seed.value)
        self.history_html.value = _table_html(self.current.history[["position", "item_id", "title"]],
                                              f"user {self.current.user}: {len(self.current.history)} items")
        experts = self.loaded.expert_names if self.expert.value == "all" else [self.expert.value]
        parts = []
        for name in experts:
            frame = self.current.tokens[name]
            changed = int((~frame["in_eval_selection"]).sum())
            caption = (f"{name}: top-{self.current.top_k}, noise={self.current.noise}"
                       + (f" ({changed} not in the deterministic selection)" if self.current.noise != "none" else ""))
            if frame["relevance"].notna().any():
                caption += f"; relevance to the history's titles: percentile {frame['relevance'].mean():.0f} (50 = chance)"
            parts.append(_table_html(frame[["rank", "token", "score", "weight", "in_eval_selection", "relevance"]],
                                     caption,
                                     highlight=name if self.expert.value == name else None))
        self.tokens_html.value = "".join(parts)
        self._draw_gates()

    def _draw_gates(self):
        from matplotlib.figure import Figure

        from mltfrkit.viz import plot_gates

        history = self.current.history
        labels = [f"{p} {t[:28]}" if t else f"{p} {i}" for p, i, t in
                  history[["position", "item_id", "title"]].itertuples(index=False)]
        # A bare Figure (no pyplot): shown only inside the widget, never again by the inline backend.
        figure = Figure(figsize=(1.6 + 1.1 * len(self.loaded.expert_names), 0.9 + 0.22 * len(history)))
        plot_gates(self.current.gates.to_numpy(), self.loaded.expert_names, labels, ax=figure.subplots())
        self.gates_figure = figure
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        self.gates_image.value = buffer.getvalue()
