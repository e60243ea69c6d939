"""The result store, the experiment tables built from it, and the figure writer."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import pytest

from mltfrkit import store as store_module
from mltfrkit.data import DatasetNotFoundError
from mltfrkit.experiments import ABLATION_IMP, PAPER_TABLE2, Experiment, improvement, paired_p, summarise
from mltfrkit.runs import RunSpec, spec_from_config
from mltfrkit.store import ResultStore
from mltfrkit.train import TrainConfig

SOURCES = ["all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2"]  # two 384-d tables: a consensus expert exists


def link_cached_inputs(names=(), datasets=()):
    """Reuse token tables and fetched datasets from the user's default cache (no download) when the
    session cache lacks them; else fetch the tables, or skip if that is impossible."""
    import platformdirs

    from mltfrkit.vocab import DownloadError, load_table

    cache = Path(os.environ["MLTFR_CACHE_DIR"])
    default = Path(platformdirs.user_cache_dir("mltfrkit"))
    wanted = [(f"vocab/{n}", "meta.json") for n in names] + [(f"datasets/{d}", f"{d}.inter") for d in datasets]
    for sub, marker in wanted:
        if not (cache / sub).exists() and (default / sub / marker).exists() and cache != default:
            (cache / sub).parent.mkdir(parents=True, exist_ok=True)
            (cache / sub).symlink_to(default / sub, target_is_directory=True)
    for name in names:
        try:
            load_table(name)
        except DownloadError as exc:
            pytest.skip(f"token table {name} unavailable: {exc}")


def write_tiny_file(directory: Path) -> Path:
    """``directory/tiny.txt``: a sequence file (user item item ...) with a learnable cyclic pattern."""
    rng = np.random.default_rng(0)
    lines = []
    for user in range(40):
        start, length = int(rng.integers(1, 25)), int(rng.integers(4, 10))
        lines.append(" ".join([f"u{user}"] + [f"i{(start + step) % 25 + 1}" for step in range(length)]))
    path = Path(directory) / "tiny.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tiny_file(tmp_path):
    """A sequence file (user item item ...) with a learnable cyclic pattern."""
    return write_tiny_file(tmp_path)


def spec(path, **train):
    return RunSpec(str(path), train=TrainConfig(**{"epochs": 2, "device": "cpu", **train}),
                   model={"hidden_size": 16, "n_layers": 1, "n_heads": 1})


def interrupt_in_second_epoch(store, run):
    """Train ``run`` in ``store`` until its second epoch starts: its checkpoint holds one epoch."""
    def stop_in_second_epoch(message):
        if message.startswith("epoch   2"):
            raise KeyboardInterrupt

    store.log = stop_in_second_epoch
    with pytest.raises(KeyboardInterrupt):
        store.ensure(run)
    store.log = None


def test_store_trains_once_and_then_reads(tiny_file, tmp_path, monkeypatch):
    calls = []
    real = store_module.run_training
    monkeypatch.setattr(store_module, "run_training", lambda *a, **k: calls.append(1) or real(*a, **k))
    store = ResultStore(tmp_path / "runs", progress=False, log=None)
    assert store.get(spec(tiny_file)) is None
    first = store.ensure(spec(tiny_file))
    again = ResultStore(tmp_path / "runs", progress=False, log=None).ensure(spec(tiny_file))
    assert len(calls) == 1
    assert again["test"] == first["test"]
    run_dir = Path(again["run_dir"])
    assert run_dir.parent == tmp_path / "runs" / "mltfrkit-0.1.0"  # keyed by code version
    assert (run_dir / "result.json").exists() and run_dir.name.startswith("tiny-sasrec-none-")
    # a different configuration is a different run
    other = store.ensure(spec(tiny_file, seed=1))
    assert Path(other["run_dir"]) != run_dir and len(calls) == 2
    records = store.records()
    assert len(records) == 2 and sorted(records["seed"]) == [0, 1]
    assert {"dataset", "backbone", "plugin", "HR@20", "NDCG@20", "run_dir"} <= set(records.columns)
    # the stored config rebuilds the same spec (same key, same directory)
    assert store.run_dir(spec_from_config(first["config"])) == run_dir


def test_interrupted_run_resumes(tiny_file, tmp_path):
    messages = []

    def interrupt_during_second_epoch(message):  # log runs before the checkpoint
        messages.append(message)
        if message.startswith("epoch   2"):
            raise KeyboardInterrupt

    store = ResultStore(tmp_path / "runs", progress=False, log=interrupt_during_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        store.ensure(spec(tiny_file, epochs=3))
    assert store.get(spec(tiny_file, epochs=3)) is None
    assert (store.run_dir(spec(tiny_file, epochs=3)) / "checkpoint.pt").exists()
    store.log = messages.append
    result = store.ensure(spec(tiny_file, epochs=3))
    assert any(m.startswith("resumed from") for m in messages)
    assert [e["epoch"] for e in result["epochs"]] == [1, 2, 3]


def test_improvement_matches_the_papers_imp_column():
    # Table 2 prints Imp. = geometric mean of the HR and NDCG ratios; check three printed values.
    for dataset, backbone, printed in (("Pantry", "sasrec", 11.09), ("Pantry", "bert4rec", 45.04),
                                       ("Beer", "bert4rec", -6.25)):
        row = PAPER_TABLE2[dataset][backbone]
        assert improvement(*row["W/O"], *row["MLTFR"]) == pytest.approx(printed, abs=0.01)
    assert math.isnan(paired_p([0.1, 0.2], [0.2, 0.3]))
    assert paired_p([0.10, 0.20, 0.30], [0.11, 0.215, 0.33]) < 0.2


def test_summarise_mean_std_over_seeds():
    import pandas as pd

    records = pd.DataFrame({"backbone": ["a"] * 3, "seed": [0, 1, 2], "HR@20": [0.1, 0.2, 0.3],
                            "NDCG@20": [0.05, 0.05, 0.05]})
    table = summarise(records, ["backbone"])
    assert table.loc[0, "HR@20"] == pytest.approx(0.2) and table.loc[0, "HR@20 std"] == pytest.approx(0.1)
    assert table.loc[0, "NDCG@20 std"] == 0 and table.loc[0, "seeds"] == 3


def test_experiment_fails_at_once_without_the_data_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="Musical_Instruments_5.json.gz"):
        Experiment("Music", data_dir=str(tmp_path), runs_dir=str(tmp_path / "runs"))


def test_experiment_tables_and_figures(tiny_file, tmp_path):
    link_cached_inputs(SOURCES)
    from mltfrkit import viz

    exp = Experiment(str(tiny_file), backbones=["sasrec"], llms=SOURCES, seeds=[0], epochs=1, device="cpu",
                     runs_dir=str(tmp_path / "runs"), progress=False,
                     mltfr_options={"n_experts": 2, "max_vocab": 500, "fisher_samples": 16})
    table = exp.table2()
    assert list(table["backbone"]) == ["sasrec"]
    for column in ("W/O HR@20", "W/O NDCG@20", "MLTFR HR@20", "MLTFR NDCG@20", "Imp. (%)", "p (NDCG@20)", "seeds"):
        assert column in table
    assert "paper W/O HR@20" not in table  # not one of the paper's datasets
    expected = improvement(table.loc[0, "W/O HR@20"], table.loc[0, "W/O NDCG@20"],
                           table.loc[0, "MLTFR HR@20"], table.loc[0, "MLTFR NDCG@20"])
    assert table.loc[0, "Imp. (%)"] == pytest.approx(expected, nan_ok=True)
    assert table.loc[0, "MLTFR vs W/O 2-round (%)"] == pytest.approx(improvement(
        *table.loc[0, ["W/O 2-round HR@20", "W/O 2-round NDCG@20", "MLTFR HR@20", "MLTFR NDCG@20"]]), nan_ok=True)
    records = exp.store.records()
    assert sorted(records["plugin"]) == ["mltfr", "none", "none"]  # W/O, MLTFR and the W/O 2-round control
    assert records.loc[records["plugin"] == "mltfr", "rounds"].item() == 2  # consensus expert built

    ablation = exp.ablation()  # the full run is reused from Table 2
    assert {"Full HR@20", "w/o SC HR@20", ABLATION_IMP} <= set(ablation.columns)
    # the ablated model against the full one: negative means the consensus expert helps
    assert ablation.loc[0, ABLATION_IMP] == pytest.approx(
        improvement(*ablation.loc[0, ["Full HR@20", "Full NDCG@20", "w/o SC HR@20", "w/o SC NDCG@20"]]),
        nan_ok=True)
    assert len(exp.store.records()) == 4
    assert exp.ablation().equals(ablation)  # nothing retrained, same table

    fig = viz.plot_table2(table, exp.dataset)
    paths = viz.save_figure(fig, "table2", exp.dataset, tmp_path / "figures")
    assert [p.name for p in paths] == ["table2-tiny.png", "table2-tiny.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].stat().st_size > 0
    json.dumps(table.to_dict())  # plain numbers only


def full_and_ablated(path, epochs: int) -> tuple[RunSpec, RunSpec]:
    """A tiny full MLTFR run (two 384-d sources: a consensus expert) and its w/o SC ablation."""
    options = {"llms": SOURCES, "n_experts": 2, "max_vocab": 300, "fisher_samples": 8}
    full = RunSpec(str(path), train=TrainConfig(epochs=epochs, device="cpu"), plugin="mltfr",
                   model={"hidden_size": 16, "n_layers": 1, "n_heads": 1}, plugin_options=options)
    ablated = RunSpec(str(path), train=full.train, plugin="mltfr", model=full.model,
                      plugin_options={**options, "consensus": False})
    return full, ablated


def test_without_consensus_is_round_one_of_the_full_run(tiny_file, tmp_path):
    """The store records w/o SC from the full run's round 1 instead of training it; training it
    for real must give exactly the same curve and metrics, or that shortcut would be wrong."""
    link_cached_inputs(SOURCES)
    from mltfrkit.runs import load_trained

    full, ablated = full_and_ablated(tiny_file, epochs=2)
    store = ResultStore(tmp_path / "runs", progress=False, log=None)
    full_result = store.ensure(full)
    assert full_result["rounds"] == 2
    derived = store.ensure(ablated)
    assert derived["derived_from"] == full_result["run_dir"] and derived["rounds"] == 1
    assert derived["config"]["plugin_options"]["consensus"] is False
    assert store.get(ablated)["test"] == full_result["round1"]["test"]  # recorded on disk

    trained = ResultStore(tmp_path / "trained", progress=False, log=None, derive_ablation=False).ensure(ablated)
    assert "derived_from" not in trained and trained["rounds"] == 1
    assert [e["loss"] for e in trained["epochs"]] == [e["loss"] for e in derived["epochs"]]
    assert trained["test"] == derived["test"] and trained["best_valid"] == derived["best_valid"]

    _, _, model = load_trained(derived["run_dir"])  # the inspector can open the recorded ablation
    _, _, reference = load_trained(trained["run_dir"])
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_run_with_per_epoch_test_answers_for_the_plain_spec(tiny_file, tmp_path, monkeypatch):
    """`test_every_epoch` only reads the test split, so its run stands in for the plain spec (nothing is
    trained twice); training the plain spec for real gives exactly the same `test`, with MLTFR too."""
    link_cached_inputs(SOURCES)
    options = {"llms": SOURCES, "n_experts": 2, "max_vocab": 300, "fisher_samples": 8}
    plain = RunSpec(str(tiny_file), train=TrainConfig(epochs=2, device="cpu"), plugin="mltfr",
                    model={"hidden_size": 16, "n_layers": 1, "n_heads": 1}, plugin_options=options)
    tracked = RunSpec(str(tiny_file), train=TrainConfig(epochs=2, device="cpu", test_every_epoch=True),
                      plugin="mltfr", model=plain.model, plugin_options=options)
    calls = []
    real = store_module.run_training
    monkeypatch.setattr(store_module, "run_training", lambda *a, **k: calls.append(1) or real(*a, **k))
    store = ResultStore(tmp_path / "runs", progress=False, log=None)
    stored = store.ensure(tracked)
    answered = store.ensure(plain)
    assert len(calls) == 1 and answered["run_dir"] == stored["run_dir"] and "test_oracle" in answered
    assert store.get(tracked)["run_dir"] == stored["run_dir"]
    assert ResultStore(tmp_path / "other", progress=False, log=None).get(tracked) is None
    trained = ResultStore(tmp_path / "plain", progress=False, log=None).ensure(plain)
    assert trained["test"] == stored["test"] and trained["best_valid"] == stored["best_valid"]
    assert "test_oracle" not in trained
    # the other way round does not hold: a plain run has no per-epoch test curve to offer
    assert ResultStore(tmp_path / "plain", progress=False, log=None).get(tracked) is None
    # asked for both at once, a grid trains the per-epoch-test one only, and it answers for both
    both = ResultStore(tmp_path / "both", progress=False, log=None).ensure_many([plain, tracked])
    assert len(calls) == 3 and both[0]["run_dir"] == both[1]["run_dir"] and "test_oracle" in both[0]


def test_a_plain_patience_run_answers_for_the_relative_rule_only_when_it_stops_alike(tiny_file, tmp_path):
    """The default rule became patience max(patience, relative x best epoch); a run stored under plain
    patience stands in for it only if replaying the new rule on its curve stops at the same epoch, and
    then it is exactly the run the new rule trains."""
    from mltfrkit.store import stops_alike

    store = ResultStore(tmp_path / "runs", progress=False, log=None)
    plain = store.ensure(spec(tiny_file, epochs=40, patience=1, patience_relative=0.0, lr=0.01))
    best, trained = plain["best_epoch"], len(plain["epochs"])
    assert plain["stopped_early"] and trained == best + 1
    alike = spec(tiny_file, epochs=40, patience=1, patience_relative=1.0 / best, lr=0.01)  # wait stays 1
    longer = spec(tiny_file, epochs=40, patience=1, patience_relative=2.0, lr=0.01)  # wait 2 x best > 1
    assert stops_alike(plain, alike.train) and not stops_alike(plain, longer.train)
    answered = store.get(alike)
    assert answered["run_dir"] == plain["run_dir"] and "same epoch" in answered["equivalent_stopping"]
    assert store.get(longer) is None
    real = ResultStore(tmp_path / "real", progress=False, log=None).ensure(alike)
    assert real["test"] == plain["test"] and len(real["epochs"]) == trained
    assert [e["loss"] for e in real["epochs"]] == [e["loss"] for e in plain["epochs"]]
    assert len(ResultStore(tmp_path / "real2", progress=False, log=None).ensure(longer)["epochs"]) > trained


def test_stops_alike_replays_every_round_and_the_epoch_limit():
    from mltfrkit.store import stops_alike

    def curve(values):
        return [{"epoch": i, "valid": {"NDCG@20": v}} for i, v in enumerate(values, start=1)]

    early = [0.1, 0.3] + [0.2] * 10  # best at 2, stopped after 12 (plain patience 10)
    late = [0.1 + 0.01 * i for i in range(15)] + [0.2] * 10  # rising to epoch 15, stopped after 25
    relative = TrainConfig(epochs=100, patience=10, patience_relative=1.0)
    assert stops_alike({"epochs": curve(early)}, relative)
    assert not stops_alike({"epochs": curve(late)}, relative)  # would wait 15 epochs, not 10
    assert not stops_alike({"round1": {"epochs": curve(early)}, "round2": {"epochs": curve(late)}}, relative)
    capped = TrainConfig(epochs=len(late), patience=10, patience_relative=1.0)
    assert stops_alike({"epochs": curve(late)}, capped)  # ran to the epoch limit: the same either way
    authors = [{"epoch": i, "valid": {}, "test": {"NDCG@20": v}} for i, v in enumerate(early, start=1)]
    assert stops_alike({"epochs": authors}, relative)  # the authors' holdout selects on the test curve


@pytest.mark.parametrize("content", ['{"config": {"dataset"', "{}", "[]", "", '{"config": {}, "test": {}}'])
def test_invalid_result_file_is_skipped_and_resumed(tiny_file, tmp_path, content, monkeypatch):
    """One truncated or empty result.json broke every table (JSONDecodeError / KeyError: 'config');
    now records() skips it naming the file, and ensure() resumes the run from its checkpoint."""
    from mltfrkit.store import InvalidResultWarning

    store = ResultStore(tmp_path / "runs", progress=False, log=None)
    good = store.ensure(spec(tiny_file))
    broken = store.ensure(spec(tiny_file, seed=1))
    broken_file = Path(broken["run_dir"]) / "result.json"
    broken_file.write_text(content)
    with pytest.warns(InvalidResultWarning, match=str(broken_file)):
        records = store.records()
    assert list(records["seed"]) == [0] and list(records["run_dir"]) == [good["run_dir"]]
    assert records["data_sha256"].tolist() == [good["config"]["data_sha256"]] and len(records["data_sha256"][0]) == 64
    with pytest.warns(InvalidResultWarning):
        assert store.get(spec(tiny_file, seed=1)) is None
    import mltfrkit.train.trainer as trainer_module

    def no_training(*args, **kwargs):
        raise AssertionError("resumed runs must not train an epoch again")

    monkeypatch.setattr(trainer_module.torch.optim.Adam, "step", no_training)
    with pytest.warns(InvalidResultWarning):
        again = store.ensure(spec(tiny_file, seed=1))  # from the finished checkpoint: no epoch trained
    assert again["test"] == broken["test"]
    assert json.loads(broken_file.read_text())["test"] == broken["test"]


def test_a_stalled_seed_is_found_in_the_store_and_named_under_the_tables(tiny_file, tmp_path):
    """ResultStore.stalled and Experiment.stall_note on stored runs: three seeds trained, then seed 0's stored curve
    replaced by a short flat one far below the others' (as a seed that stopped on a plateau): it alone is stalled,
    a missing seed is ignored, and the note the notebooks print names it."""
    from mltfrkit.store import RESULT

    runs = tmp_path / "runs"
    exp = Experiment(str(tiny_file), backbones=["sasrec"], seeds=[0, 1, 2], epochs=3, device="cpu",
                     runs_dir=str(runs), progress=False)
    specs = [exp.spec("sasrec", seed=seed) for seed in (0, 1, 2)]
    exp.store.ensure_many(specs)
    for spec, values in zip(specs, ([0.001, 0.001], [0.01, 0.02, 0.03], [0.01, 0.03, 0.02])):
        path = exp.store.run_dir(spec) / RESULT
        result = json.loads(path.read_text())
        epochs = [{**entry, "valid": {**entry["valid"], "NDCG@20": v}} for entry, v in zip(result["epochs"], values)]
        path.write_text(json.dumps({**result, "epochs": epochs, "stopped_early": len(values) < 3}))
    fresh = Experiment(str(tiny_file), backbones=["sasrec"], seeds=[0, 1, 2], epochs=3, device="cpu",
                       runs_dir=str(runs), progress=False)
    missing = fresh.spec("sasrec", seed=7)
    assert fresh.store.stalled([*specs, missing]) == {str(fresh.store.run_dir(specs[0]))}
    assert fresh.store.stalled(specs[1:]) == set()  # no stalled seed among them
    fresh.grid = lambda name, **options: specs  # the note of an experiment whose grid is these three runs
    note = fresh.stall_note("table2")
    assert note.startswith("1 of 3 stored runs stalled") and f"sasrec seed 0 ({fresh.store.run_dir(specs[0]).name})" in note
    assert fresh.runs_note("table2").endswith(note)


def test_run_labels_tell_the_runs_of_a_grid_apart(tiny_file):
    """stall_note names runs by run_label: W/O and its 2-round control, MLTFR and w/o SC, token sources and expert
    counts each get a different label."""
    from mltfrkit.experiments import run_label

    base = spec(tiny_file)
    assert run_label(base) == "sasrec"
    assert run_label(RunSpec(base.dataset, train=base.train, schedule="two_round")) == "sasrec (two_round)"
    assert run_label(RunSpec(base.dataset, backbone="bert4rec", plugin="te", plugin_options={"llm": "SmolLM2-135M"})) \
        == "bert4rec + te (SmolLM2-135M)"
    full = RunSpec(base.dataset, plugin="mltfr", plugin_options={"n_experts": 2})
    ablated = RunSpec(base.dataset, plugin="mltfr", plugin_options={"n_experts": 2, "consensus": False})
    random = RunSpec(base.dataset, plugin="mltfr", plugin_options={"n_experts": 2, "tables": "random"})
    labels = [run_label(s) for s in (full, ablated, random)]
    assert labels == ["sasrec + mltfr (m = 2)", "sasrec + mltfr (m = 2, w/o SC)", "sasrec + mltfr (m = 2, tables = random)"]


def test_runs_at_their_epoch_cap_are_told_from_early_stopped_ones(tiny_file, tmp_path):
    """epoch_capped: a 2-epoch run with patience 10 ends at its cap; the same run with patience 1 and a flat curve
    would stop early; a run not stored counts as neither; and a w/o SC run is judged by its full run's round 1."""
    from mltfrkit.store import RESULT, at_epoch_cap

    store = ResultStore(tmp_path / "runs", progress=False, log=None)
    capped_spec, missing = spec(tiny_file, seed=0), spec(tiny_file, seed=9)
    store.ensure(capped_spec)
    stored, capped = store.epoch_capped([capped_spec, missing])
    assert stored == capped == {str(store.run_dir(capped_spec))}
    # the spec's rule decides, not the stored flag (a twin run's flag answers for the twin's rule): a flag saying
    # "stopped early" does not hide a curve that ran to the cap ...
    path = store.run_dir(capped_spec) / RESULT
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**result, "stopped_early": True}))
    fresh = ResultStore(tmp_path / "runs", progress=False, log=None)
    assert fresh.epoch_capped([capped_spec]) == ({str(fresh.run_dir(capped_spec))},) * 2
    # ... and a curve the rule would have stopped at its last epoch is stored, not capped
    epochs = [{**entry, "valid": {**entry["valid"], "NDCG@20": 1.0 - index}} for index, entry in enumerate(result["epochs"])]
    path.write_text(json.dumps({**result, "epochs": epochs}))
    strict = spec(tiny_file, seed=0, patience=1)
    fresh = ResultStore(tmp_path / "runs", progress=False, log=None)
    stored_result = fresh.epoch_capped([capped_spec])
    assert stored_result == ({str(fresh.run_dir(capped_spec))},) * 2  # patience 10: still at the cap
    assert at_epoch_cap(json.loads(path.read_text()), strict.train) is False
    # a w/o SC spec whose full run is stored (with its round 1): judged by that round 1, without training
    link_cached_inputs(SOURCES)
    full, ablated = full_and_ablated(tiny_file, epochs=1)
    fresh.ensure(full)
    (fresh.run_dir(ablated) / RESULT).unlink(missing_ok=True)  # recorded or not, it is read from the full run
    stored, capped = fresh.epoch_capped([ablated])
    assert stored == capped == {str(fresh.run_dir(ablated))}  # one epoch: round 1 ran to its cap
