"""Figures for the notebooks, drawn from the tables of :mod:`mltfrkit.experiments`.

Every ``plot_*`` returns a matplotlib Figure; :func:`save_figure` writes it as PNG and PDF into
``figures/`` (or ``$MLTFR_FIGURES_DIR``) with the dataset in the file name, e.g.
``figures/table2-ml-100k.png``; :func:`save_table` writes the table beside it as CSV. Each ``plot_*``
takes a ``title_tag`` (:attr:`mltfrkit.experiments.Experiment.title_tag`) that names the profile in the
title, so a figure made under a reduced profile says so wherever it is pasted.

The notebooks show tables through :func:`readable` (mean ± std, the paper's figure beside ours, no empty
columns); the CSV keeps the raw frame, one number per cell.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

METRICS = ("HR@20", "NDCG@20")


def _plt():
    import matplotlib.pyplot as plt  # headless: matplotlib falls back to Agg by itself

    return plt


def figures_dir(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get("MLTFR_FIGURES_DIR") or "figures")


def save_figure(fig, name: str, dataset: str, directory: str | os.PathLike | None = None) -> list[Path]:
    """Write ``<directory>/<name>-<dataset>.png`` and ``.pdf``; returns both paths."""
    directory = figures_dir(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{re.sub(r'[^A-Za-z0-9._+-]+', '_', dataset)}"
    paths = [directory / f"{stem}.png", directory / f"{stem}.pdf"]
    for path in paths:
        fig.savefig(path, bbox_inches="tight", dpi=150 if path.suffix == ".png" else None)
    return paths


def _suptitle(fig, text: str, **kwargs) -> None:
    """The figure's title, wrapped to the figure's width (a profile tag makes it long): about 10
    characters per inch at the default 12 points."""
    points = kwargs.get("fontsize", 12)
    points = points if isinstance(points, (int, float)) else 12
    fig.suptitle(textwrap.fill(text, width=max(40, int(fig.get_figwidth() * 10 * 12 / points)), break_on_hyphens=False),
                 **kwargs)


def _errors(frame: pd.DataFrame, metric: str):
    column = f"{metric} std"
    return frame[column].to_numpy() if column in frame else None


def plot_te_vs_re(table: pd.DataFrame, dataset: str, title_tag: str = ""):
    """Fig. 1: LLM-TE and LLM-RE bars per token source, the backbone without LLM as a dashed line; one
    row of panels per backbone (the paper's Fig. 1 is SASRec's row alone)."""
    plt = _plt()
    backbones = list(dict.fromkeys(table["backbone"]))
    sources = list(dict.fromkeys(table.loc[table["method"] != "W/O", "source"]))
    fig, axes = plt.subplots(len(backbones), len(METRICS), figsize=(5 + 1.2 * len(sources), 3.6 * len(backbones)),
                             squeeze=False)
    width = 0.38
    x = np.arange(len(sources))
    for row, backbone in zip(axes, backbones):
        own = table[table["backbone"] == backbone]
        base = own[own["method"] == "W/O"]
        injected = own[own["method"] != "W/O"]
        for ax, metric in zip(row, METRICS):
            for offset, (method, colour) in zip((-width / 2, width / 2),
                                                (("LLM-TE", "tab:blue"), ("LLM-RE", "tab:gray"))):
                rows = injected[injected["method"] == method].set_index("source").reindex(sources)
                ax.bar(x + offset, rows[metric], width, yerr=_errors(rows, metric), label=method, color=colour,
                       capsize=3)
            if len(base):
                ax.axhline(float(base[metric].iloc[0]), color="black", linestyle="--", linewidth=1.2,
                           label=f"{backbone} w/o LLM")
            ax.set_xticks(x, sources, rotation=25, ha="right", fontsize=8)
            ax.set_ylabel(metric)
            ax.set_title(f"{backbone}: {metric}" if len(backbones) > 1 else metric)
        row[0].legend(fontsize=8)
    _suptitle(fig, f"LLM-TE vs LLM-RE ({', '.join(backbones)}) on {dataset}{title_tag}")
    fig.tight_layout()
    return fig


def _paired_bars(table: pd.DataFrame, labels: tuple[str, ...], dataset: str, title: str, title_tag: str = ""):
    plt = _plt()
    backbones = table["backbone"].tolist()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(max(7.0, 3 + 0.8 * len(labels) * len(backbones)), 3.8),
                             squeeze=False)
    width = 0.76 / len(labels)
    x = np.arange(len(backbones))
    colours = ["tab:gray", "tab:orange", "tab:blue", "tab:green"]
    placed = [(width * (i - (len(labels) - 1) / 2), label, colours[i % 4]) for i, label in enumerate(labels)]
    for ax, metric in zip(axes[0], METRICS):
        for offset, label, colour in placed:
            std = table.get(f"{label} {metric} std")
            ax.bar(x + offset, table[f"{label} {metric}"], width, yerr=None if std is None else std, label=label,
                   color=colour, capsize=3)
            paper = f"paper {label} {metric}"
            if paper in table:
                ax.scatter(x + offset, table[paper], marker="_", s=300, color="black", zorder=3,
                           label="paper" if label == labels[0] else None)
        ax.set_xticks(x, backbones)
        ax.set_ylabel(metric)
        ax.set_title(metric)
    axes[0][0].legend(fontsize=8)
    _suptitle(fig, f"{title} on {dataset}{title_tag}")
    fig.tight_layout()
    return fig


def plot_table2(table: pd.DataFrame, dataset: str, title_tag: str = ""):
    """Table 2 as grouped bars: without vs with MLTFR per backbone (paper's figures as ticks), plus the
    controls the table carries (W/O 2-round, MLTFR-RE)."""
    controls = tuple(label for label in ("W/O 2-round", "MLTFR-RE") if f"{label} HR@20" in table)
    return _paired_bars(table, ("W/O", "MLTFR") + controls, dataset, "Table 2", title_tag)


def plot_relevance(per_user: pd.DataFrame, dataset: str, title_tag: str = ""):
    """Relevance percentiles of the selected tokens (:func:`mltfrkit.mltfr.diagnostics.relevance_report`):
    one panel per noise mode, a box per expert and model (trained / untrained) over users, the chance
    level (50) dashed."""
    plt = _plt()
    modes = list(dict.fromkeys(per_user["noise"]))
    experts = list(dict.fromkeys(per_user["expert"]))
    models = list(dict.fromkeys(per_user["model"]))
    fig, axes = plt.subplots(1, len(modes), figsize=(1.2 + 1.6 * len(experts) * len(modes), 4.2), squeeze=False,
                             sharey=True)
    width = 0.8 / max(len(models), 1)
    for ax, mode in zip(axes[0], modes):
        for number, model in enumerate(models):
            rows = per_user[(per_user["noise"] == mode) & (per_user["model"] == model)]
            data = [rows.loc[rows["expert"] == e, "percentile"].to_numpy() for e in experts]
            positions = [i - 0.4 + width * (number + 0.5) for i in range(len(experts))]
            boxes = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True, showfliers=False)
            for patch in boxes["boxes"]:
                patch.set_facecolor(f"C{number}")
                patch.set_alpha(0.6)
            ax.plot([], [], color=f"C{number}", lw=6, alpha=0.6, label=model)
        ax.axhline(50, color="black", ls="--", lw=1)
        ax.set_xticks(range(len(experts)))
        ax.set_xticklabels(experts, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(f"noise={mode}")
    axes[0][0].set_ylabel("relevance percentile (50 = chance)")
    axes[0][0].legend(fontsize=8)
    _suptitle(fig, f"do the selected tokens match the history's titles? {dataset}{title_tag}")
    fig.tight_layout()
    return fig


def plot_table4(long: pd.DataFrame, title_tag: str = ""):
    """Table 4: top-1 accuracy on candidate pools per method (bars, 95% bootstrap interval over users; grey W/O,
    blue MLTFR, orange the prompted LLM, green MixRec), one panel per dataset; the paper's figures as black ticks
    (its pools are unspecified); a dotted line at chance (1 / pool size), since a pool's size sets what top-1 means."""
    plt = _plt()
    datasets = list(dict.fromkeys(long["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(1.2 + 0.9 * long.groupby("dataset").size().max()
                                                          * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        rows = long[(long["dataset"] == dataset) & long["top1"].notna()].reset_index(drop=True)
        x = np.arange(len(rows))
        errors = np.vstack([rows["top1"] - rows["ci_low"], rows["ci_high"] - rows["top1"]])
        family = rows["backbone"] if "backbone" in rows else pd.Series([None] * len(rows))
        colours = ["tab:green" if b == "mixrec" else "tab:gray" if m.endswith("W/O") else
                   "tab:blue" if m.endswith("MLTFR") else "tab:orange" for m, b in zip(rows["method"], family)]
        ax.bar(x, rows["top1"], yerr=errors, capsize=3, color=colours)
        if "paper" in rows:
            paper = pd.to_numeric(rows["paper"], errors="coerce")
            ax.scatter(x[paper.notna()], paper[paper.notna()], marker="_", s=400, color="black", label="paper")
        if "pool_size" in rows and len(rows):
            ax.axhline(1.0 / rows["pool_size"].iloc[0], ls=":", color="gray", label="chance (1 / pool size)")
        ax.set_xticks(x, rows["method"], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("top-1 accuracy")
        ax.set_title(f"{dataset}: {rows['pool'].iloc[0] if len(rows) else ''}", fontsize=8)
    _suptitle(fig, f"Table 4: ID-based models vs a text-prompted LLM{title_tag}")
    fig.tight_layout()
    return fig


def plot_mixrec(table: pd.DataFrame, dataset: str, title_tag: str = "",
                metrics=("NDCG@10", "Recall@10", "MRR", "HR@20", "NDCG@20")):
    """The MixRec comparison (:meth:`mltfrkit.mixrec.experiment.MixRecStudy.table`): one panel per metric,
    one bar per model (mean over seeds, std as error bar; green MixRec's rows, grey / blue the backbones
    W/O / with MLTFR)."""
    plt = _plt()
    rows = table[table["seeds"] > 0].reset_index(drop=True)
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics), 4.0), squeeze=False)
    colours = ["tab:blue" if "MLTFR" in m else "tab:green" if m.startswith(("MixRec", "LLMRec")) else "tab:gray"
               for m in rows["model"]]
    x = np.arange(len(rows))
    for ax, metric in zip(axes[0], metrics):
        ax.bar(x, rows[metric], yerr=_errors(rows, metric), capsize=3, color=colours)
        ax.set_xticks(x, [re.sub(r" design [01 ]+\)", ")", m) for m in rows["model"]], rotation=60, ha="right",
                      fontsize=7)  # "MixRec (BO)": its design is in the table
        ax.set_title(metric, fontsize=9)
    _suptitle(fig, f"MixRec vs ID-based models on {dataset} (test, full ranking){title_tag}")
    fig.tight_layout()
    return fig


def plot_mixrec_ablation(ablation: pd.DataFrame, dataset: str, title_tag: str = ""):
    """The MixRec paper's Fig. 5 (:meth:`~mltfrkit.mixrec.experiment.MixRecStudy.ablation`): NDCG@10 and
    Recall@10 along LLMRec -> Variation 1 (MixRec_base) -> Variation 2 (no BO) -> MixRec (BO design)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8), squeeze=False)
    x = np.arange(len(ablation))
    for ax, metric in zip(axes[0], ("NDCG@10", "Recall@10")):
        ax.bar(x, ablation[metric], yerr=_errors(ablation, metric), capsize=3,
               color=["tab:gray", "tab:olive", "tab:cyan", "tab:green"][:len(ablation)])
        ax.set_xticks(x, [textwrap.fill(s, 14) for s in ablation["step"]], fontsize=7)
        ax.set_title(metric, fontsize=9)
    _suptitle(fig, f"MixRec ablation (its Fig. 5) on {dataset}{title_tag}")
    fig.tight_layout()
    return fig


def plot_ablation(table: pd.DataFrame, dataset: str, title_tag: str = ""):
    """Table 3 as grouped bars: full MLTFR vs without the consensus expert."""
    return _paired_bars(table, ("Full", "w/o SC"), dataset, "Table 3", title_tag)


def plot_noise_ablation(table: pd.DataFrame, dataset: str, title_tag: str = ""):
    """Selection-noise ablation: one line per noise mode over K."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(9, 3.6), squeeze=False)
    for ax, metric in zip(axes[0], METRICS):
        for mode, rows in table.groupby("noise", sort=False):
            rows = rows.sort_values("top_k")
            ax.errorbar(rows["top_k"], rows[metric], yerr=_errors(rows, metric), marker="o", capsize=3, label=mode)
        ax.set_xlabel("K (tokens selected per expert)")
        ax.set_ylabel(metric)
        ax.set_title(metric)
    axes[0][0].legend(title="noise", fontsize=8)
    _suptitle(fig, f"selection noise x K on {dataset}{title_tag}")
    fig.tight_layout()
    return fig


def plot_expert_sweep(table: pd.DataFrame, dataset: str, title_tag: str = ""):
    """Fig. 3: HR@20 / NDCG@20 over the number of experts, one line per backbone."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(9, 3.6), squeeze=False)
    for ax, metric in zip(axes[0], METRICS):
        for backbone, rows in table.groupby("backbone", sort=False):
            rows = rows.sort_values("n_experts")
            ax.errorbar(rows["n_experts"], rows[metric], yerr=_errors(rows, metric), marker="o", capsize=3,
                        label=backbone)
        ax.set_xlabel("number of experts m")
        ax.set_xticks(sorted(table["n_experts"].unique()))
        ax.set_ylabel(metric)
        ax.set_title(metric)
    axes[0][0].legend(fontsize=8)
    _suptitle(fig, f"number of experts on {dataset}{title_tag}")
    fig.tight_layout()
    return fig


def plot_gates(gates: np.ndarray, expert_names: list[str], labels: list[str] | None = None, ax=None):
    """Gate weights per history position (rows) and expert (columns) as a heatmap."""
    plt = _plt()
    gates = np.asarray(gates)
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.6 + 1.1 * gates.shape[1], 0.9 + 0.22 * gates.shape[0]))
    else:
        fig = ax.figure
    image = ax.imshow(gates, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(expert_names)), expert_names, rotation=30, ha="right", fontsize=8)
    if labels is not None:
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("history position")
    ax.set_title("gate weight per position")
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    return fig


def plot_reproduction_gap(table: pd.DataFrame, dataset: str, title_tag: str = ""):
    """The ladder as a waterfall, one panel per backbone: Imp. (%) at each rung (error bars: std of
    the per-seed Imp. over seeds), each bar drawn from the previous rung's value, coloured by whether
    the change exceeds seed noise; the W/O 2-round baseline's Imp. as hollow markers where present."""
    plt = _plt()
    backbones = list(dict.fromkeys(table["backbone"]))
    rungs = max(len(table[table["backbone"] == b]) for b in backbones)
    fig, axes = plt.subplots(1, len(backbones), figsize=(max(6.0, 0.75 * rungs + 2) * len(backbones), 4.6),
                             squeeze=False)
    for ax, backbone in zip(axes[0], backbones):
        rows = table[table["backbone"] == backbone].sort_values("rung")
        x = np.arange(len(rows))
        imp = rows["Imp. (%)"].to_numpy(dtype=float)
        base = np.concatenate([[0.0], imp[:-1]])
        colours = ["tab:blue" if i == 0 else ("tab:red" if beyond else "tab:gray")
                   for i, beyond in enumerate(rows["beyond seed noise"].fillna(False))]
        ax.bar(x, imp - base, bottom=base, color=colours, width=0.6)
        ax.errorbar(x, imp, yerr=rows["Imp. std over seeds"].to_numpy(dtype=float), fmt="o", color="black",
                    capsize=3, markersize=3)
        if "W/O 2-round Imp. (%)" in rows:
            ax.scatter(x, rows["W/O 2-round Imp. (%)"], marker="D", facecolors="none", edgecolors="tab:green",
                       zorder=3, label="W/O 2-round vs W/O")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.use_sticky_edges = False  # floating bars stick their ends to the axes: the extreme rungs were cut off
        ax.margins(y=0.08)
        labels = [name + (" *" if selection != "validation" else "") for name, selection in
                  zip(rows["name"], rows["selection"])]
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("Imp. of MLTFR over W/O (%)")
        ax.set_title(backbone)
        if "W/O 2-round Imp. (%)" in rows:
            ax.legend(fontsize=8)
    _suptitle(fig, f"From the paper as run to our protocol on {dataset}{title_tag}  "
              "(* test-selected, optimistic; red: change beyond 2 SE of seed noise)", fontsize=9)
    fig.tight_layout()
    return fig


def save_table(table: pd.DataFrame, name: str, dataset: str, directory: str | os.PathLike | None = None) -> Path:
    """Write a notebook's table as ``<directory>/<name>-<dataset>.csv`` beside its figure."""
    directory = figures_dir(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{re.sub(r'[^A-Za-z0-9._+-]+', '_', dataset)}.csv"
    table.to_csv(path, index=False)
    return path


# -- tables for reading -------------------------------------------------------------------------
# Spreads whose column is not "<column> std": the reproduction gap's Imp. and its rung-to-rung change.
SPREADS = {"Imp. (%)": "Imp. std over seeds", "change in Imp. (pp)": "change SE (pp)"}
SPREAD_LABELS = {"change SE (pp)": " ± SE"}  # the ± is a standard error there, and the header says so


def _kind(name: str, values: pd.Series) -> str:
    """How a column is shown: "bool", "int", "text", "p" (3 decimals), "pct" (1, signed), "metric" (4)."""
    present = values.dropna()
    if pd.api.types.is_bool_dtype(values) or (len(present) and present.map(
            lambda v: isinstance(v, (bool, np.bool_))).all()):
        return "bool"
    if pd.api.types.is_integer_dtype(values):
        return "int"
    if not pd.api.types.is_numeric_dtype(values):
        return "text"
    if re.match(r"(paper )?p[ (]", name):
        return "p"
    if "(%)" in name or "(pp)" in name or name.startswith("Imp."):
        return "pct"
    if not re.search(r"@\d", name) and len(present) and present.map(lambda v: float(v).is_integer()).all():
        return "int"  # a count that went through a float (a NaN elsewhere, a mean of equal ints)
    return "metric"


def _formatter(kind: str, spread: bool = False):
    if kind == "p":
        return lambda v: "<0.001" if v < 0.001 else f"{v:.3f}"
    if kind == "pct":
        return (lambda v: f"{v:.1f}") if spread else (lambda v: f"{v:+.1f}")
    if kind == "int":
        return lambda v: f"{int(v)}"
    if kind == "bool":
        return lambda v: "yes" if v else "no"
    if kind == "metric":
        return lambda v: f"{v:.4f}"
    return str


def readable(table: pd.DataFrame, caption: str, columns: list[str] | None = None):
    """A table of :mod:`mltfrkit.experiments` as a pandas Styler for reading in a notebook.

    Why: the raw frames carry one number per cell (what :func:`save_table` writes as CSV, for code to
    read), which on screen means 20-odd columns of 17-digit floats, a ``std`` column beside every mean,
    NaN columns wherever a single seed leaves a std or a p-value undefined or the dataset is not one of the
    paper's, and the paper's figure far from ours. Here, without changing a number:

    * every ``X`` with an ``X std`` column (and the reproduction gap's ``Imp. (%)`` / ``Imp. std over
      seeds``, ``change in Imp. (pp)`` / ``change SE (pp)``, the latter headed ``... ± SE``) becomes one text
      column "0.0412 ± 0.0019", or "0.0412" where the std is NaN (one seed); the spread columns go;
    * columns that are NaN throughout are dropped (p-values with fewer than 3 seeds, paper columns of a
      dataset the paper does not have);
    * ``paper X`` sits right after ``X`` (``W/O HR@20``, ``paper W/O HR@20``, ``W/O NDCG@20``, ...), every
      other column keeps its order;
    * HR/NDCG and other metrics show 4 decimals, percentages (``(%)``, ``(pp)``) 1 decimal with a sign,
      p-values 3 decimals (``<0.001`` below), counts as integers, booleans as yes/no, NaN as blank;
    * ``caption`` is set (:meth:`mltfrkit.experiments.Experiment.caption` names the dataset and profile)
      and the index is hidden.

    ``columns`` keeps only those columns, in that order (each with its spread and paper companions).
    """
    frame = table.copy()
    spreads = {c: f"{c} std" for c in frame.columns if f"{c} std" in frame.columns}
    spreads.update({c: s for c, s in SPREADS.items() if c in frame.columns and s in frame.columns})
    if columns is not None:
        keep = [part for c in columns if c in frame.columns for part in (c, spreads.get(c), f"paper {c}")]
        frame = frame[[c for c in dict.fromkeys(keep) if c is not None and c in frame.columns]]
    frame = frame.dropna(axis=1, how="all")
    spreads = {c: s for c, s in spreads.items() if c in frame.columns and s in frame.columns}
    hidden = set(spreads.values())
    order = []
    for column in frame.columns:
        if column in hidden or (column.startswith("paper ") and column[len("paper "):] in frame.columns):
            continue
        order.append(column)
        if f"paper {column}" in frame.columns:
            order.append(f"paper {column}")
    kinds = {column: _kind(column, frame[column]) for column in order}
    shown = frame[order].copy()
    renames = {}
    for column, spread in spreads.items():
        mean_text, spread_text = _formatter(kinds[column]), _formatter(kinds[column], spread=True)
        shown[column] = ["" if pd.isna(m) else mean_text(m) if pd.isna(s) else f"{mean_text(m)} ± {spread_text(s)}"
                         for m, s in zip(frame[column], frame[spread])]
        if spread in SPREAD_LABELS:
            renames[column] = column + SPREAD_LABELS[spread]
    formats = {column: _formatter(kind) for column, kind in kinds.items() if column not in spreads}
    styler = shown.rename(columns=renames).style.format(
        {renames.get(c, c): f for c, f in formats.items()}, na_rep="")
    return (styler.hide(axis="index").set_caption(caption)
            .set_table_styles([{"selector": "caption",
                                "props": "caption-side: top; text-align: left; font-weight: bold;"}]))
