"""The notebooks, executed with papermill in the quick profile (1 epoch, 1 seed, SASRec) on ml-100k,
plus the Music command on a fixture file in the Amazon 2018 format, and a check that the
committed notebooks carry no outputs.

Every notebook writes its table as CSV beside its figures; the assertions read those. One runs
directory is shared by the whole session (tests/test_inspector.py uses it too), so a run trained
for one notebook is reused by the next."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from test_store import link_cached_inputs

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = ["te_vs_re", "table2", "ablation", "expert_sweep", "token_inspector", "reproduction_gap", "llm_comparison",
         "mixrec", "claims"]  # mixrec.ipynb is executed by tests/test_mixrec_notebook.py, llm_comparison by test_llm_notebook.py
REQUIRED_PARAMETERS = ("dataset", "data_dir", "backbones", "llms", "seeds", "epochs", "profile", "device",
                       "executor", "workers", "ray_address")
QUICK_SOURCES = ["SmolLM2-135M", "all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2"]  # offline[:3]
SMALL = {"max_vocab": 2000, "fisher_samples": 16}  # smaller than the quick profile: test time only

papermill = pytest.importorskip("papermill")
from papermill.translators import PythonTranslator  # noqa: E402


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    link_cached_inputs(QUICK_SOURCES, ["ml-100k"])
    base = tmp_path_factory.getbasetemp()
    return {"runs": base / "shared-runs", "figures": base / "figures", "executed": base / "papermill_runs"}


def execute(name: str, shared: dict, dataset: str = "ml-100k", **parameters) -> Path:
    output = shared["executed"] / f"{name}-{Path(dataset).stem}.ipynb"  # a file path: its stem, as the tables
    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(output), kernel_name="python3",
                               progress_bar=False, cwd=str(REPO),
                               parameters={"dataset": dataset, "epochs": 1, "seeds": [0], "backbones": ["sasrec"],
                                           "profile": "quick", "mltfr_options": SMALL, "runs_dir": str(shared["runs"]),
                                           "figures_dir": str(shared["figures"]), **parameters})
    return output


def figure_ok(shared: dict, stem: str) -> None:
    png, pdf = shared["figures"] / f"{stem}.png", shared["figures"] / f"{stem}.pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert pdf.read_bytes()[:4] == b"%PDF"


def table(shared: dict, stem: str) -> pd.DataFrame:
    return pd.read_csv(shared["figures"] / f"{stem}.csv")


def shown_tables(output: Path) -> list[str]:
    """The HTML of every table the executed notebook displays (viz.readable's Stylers)."""
    nb = nbformat.read(output, as_version=4)
    return [o["data"]["text/html"] for c in nb.cells for o in c.get("outputs", [])
            if "<caption>" in o.get("data", {}).get("text/html", "")]


def test_committed_notebooks_have_no_outputs_and_a_parameters_cell():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        for cell in code:
            assert cell.outputs == [] and cell.execution_count is None, f"{name}.ipynb has outputs"
        assert "parameters" in code[0].metadata.get("tags", []), f"{name}.ipynb: first code cell not tagged"
        for parameter in REQUIRED_PARAMETERS:
            assert f"\n{parameter} = " in "\n" + code[0].source, f"{name}.ipynb lacks parameter {parameter}"
        # papermill's own reading of the cell (``--help-notebook``): a second "=" on a line, even in its comment,
        # makes it skip that parameter and log "Unable to parse line" on every run
        assigned = {line.split("=", 1)[0].strip() for line in code[0].source.splitlines()
                    if "=" in line and not line.startswith((" ", "#", "}", "]"))}
        read = {p.name for p in PythonTranslator.inspect(code[0])}
        assert read == assigned, f"{name}.ipynb: papermill does not read {assigned - read}"
        assert nb.metadata.kernelspec.name == "python3"


def printed(output: Path) -> str:
    """Everything the executed notebook printed."""
    nb = nbformat.read(output, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "stream")


def test_table2_notebook(shared):
    output = execute("table2", shared)
    # one epoch with patience 10: every run (W/O, MLTFR, the W/O 2-round control) ends at its cap, and it is said
    assert re.search(r"\b(\d+) of \1 stored runs ran to the 1-epoch cap without early stopping", printed(output))
    [html] = shown_tables(output)  # shown for reading: the profile named, one seed leaves no NaN column
    assert "<caption>Table 2 on ml-100k (quick profile: 1 epoch, 1 seed" in html and "reduced" in html
    assert "nan" not in html.lower() and " std<" not in html
    frame = table(shared, "table2-ml-100k")
    assert list(frame["backbone"]) == ["sasrec"]
    for column in ("W/O HR@20", "W/O NDCG@20", "MLTFR HR@20", "MLTFR NDCG@20", "Imp. (%)", "seeds"):
        assert column in frame and frame[column].notna().all()
    assert not any(c.startswith("paper") for c in frame.columns)  # ml-100k is not one of the paper's
    figure_ok(shared, "table2-ml-100k")


def test_te_vs_re_notebook(shared):
    output = execute("te_vs_re", shared, sources=["all-MiniLM-L6-v2"], fig1_backbones=["sasrec", "bert4rec"])
    assert "6 of 6 stored runs ran to the 1-epoch cap" in printed(output)  # 2 backbones x (W/O, TE, RE)
    frame = table(shared, "te_vs_re-ml-100k")
    assert list(dict.fromkeys(frame["backbone"])) == ["sasrec", "bert4rec"]  # one block of rows per backbone
    for _, rows in frame.groupby("backbone"):
        assert sorted(rows["method"]) == ["LLM-RE", "LLM-TE", "W/O"]
    assert set(frame.loc[frame["method"] != "W/O", "source"]) == {"all-MiniLM-L6-v2"}
    assert frame[["HR@20", "NDCG@20"]].notna().all().all()
    figure_ok(shared, "te_vs_re-ml-100k")


def test_ablation_notebook(shared):
    execute("ablation", shared, noise_modes=["paper", "none"], top_ks=[1])
    table3 = table(shared, "ablation-ml-100k")
    assert list(table3["backbone"]) == ["sasrec"]
    assert {"Full HR@20", "Full NDCG@20", "w/o SC HR@20", "w/o SC NDCG@20"} <= set(table3.columns)
    noise = table(shared, "noise_ablation-ml-100k")
    assert sorted(zip(noise["noise"], noise["top_k"])) == [("none", 1), ("paper", 1)]
    figure_ok(shared, "ablation-ml-100k")
    figure_ok(shared, "noise_ablation-ml-100k")


def test_expert_sweep_notebook(shared):
    execute("expert_sweep", shared, experts=[1, 2, 3])
    frame = table(shared, "expert_sweep-ml-100k")
    assert list(frame["n_experts"]) == [1, 2, 3]
    assert list(frame["added source"]) == QUICK_SOURCES  # the preset's order
    figure_ok(shared, "expert_sweep-ml-100k")


def test_token_inspector_notebook(shared):
    output = execute("token_inspector", shared, user="42")
    nb = nbformat.read(output, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "user 42" in text and "in_eval_selection" in text and "relevance" in text
    figure_ok(shared, "token_inspector_gates-ml-100k")
    relevance = table(shared, "token_relevance-ml-100k")  # trained and untrained, every expert and noise mode
    assert set(relevance["model"]) == {"trained", "untrained"} and set(relevance["noise"]) == {"paper", "tempered", "none"}
    assert len(relevance) == 2 * 3 * relevance["expert"].nunique() and relevance["expert"].nunique() >= 3
    assert relevance["mean percentile"].between(0, 100).all() and (relevance["users"] > 0).all()
    assert "Relevance of the selected tokens" in text and "Training adds" in text
    gain = table(shared, "token_relevance_gain-ml-100k")
    assert len(gain) == 3 * relevance["expert"].nunique() and gain["CI low"].le(gain["CI high"]).all()
    figure_ok(shared, "token_relevance-ml-100k")


def write_sequence_file(path: Path, n_users: int = 120, n_items: int = 60) -> Path:
    """A sequence file (user item item ...) with a learnable cyclic pattern: the ladder's 12 rungs x 4 kinds
    of run need a dataset that trains in seconds (MLTFR does not need item titles)."""
    rng = np.random.default_rng(0)
    lines = []
    for user in range(n_users):
        start, length = int(rng.integers(1, n_items)), int(rng.integers(5, 12))
        lines.append(" ".join([f"u{user}"] + [f"i{(start + step) % n_items + 1}" for step in range(length)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reproduction_gap_notebook(shared, tmp_path):
    """The ladder on tiny settings: its table's structure, and its first and last rungs are the
    corresponding Table 2 runs (the authors' configuration, test-selected; and ours)."""
    from mltfrkit.experiments import Experiment
    from mltfrkit.vocab import resolve_preset

    link_cached_inputs(resolve_preset("offline"))  # the authors' SASRec has 6 experts
    data = write_sequence_file(tmp_path / "ladder.txt")
    options = {"max_vocab": 500, "fisher_samples": 16}
    execute("reproduction_gap", shared, dataset=str(data), mltfr_options=options, llms="offline")
    frame = table(shared, "reproduction_gap-ladder")
    names = list(frame["name"])
    assert names[0] == "the paper as run" and names[-1] == "our vocabulary cap" and len(names) == 13
    assert list(frame["rung"]) == list(range(13))
    assert list(frame["selection"][:2]) == ["test-selected (authors' protocol, optimistic)"] * 2
    assert set(frame["selection"][2:]) == {"validation"}
    for column in ("W/O HR@20", "MLTFR NDCG@20", "Imp. (%)", "W/O 2-round HR@20", "change in Imp. (pp)"):
        assert column in frame
    assert frame["MLTFR-RE HR@20"].notna().tolist() == [False] * 12 + [True]  # the control on the last rung
    per_seed = table(shared, "reproduction_gap_per_seed-ladder")
    assert set(per_seed["kind"]) == {"wo", "mltfr", "wo2", "mltfr_re"}
    figure_ok(shared, "reproduction_gap-ladder")
    common = dict(profile="quick", epochs=1, seeds=[0], backbones=["sasrec"], mltfr_options=options, llms="offline",
                  runs_dir=str(shared["runs"]), progress=False)
    for configuration, rung in (("authors", 0), ("ours", 12)):
        table2 = Experiment(str(data), configuration=configuration, **common).table2(
            controls=["wo2", "mltfr_re"] if configuration == "ours" else ["wo2"])  # read from the store
        labels = ("W/O", "MLTFR", "W/O 2-round") + (("MLTFR-RE",) if configuration == "ours" else ())
        for label in labels:  # Table 2's control columns are the ladder's runs too: nothing trained twice
            for metric in ("HR@20", "NDCG@20"):
                assert table2.loc[0, f"{label} {metric}"] == pytest.approx(frame.loc[rung, f"{label} {metric}"])
        assert table2.loc[0, "W/O 2-round vs W/O (%)"] == pytest.approx(frame.loc[rung, "W/O 2-round Imp. (%)"])
        if configuration == "ours":
            assert table2.loc[0, "MLTFR-RE vs MLTFR (%)"] == pytest.approx(frame.loc[rung, "MLTFR-RE vs MLTFR (%)"])


def write_music_fixture(directory: Path, n_users: int = 40, n_items: int = 25, per_user: int = 9) -> Path:
    """Amazon Reviews 2018 JSON lines (reviewerID, asin, unixReviewTime, ...), gzipped."""
    rng = np.random.default_rng(0)
    path = directory / "Musical_Instruments_5.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for user in range(n_users):
            items = rng.choice(n_items, size=per_user, replace=False)
            start = 1_400_000_000 + int(rng.integers(0, 10_000_000))
            for step, item in enumerate(items):
                handle.write(json.dumps({"overall": 5.0, "verified": True, "reviewerID": f"A{user:05d}XYZ",
                                         "asin": f"B00{item:07d}", "reviewerName": "someone",
                                         "reviewText": "fine", "summary": "ok",
                                         "unixReviewTime": start + 86_400 * step}) + "\n")
    return path


def test_music_command_with_fixture_and_without(shared, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        execute("table2", shared, dataset="Music", data_dir=str(data))
    assert "DatasetNotFoundError" in str(failure.value) and "Musical_Instruments_5.json.gz" in str(failure.value)
    assert not (shared["figures"] / "table2-Music.csv").exists()

    write_music_fixture(data)
    execute("table2", shared, dataset="Music", data_dir=str(data))
    frame = table(shared, "table2-Music")
    assert list(frame["backbone"]) == ["sasrec"]
    # Music is one of the paper's datasets: its published row sits beside ours
    assert frame.loc[0, "paper W/O HR@20"] == pytest.approx(0.04643)
    assert frame.loc[0, "paper MLTFR NDCG@20"] == pytest.approx(0.01895)
    figure_ok(shared, "table2-Music")


def test_claims_notebook(shared, tmp_path):
    """The claims notebook on tiny settings (a synthetic file, 1 epoch, one seed, SASRec, both configurations,
    trained here): every claim and row is in its stored tables with its run counts, the comparisons carry outcomes
    of the rule, the constructed rule example gives a supported, a refuted, a mixed and a not-measured case, and
    the overhead claim reads a (constructed) benchmark file. Then, on the same store with a second seed asked for
    and train_missing=False, nothing is trained and rows say how many of their runs are stored; `mltfrkit sweep
    claims` with the notebook's settings finds every run stored."""
    from test_claims import _overhead_file

    from mltfrkit import claims as C
    from mltfrkit.cli import main as cli
    from mltfrkit.vocab import resolve_preset

    link_cached_inputs(resolve_preset("offline"))  # the authors' SASRec has 6 experts
    data = write_sequence_file(tmp_path / "claimsdata.txt")
    overhead = _overhead_file(tmp_path / "overhead.json", 1.5, precision="bfloat16", max_vocab=300)  # the quick setting
    options = {"max_vocab": 300, "fisher_samples": 16, "n_experts": 3}
    runs = tmp_path / "claims-runs"  # its own store: the run count below is this notebook's alone
    execute("claims", shared, dataset=str(data), mltfr_options=options, llms="offline", runs_dir=str(runs),
            sources=["all-MiniLM-L6-v2"], experts=[1, 2, 3], configurations=["ours", "authors"], train_missing=True,
            executor="local", overhead_file=str(overhead))
    claims = pd.read_csv(shared["figures"] / "claims-claimsdata.csv", dtype={"claim": str})
    assert list(claims["claim"]) == [c.id for c in C.CLAIMS]
    for column in ("quote", "paper evidence", "ours verdict", "ours so far", "ours runs", "authors verdict"):
        assert column in claims and claims[column].notna().all()
    rows = pd.read_csv(shared["figures"] / "claims_rows-claimsdata.csv", dtype={"claim": str})
    rows["backbone"] = rows["backbone"].fillna("")
    assert set(rows["claim"]) == {c.id for c in C.CLAIMS}
    by = {(r["claim"], r["backbone"]): r for _, r in rows.iterrows()}
    # one epoch: every run ends at its cap without early stopping, and the runs column says so
    capped = "2 of 2 (2 at the 1-epoch cap)"
    assert by[("3a", "sasrec")]["ours runs"] == capped and by[("3a", "sasrec")]["authors runs"] == capped
    assert by[("1", "sasrec")]["ours runs"] == "3 of 3 (3 at the 1-epoch cap)"  # W/O + TE + RE
    assert by[("3a", "sasrec")]["ours capped"] == 2
    assert by[("5", "sasrec")]["ours runs"] == "3 of 3 (3 at the 1-epoch cap)" and by[("5", "sasrec")]["authors verdict"] == C.NOT_APPLICABLE
    assert by[("6", "sasrec")]["ours verdict"].startswith("not applicable (") and "titles" in by[("6", "sasrec")]["ours verdict"]
    assert by[("8", "sasrec")]["ours verdict"].startswith("not applicable (")
    assert by[("7", "sasrec")]["ours verdict"] == C.SUPPORTED  # the constructed benchmark: 1.5x, well under 10x
    assert by[("3c", "")]["ours verdict"].startswith("not applicable")  # no Pantry here (not applicable)
    # one seed: no test reaches significance, so every measured comparison is inconclusive
    assert by[("3a", "sasrec")]["ours verdict"] == C.NOT_SUPPORTED
    verdict_words = (C.SUPPORTED, C.NOT_SUPPORTED, C.MIXED, C.NOT_MEASURED, C.NOT_APPLICABLE)
    assert all(str(v).startswith(verdict_words) for v in rows["ours verdict"])
    comparisons = pd.read_csv(shared["figures"] / "claims_comparisons-claimsdata.csv", dtype={"claim": str})
    assert set(comparisons["outcome"]) <= {C.SUPPORTS, C.REFUTES, C.INCONCLUSIVE}
    assert set(comparisons["configuration"]) == {"ours", "authors"}
    assert set(comparisons.loc[comparisons["configuration"] == "authors", "selection"]) == {C.OPTIMISTIC}
    assert set(comparisons.loc[comparisons["claim"] == "2", "compared"]) == {"LLM-TE", "LLM-RE"}
    missing = pd.read_csv(shared["figures"] / "claims_missing-claimsdata.csv")
    assert list(missing["configuration"]) == ["ours", "authors"] and (missing["missing"] == 0).all()
    example = pd.read_csv(shared["figures"] / "claims_rule_example-constructed.csv")
    assert list(example["verdict"]) == [C.SUPPORTED, C.NOT_SUPPORTED, C.MIXED, C.SUPPORTED, C.NOT_MEASURED]

    store_files = sorted(runs.rglob("result.json"))
    partial = C.measure_claims([str(data)], profile="quick", epochs=1, seeds=[0, 1], backbones=["sasrec"],
                               llms="offline", mltfr_options=options, configurations=["ours"],
                               sources=["all-MiniLM-L6-v2"], experts=[1, 2, 3], runs_dir=str(runs),
                               overhead_file=str(overhead), train_missing=False, log=None)
    assert sorted(runs.rglob("result.json")) == store_files  # nothing trained
    rows = {(r["claim"], r["backbone"]): r for _, r in partial.rows.iterrows()}
    assert rows[("3a", "sasrec")]["ours verdict"] == "not measured (2 of 4 runs stored)"
    assert rows[("1", "sasrec")]["ours verdict"] == "not measured (3 of 6 runs stored)"
    assert rows[("7", "sasrec")]["ours verdict"] == C.SUPPORTED  # needs no run
    table = partial.claims.set_index("claim")
    assert table.loc["3a", "ours verdict"] == "not measured (2 of 4 runs stored)"
    # the runs its verdict waits for, estimated from the stored seed of the same kind; none for a measured claim
    assert re.fullmatch(r"2 to train: about [\d.]+ h serial, [\d.]+ h wall with \d+ workers?", table.loc["3a", "ours time left"])
    assert table.loc["7", "ours time left"] == ""
    assert int(partial.missing["missing"].iloc[0]) == int(partial.missing["runs"].iloc[0]) // 2
    command = partial.missing["command"].iloc[0]
    assert command.startswith("mltfrkit sweep claims ") and "--seeds 0 1" in command and "--executor processes" in command

    arguments = ["sweep", "claims", "--dataset", str(data), "--profile", "quick", "--epochs", "1", "--seeds", "0",
                 "--backbones", "sasrec", "--llms", "offline", "--sources", "all-MiniLM-L6-v2", "--experts", "1", "2",
                 "3", "--runs-dir", str(runs), "--executor", "local", "--no-progress"]
    arguments += [flag for key, value in options.items() for flag in ("--plugin-set", f"{key}={value}")]
    for configuration in ("ours", "authors"):
        assert cli(arguments + ["--configuration", configuration]) == 0
    assert sorted(runs.rglob("result.json")) == store_files  # the sweep's grid is the notebook's: all stored
