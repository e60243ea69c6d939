"""Tables for reading (viz.readable) and profile-labelled captions and figure titles (issue 15, section 4):
mean ± std in one column, nothing "± nan" or NaN-only for a single seed, the paper's figure beside ours,
fixed decimals; a reduced profile named in every caption and figure title."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mltfrkit import viz
from mltfrkit.experiments import Experiment
from mltfrkit.train.trainer import ORACLE_LABEL

NAN = float("nan")


def table2_frame(seeds: int = 3, paper: bool = True) -> pd.DataFrame:
    """A frame shaped like Experiment.table2's (two backbones)."""
    rows = []
    for backbone, shift in (("sasrec", 0.0), ("bert4rec", 0.002)):
        row = {"backbone": backbone}
        for label, hr, ndcg in (("W/O", 0.04123, 0.01512), ("MLTFR", 0.04521, 0.01634)):
            row[f"{label} HR@20"], row[f"{label} NDCG@20"] = hr + shift, ndcg + shift
            row[f"{label} HR@20 std"] = 0.00191 if seeds > 1 else NAN
            row[f"{label} NDCG@20 std"] = 0.00104 if seeds > 1 else NAN
        row["Imp. (%)"] = 8.2349
        row["p (HR@20)"] = 0.04172 if seeds >= 3 else NAN
        row["p (NDCG@20)"] = 0.00042 if seeds >= 3 else NAN
        row["seeds"] = seeds
        if paper:
            row.update({"paper W/O HR@20": 0.03861, "paper W/O NDCG@20": 0.01490, "paper MLTFR HR@20": 0.04366,
                        "paper MLTFR NDCG@20": 0.01626, "paper Imp. (%)": 12.23})
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["selection"] = "validation"
    return frame


def cell(styler, row: int, column: str) -> str:
    """The text a reader sees in one cell (Styler's rendering context, as pandas' own tests read it)."""
    position = list(styler.data.columns).index(column)
    return styler._translate(False, False)["body"][row][position + 1]["display_value"]


def shown(styler) -> list[str]:
    return list(styler.data.columns)


def test_mean_and_std_merge_and_the_paper_sits_beside_ours():
    styler = viz.readable(table2_frame(), "Table 2 on Pantry (paper profile, 3 seeds)")
    assert shown(styler) == ["backbone", "W/O HR@20", "paper W/O HR@20", "W/O NDCG@20", "paper W/O NDCG@20",
                             "MLTFR HR@20", "paper MLTFR HR@20", "MLTFR NDCG@20", "paper MLTFR NDCG@20",
                             "Imp. (%)", "paper Imp. (%)", "p (HR@20)", "p (NDCG@20)", "seeds", "selection"]
    assert not any(c.endswith(" std") for c in shown(styler))
    assert cell(styler, 0, "W/O HR@20") == "0.0412 ± 0.0019"
    assert cell(styler, 1, "MLTFR NDCG@20") == "0.0183 ± 0.0010"
    assert cell(styler, 0, "paper W/O HR@20") == "0.0386"  # metrics: 4 decimals
    assert cell(styler, 0, "Imp. (%)") == "+8.2" and cell(styler, 0, "paper Imp. (%)") == "+12.2"  # 1 decimal
    assert cell(styler, 0, "p (HR@20)") == "0.042" and cell(styler, 0, "p (NDCG@20)") == "<0.001"  # 3 decimals
    assert cell(styler, 0, "seeds") == "3"
    assert styler.caption == "Table 2 on Pantry (paper profile, 3 seeds)"
    html = styler.to_html()
    assert "Table 2 on Pantry (paper profile, 3 seeds)" in html and "nan" not in html.lower()
    assert "row_heading" not in html  # the index is hidden


def test_single_seed_shows_no_nan_and_no_empty_columns():
    frame = table2_frame(seeds=1, paper=False)
    styler = viz.readable(frame, "Table 2 on ml-100k (quick profile: 2 epochs, 1 seed)")
    assert shown(styler) == ["backbone", "W/O HR@20", "W/O NDCG@20", "MLTFR HR@20", "MLTFR NDCG@20", "Imp. (%)",
                             "seeds", "selection"]  # no std, no p-values, no paper columns
    assert cell(styler, 0, "W/O HR@20") == "0.0412"
    html = styler.to_html()
    assert "±" not in html and "nan" not in html.lower()
    assert list(frame.columns) == list(table2_frame(seeds=1, paper=False).columns)  # the raw frame is untouched


def test_some_groups_with_one_seed_merge_per_cell():
    frame = table2_frame()
    frame.loc[1, ["W/O HR@20 std", "paper W/O HR@20"]] = NAN  # e.g. a backbone the paper has no row for
    styler = viz.readable(frame, "t")
    assert cell(styler, 0, "W/O HR@20") == "0.0412 ± 0.0019" and cell(styler, 1, "W/O HR@20") == "0.0432"
    assert cell(styler, 1, "paper W/O HR@20") == ""


def test_summarised_frames_noise_ablation_and_expert_sweep():
    noise = pd.DataFrame({"backbone": ["sasrec"] * 2, "noise": ["paper", "none"], "top_k": [1, 5],
                          "HR@20": [0.05, 0.06], "NDCG@20": [0.02, 0.025], "HR@20 std": [0.001, NAN],
                          "NDCG@20 std": [0.0005, NAN], "seeds": [2, 1]})
    styler = viz.readable(noise, "noise")
    assert shown(styler) == ["backbone", "noise", "top_k", "HR@20", "NDCG@20", "seeds"]
    assert [cell(styler, i, "HR@20") for i in (0, 1)] == ["0.0500 ± 0.0010", "0.0600"]
    assert cell(styler, 1, "top_k") == "5"
    sweep = pd.DataFrame({"backbone": ["sasrec"], "n_experts": [2.0], "HR@20": [0.05], "NDCG@20": [0.02],
                          "HR@20 std": [NAN], "NDCG@20 std": [NAN], "seeds": [1], "added source": ["WordLlama"]})
    styler = viz.readable(sweep, "sweep")
    assert cell(styler, 0, "n_experts") == "2"  # a count, even as a float
    assert cell(styler, 0, "added source") == "WordLlama"


def test_reproduction_gap_frame():
    frame = pd.DataFrame({
        "backbone": ["sasrec"] * 2, "rung": [0, 1], "name": ["the paper as run", "our vocabulary cap"],
        "change": ["a", "b"], "selection": [ORACLE_LABEL, "validation"],
        "W/O HR@20": [0.1, 0.11], "W/O HR@20 std": [0.01, 0.02], "MLTFR HR@20": [0.12, 0.1],
        "MLTFR HR@20 std": [0.01, 0.01], "MLTFR-RE HR@20": [NAN, 0.09], "MLTFR-RE HR@20 std": [NAN, 0.003],
        "Imp. (%)": [17.345, -2.04], "Imp. std over seeds": [3.21, 1.0], "p (HR@20)": [0.01, 0.6],
        "change in Imp. (pp)": [NAN, -19.4], "change SE (pp)": [NAN, 2.5], "beyond seed noise": [False, True],
        "seeds": [3, 3]})
    styler = viz.readable(frame, "gap", columns=["backbone", "rung", "name", "W/O HR@20", "MLTFR-RE HR@20",
                                                 "Imp. (%)", "change in Imp. (pp)", "beyond seed noise"])
    assert shown(styler) == ["backbone", "rung", "name", "W/O HR@20", "MLTFR-RE HR@20", "Imp. (%)",
                             "change in Imp. (pp) ± SE", "beyond seed noise"]
    assert cell(styler, 0, "Imp. (%)") == "+17.3 ± 3.2" and cell(styler, 1, "Imp. (%)") == "-2.0 ± 1.0"
    assert cell(styler, 0, "change in Imp. (pp) ± SE") == "" and cell(styler, 1, "change in Imp. (pp) ± SE") == \
        "-19.4 ± 2.5"
    assert cell(styler, 0, "MLTFR-RE HR@20") == "" and cell(styler, 1, "MLTFR-RE HR@20") == "0.0900 ± 0.0030"
    assert [cell(styler, i, "beyond seed noise") for i in (0, 1)] == ["no", "yes"]
    assert cell(styler, 1, "rung") == "1"


@pytest.fixture
def experiment(tiny_split, monkeypatch):
    import mltfrkit.store as store

    monkeypatch.setattr(store.ResultStore, "split", lambda self, name: tiny_split)
    return lambda **options: Experiment("tiny", runs_dir="unused", progress=False, **options)


QUICK_NOTE = ("quick profile: early-stopped, at most 200 epochs, 1 seed, n_experts=3, max_vocab=2000, fisher_samples=32, "
              "precision=bfloat16; reduced, not the paper's settings")


def test_captions_name_the_profile(experiment):
    quick = experiment()
    assert quick.reduced
    assert quick.caption("Table 2") == f"Table 2 on tiny ({QUICK_NOTE})"
    assert experiment(profile="paper").caption("Table 2") == "Table 2 on tiny (paper profile, 3 seeds)"
    assert not experiment(profile="paper").reduced
    one_seed = experiment(profile="paper", seeds=[0], mltfr_options={"max_vocab": 2000})
    assert one_seed.caption("Table 3") == ("Table 3 on tiny (paper profile: early-stopped, at most 100 epochs, 1 seed, "
                                           "max_vocab=2000; reduced, not the paper's settings)")
    assert experiment(epochs=1).caption("T") == f"T on tiny ({QUICK_NOTE.replace('early-stopped, at most 200 epochs', '1 epoch')})"
    assert experiment(profile="paper", mltfr_options={"noise": "none"}).caption("T") == \
        "T on tiny (paper profile, 3 seeds, noise=none)"  # a change, not a reduction
    authors = experiment(profile="paper", configuration="authors")
    assert authors.caption("Table 2") == f"Table 2 on tiny (paper profile, 3 seeds; {ORACLE_LABEL})"
    assert "test-selected (authors' protocol, optimistic)" in experiment(configuration="authors").caption("T")
    assert quick.title_tag == f" ({QUICK_NOTE})"


def _tables():
    table2 = table2_frame(seeds=1)
    ablation = table2.rename(columns=lambda c: c.replace("W/O", "Full").replace("MLTFR", "w/o SC"))
    summary = {"HR@20": [0.05, 0.06], "NDCG@20": [0.02, 0.03], "HR@20 std": [NAN] * 2, "NDCG@20 std": [NAN] * 2,
               "seeds": [1, 1]}
    noise = pd.DataFrame({"backbone": ["sasrec"] * 2, "noise": ["paper", "none"], "top_k": [1, 1], **summary})
    sweep = pd.DataFrame({"backbone": ["sasrec"] * 2, "n_experts": [1, 2], **summary})
    te = pd.DataFrame({"backbone": ["sasrec"] * 2, "source": ["(none)", "a"], "method": ["W/O", "LLM-TE"], **summary})
    gap = pd.DataFrame({"backbone": ["sasrec"] * 2, "rung": [0, 1], "name": ["a", "b"],
                        "selection": ["x", "validation"],
                        "Imp. (%)": [5.0, 1.0], "Imp. std over seeds": [NAN, NAN], "beyond seed noise": [False, True]})
    return {"plot_table2": table2, "plot_ablation": ablation, "plot_noise_ablation": noise,
            "plot_expert_sweep": sweep, "plot_te_vs_re": te, "plot_reproduction_gap": gap}


@pytest.mark.parametrize("name", list(_tables()))
def test_figure_titles_name_a_reduced_profile(name, experiment):
    import matplotlib.pyplot as plt

    exp = experiment()
    fig = getattr(viz, name)(_tables()[name], exp.dataset, exp.title_tag)
    try:
        title = fig._suptitle.get_text().replace("\n", " ")
        assert f"on tiny ({QUICK_NOTE})" in title
    finally:
        plt.close(fig)
    assert np.isfinite(fig.get_figwidth())


def test_te_vs_re_figure_draws_one_row_of_panels_per_backbone():
    import matplotlib.pyplot as plt

    one = _tables()["plot_te_vs_re"]
    two = pd.concat([one, one.assign(backbone="bert4rec", **{"NDCG@20": [0.5, 0.6]})], ignore_index=True)
    fig = viz.plot_te_vs_re(two, "tiny")
    try:
        axes = fig.get_axes()
        assert [ax.get_title() for ax in axes] == ["sasrec: HR@20", "sasrec: NDCG@20", "bert4rec: HR@20",
                                                   "bert4rec: NDCG@20"]
        # each row's dashed line is its own backbone's W/O, not the first backbone's
        assert axes[1].get_lines()[-1].get_ydata()[0] == 0.02 and axes[3].get_lines()[-1].get_ydata()[0] == 0.5
        assert "(sasrec, bert4rec)" in fig._suptitle.get_text().replace("\n", " ")
    finally:
        plt.close(fig)
