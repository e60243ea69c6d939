"""`ResultStore.plan` / `Experiment.plan` / `mltfrkit sweep --plan`: what a grid still needs and how long it takes.

Real tiny runs are trained into temporary stores; the plan is then checked against what `ensure_many` actually
trains, and its estimates against the stored runs' measured seconds."""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

import pytest

from mltfrkit import store as store_module
from mltfrkit.cli import main
from mltfrkit.executors import concurrent_runs, make_executor
from mltfrkit.plan import (ESTIMATE_LEVELS, NO_ESTIMATE, SCALED_ANY_PLUGIN_LEVEL, SCALED_LEVEL, SETTINGS_SCALED_LEVEL,
                           SIZE_SCALED_LEVEL, TIMING_CAUTION, Estimator, GridPlan, TimedRun, batch_totals, cost_fields,
                           epoch_units, held_out_check, simulated_wall)
from mltfrkit.store import ResultStore
from test_store import (SOURCES, full_and_ablated, interrupt_in_second_epoch, link_cached_inputs, spec,  # noqa: F401
                        tiny_file, write_tiny_file)


def quiet_store(root) -> ResultStore:
    return ResultStore(root, progress=False, log=None)


def files_under(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")} if root.exists() else set()


def stored_seconds(store: ResultStore) -> dict[str, float]:
    return {str(path.parent): json.loads(path.read_text())["seconds"] for path in store.result_files()}


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """A store holding three real tiny SASRec runs (seeds 0, 1, 2) and the data file they were trained on."""
    base = tmp_path_factory.mktemp("plan")
    path = write_tiny_file(base)
    store = quiet_store(base / "runs")
    store.ensure_many([spec(path, seed=seed) for seed in (0, 1, 2)])
    return path, base / "runs"


@pytest.fixture
def store_copy(three_runs, tmp_path):
    """A copy of the three-run store that a test may train into."""
    path, root = three_runs
    shutil.copytree(root, tmp_path / "runs")
    return path, quiet_store(tmp_path / "runs")


def counting_training(monkeypatch) -> list[str]:
    """Record the run directory of every real training the store starts."""
    trained = []
    real = store_module.run_training

    def counted(spec, *args, **kwargs):
        trained.append(str(store_module.run_dir_for(spec, kwargs["split"], kwargs["root"])))
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(store_module, "run_training", counted)
    return trained


def test_the_plan_counts_what_ensure_many_then_trains(store_copy, monkeypatch):
    """Stored runs, identical specs, a plain spec with its per-epoch-test twin and an interrupted run: the plan's
    runs to train are exactly the runs ensure_many trains afterwards, and planning writes nothing."""
    path, store = store_copy
    interrupted = spec(path, seed=5, epochs=3)
    interrupt_in_second_epoch(store, interrupted)
    plain = spec(path, seed=4)
    tracked = replace(plain, train=replace(plain.train, test_every_epoch=True))
    grid = [spec(path, seed=0), spec(path, seed=1), spec(path, seed=3), spec(path, seed=3), plain, tracked, interrupted]

    before = files_under(store.root)
    plan = store.plan(grid, workers=2)
    assert files_under(store.root) == before  # read only: no directory, no recorded result

    assert (plan.grid, plan.stored, plan.recorded, plan.to_train, plan.resumable) == (7, 2, 0, 3, 1)
    rows = plan.runs.set_index("run_dir")
    assert rows.loc[store.run_dir(spec(path, seed=3)).name, "entries"] == 2  # identical specs: one run
    assert rows.loc[store.run_dir(tracked).name, "entries"] == 2  # the tracked twin answers for the plain spec
    assert store.run_dir(plain).name not in rows.index
    assert bool(rows.loc[store.run_dir(interrupted).name, "resumes"])
    assert "train.epochs=3" in rows.loc[store.run_dir(interrupted).name, "options"]  # what tells it apart
    assert plan.runs["resumes"].sum() == 1

    trained = counting_training(monkeypatch)
    results = store.ensure_many(grid)
    assert sorted(Path(d).name for d in trained) == sorted(plan.runs["run_dir"])
    assert all(result is not None for result in results)
    after = store.plan(grid, workers=2)
    assert (after.stored, after.to_train) == (7, 0)
    assert "nothing to train" in after.totals_line("grid")


def test_time_left_is_the_estimate_less_the_training_done_and_never_nothing():
    from mltfrkit.plan import MIN_LEFT_SHARE, time_left

    assert time_left(100.0, 0.0) == 100.0
    assert time_left(100.0, 30.0) == 70.0
    assert time_left(100.0, 95.0) == pytest.approx(100.0 * MIN_LEFT_SHARE)  # past its estimate: not ended
    assert time_left(100.0, 500.0) == pytest.approx(100.0 * MIN_LEFT_SHARE)
    assert time_left(100.0, -5.0) == 100.0
    assert math.isnan(time_left(float("nan"), 30.0))


def test_a_resumed_run_counts_only_what_is_left_of_it(store_copy):
    """An interrupted run resumes from its checkpoint: the plan counts its estimate less the seconds the checkpoint
    holds, in the serial and wall totals and in the per-kind hours; the grid from an empty store counts it whole."""
    from mltfrkit.plan import checkpointed_seconds
    from mltfrkit.train.checkpoint import load_checkpoint

    path, store = store_copy
    interrupted, fresh = spec(path, seed=5, epochs=3), spec(path, seed=6, epochs=3)
    interrupt_in_second_epoch(store, interrupted)
    saved = load_checkpoint(store.run_dir(interrupted) / "checkpoint.pt")
    assert saved["state"]["epoch"] == 1
    plan = store.plan([interrupted, fresh], workers=1)
    rows = plan.runs.set_index("run_dir")
    resumed, new = rows.loc[store.run_dir(interrupted).name], rows.loc[store.run_dir(fresh).name]
    trained = saved["state"]["seconds"]
    assert trained > 0 and resumed["trained_s"] == pytest.approx(trained)
    assert checkpointed_seconds(store.run_dir(interrupted)) == pytest.approx(trained)
    assert resumed["estimate_s"] == pytest.approx(new["estimate_s"])  # the same kind: the same whole estimate
    assert resumed["left_s"] == pytest.approx(time_left_expected(resumed["estimate_s"], trained))
    assert resumed["left_s"] < resumed["estimate_s"]
    assert (new["trained_s"], new["left_s"]) == (0.0, new["estimate_s"])
    assert plan.serial_seconds == pytest.approx(resumed["left_s"] + new["left_s"])
    assert plan.wall_seconds == pytest.approx(plan.serial_seconds)  # one worker
    assert plan.summary()["estimated h"].sum() == pytest.approx(plan.serial_seconds / 3600)
    assert plan.whole_serial_seconds == pytest.approx(plan.stored_seconds + 2 * new["estimate_s"])  # from empty
    assert "counts what is left of it" in plan.report("grid")
    # the totals line then also says what the whole grid takes, though nothing of it is stored yet
    alone = store.plan([interrupted], workers=1)
    assert alone.stored == 0 and alone.serial_seconds < alone.whole_serial_seconds
    assert f"the whole grid: {alone.whole_serial_seconds / 3600:.1f} h serial" in alone.totals_line("grid")


def test_a_two_round_run_interrupted_in_round_two_counts_both_rounds_checkpoints(store_copy):
    """Each round checkpoints its own epochs (round1/, round2/): what the run has trained is their sum."""
    from mltfrkit.plan import checkpointed_seconds
    from mltfrkit.train.checkpoint import load_checkpoint

    path, store = store_copy
    run = replace(spec(path, seed=7, epochs=3), schedule="two_round")
    rounds_started = []

    def stop_in_round_two(message):
        if message.startswith("epoch   1"):
            rounds_started.append(message)
        if len(rounds_started) == 2 and message.startswith("epoch   2"):
            raise KeyboardInterrupt

    store.log = stop_in_round_two
    with pytest.raises(KeyboardInterrupt):
        store.ensure(run)
    store.log = None
    run_dir = store.run_dir(run)
    first, second = (load_checkpoint(run_dir / name / "checkpoint.pt")["state"] for name in ("round1", "round2"))
    assert second["epoch"] == 1 and first["seconds"] > 0 and second["seconds"] > 0
    assert checkpointed_seconds(run_dir) == pytest.approx(first["seconds"] + second["seconds"])
    row = store.plan([run], workers=1).runs.iloc[0]
    assert row["trained_s"] == pytest.approx(first["seconds"] + second["seconds"])


def time_left_expected(estimate, trained):
    return max(estimate - trained, 0.1 * estimate)


def test_a_without_consensus_run_whose_full_run_is_in_the_grid_is_not_trained(tiny_file, tmp_path, monkeypatch):
    """w/o SC is recorded from its full run's round 1, also when the full run is the per-epoch-test twin of the
    grid's: the plan counts one run to train and ensure_many trains that one only, answering every entry."""
    link_cached_inputs(SOURCES)
    full, ablated = full_and_ablated(tiny_file, epochs=1)
    store = quiet_store(tmp_path / "runs")
    simple = store.plan([ablated, full])
    assert (simple.to_train, simple.recorded_after, simple.recorded_from_stored) == (1, 1, 0)
    assert simple.runs["run_dir"].tolist() == [store.run_dir(full).name]
    assert simple.runs["wo_sc_after"].tolist() == [1]

    def tracked(run):
        return replace(run, train=replace(run.train, test_every_epoch=True))

    # A plain ablation answered by its tracked twin needs the tracked full run: with only the plain full run in
    # the grid, the tracked ablation is trained (not silently left to a second pass the plan did not count).
    mixed = [full, ablated, tracked(ablated)]
    mixed_plan = quiet_store(tmp_path / "mixed").plan(mixed)
    assert sorted(mixed_plan.runs["run_dir"]) == sorted([store.run_dir(full).name, store.run_dir(tracked(ablated)).name])
    trained = counting_training(monkeypatch)
    mixed_results = quiet_store(tmp_path / "mixed").ensure_many(mixed)
    assert sorted(Path(d).name for d in trained) == sorted(mixed_plan.runs["run_dir"])
    assert all(result is not None for result in mixed_results)
    trained.clear()

    grid = [ablated, tracked(ablated), full, tracked(full)]
    plan = store.plan(grid)
    assert (plan.to_train, plan.recorded_after) == (1, 2)
    assert plan.runs["run_dir"].tolist() == [store.run_dir(tracked(full)).name]
    assert "2 w/o SC recorded from full runs, 1 to train for 2 grid entries" in plan.totals_line("grid")

    results = store.ensure_many(grid)
    assert [Path(d).name for d in trained] == plan.runs["run_dir"].tolist()
    assert all(result is not None for result in results)
    assert results[0]["derived_from"] == results[1]["derived_from"] == str(store.run_dir(tracked(full)))
    # the whole grid counts the one run trained: the recorded ablations took no time of their own
    done = store.plan(grid)
    assert (done.to_train, done.stored_timed, done.stored_untimed) == (0, 1, 0)
    assert done.stored_seconds == pytest.approx(store.get(tracked(full))["seconds"])
    # an ablation whose full run is outside the grid counts its own (round 1) time
    alone = store.plan([ablated])
    assert alone.stored_timed == 1 and alone.stored_seconds == pytest.approx(results[0]["seconds"])
    # the ablations' recorded results removed, the stored full run answers for them: recorded, not trained
    for run in (ablated, tracked(ablated)):
        (store.run_dir(run) / "result.json").unlink()
    before = files_under(store.root)
    again = quiet_store(tmp_path / "runs").plan([ablated])
    assert (again.stored, again.recorded_from_stored, again.to_train) == (0, 1, 0)
    assert files_under(store.root) == before  # the plan does not record it


def test_the_estimate_is_the_median_of_the_most_similar_stored_runs(three_runs):
    path, root = three_runs
    store = quiet_store(root)
    seconds = stored_seconds(store)
    assert len(seconds) == 3 and all(s > 0 for s in seconds.values())
    median = statistics.median(seconds.values())
    new_seed = spec(path, seed=7)
    tracked = spec(path, seed=9, test_every_epoch=True)  # another seed: with seed 7 it would answer for new_seed
    other_backbone = replace(new_seed, backbone="bert4rec")
    plan = store.plan([new_seed, tracked, other_backbone])
    rows = plan.runs.set_index("run_dir")
    levels = [label for label, _ in ESTIMATE_LEVELS]
    for run, level in ((new_seed, levels[0]), (tracked, levels[1]), (other_backbone, levels[3])):
        row = rows.loc[store.run_dir(run).name]
        assert row["estimate_s"] == pytest.approx(median)
        assert (row["estimate_from"], row["estimate_runs"]) == (level, 3)
    assert plan.serial_seconds == pytest.approx(3 * median)
    assert plan.estimate_sources == 3


def test_no_stored_run_like_it_gives_no_estimate(three_runs, tmp_path):
    """A two-round schedule trains twice: no single-round run may stand in for it, and nothing is invented."""
    path, root = three_runs
    store = quiet_store(root)
    two_round = replace(spec(path, seed=0), schedule="two_round")
    known = spec(path, seed=8)
    plan = store.plan([two_round, known], workers=2)
    rows = plan.runs.set_index("run_dir")
    missing = rows.loc[store.run_dir(two_round).name]
    assert math.isnan(missing["estimate_s"]) and missing["estimate_from"] == NO_ESTIMATE
    assert missing["estimate_runs"] == 0
    assert plan.unestimated == 1
    assert plan.serial_seconds == pytest.approx(rows.loc[store.run_dir(known).name, "estimate_s"])
    assert "1 run has no estimate" in plan.totals_line("grid")
    empty = quiet_store(tmp_path / "empty").plan([known])
    assert math.isnan(empty.runs["estimate_s"].iloc[0]) and empty.serial_seconds == 0
    assert f"no estimate: {NO_ESTIMATE}" in empty.totals_line("grid")


def test_a_backbone_new_to_a_dataset_is_estimated_from_its_time_on_another_dataset_scaled():
    """CL4SRec measured on A only: on B its estimate is its A time scaled by B / A of the backbones of its encoding
    run on both. A prefix-encoded backbone (FMLP-Rec) is never scaled by, nor estimated from, SASRec-like runs: its
    time grows with interactions, theirs with users, so with no prefix-encoded run to go by it has no estimate."""
    def run(dataset, backbone, seconds, plugin="mltfr", rounds=1):
        config = {"dataset": dataset, "backbone": backbone, "plugin": plugin, "schedule": "single", "train": {},
                  "plugin_options": {"consensus": rounds == 2, "n_experts": 4, "max_vocab": 2000},
                  "token_tables": [{"name": "t0", "d": 64}, {"name": "t1", "d": 64}] if plugin == "mltfr" else []}
        return TimedRun(f"{dataset}-{backbone}-{plugin}-{rounds}-{seconds}", seconds, cost_fields(config))

    runs = [run("A", "sasrec", 100), run("A", "sasrec", 120), run("A", "bert4rec", 200), run("A", "cl4srec", 1000),
            run("B", "sasrec", 330), run("B", "bert4rec", 600),
            run("C", "sasrec", 50), run("C", "cl4srec", 400, rounds=2),  # C: CL4SRec with two rounds only
            run("A", "fmlprec", 5000), run("A", "linrec", 10, plugin="none")]
    assert [runs[i].fields["encoding"] for i in (0, 8)] == ["sequences", "prefix windows"]
    estimator = Estimator(runs)
    here = runs[4].fields
    seconds, level, used = estimator.estimate({**here, "backbone": "cl4srec"})
    # ratios B / A: sasrec 330 / 110 = 3, bert4rec 600 / 200 = 3; C's CL4SRec has two rounds and is not used
    assert (seconds, level) == (pytest.approx(3000), SCALED_LEVEL)
    assert {r.run_dir for r in used} == {r.run_dir for r in runs[:6]}
    # a backbone measured on this dataset keeps its own time; one never measured anywhere: the dataset's median
    assert estimator.estimate({**here, "backbone": "sasrec"})[:2] == (330, ESTIMATE_LEVELS[0][0])
    assert estimator.estimate({**here, "backbone": "linrec"})[1] == ESTIMATE_LEVELS[3][0]
    # FMLP-Rec on B: no prefix-encoded run on B to scale by or to take a median of: no estimate, not SASRec's time
    fmlprec = cost_fields({"dataset": "B", "backbone": "fmlprec", "plugin": "mltfr", "schedule": "single",
                           "train": {}, "plugin_options": {"consensus": False}, "token_tables": []})
    assert math.isnan(estimator.estimate(fmlprec)[0]) and estimator.estimate(fmlprec)[1] == NO_ESTIMATE
    with_bsarec = Estimator(runs + [run("A", "bsarec", 2000), run("B", "bsarec", 12000)])
    assert with_bsarec.estimate(fmlprec)[:2] == (pytest.approx(30000), SCALED_LEVEL)  # scaled by BSARec: 6x
    # no backbone of its encoding in common with the other dataset: nothing to scale by
    alone = Estimator([run("A", "cl4srec", 1000), run("B", "sasrec", 330)])
    assert alone.estimate({**here, "backbone": "cl4srec"})[1] == ESTIMATE_LEVELS[3][0]
    # a median of 0 seconds there (only a hand-made estimator can hold one) is no ratio, not a ZeroDivisionError
    zero = Estimator([run("A", "cl4srec", 1000), run("A", "sasrec", 0), run("B", "sasrec", 330)])
    assert zero.estimate({**here, "backbone": "cl4srec"})[:2] == (330, ESTIMATE_LEVELS[3][0])


def test_a_plug_in_new_to_a_dataset_is_scaled_by_the_other_plug_ins_runs_as_a_last_resort():
    """LLM-TE on B, where no LLM-TE run and no run of its encoding with that plug-in exists: its time on A, scaled
    by B / A of the runs of any plug-in measured on both (its own backbone's W/O and MLTFR runs among them);
    never when a same-dataset level matches, and never across encodings."""
    def run(dataset, backbone, plugin, seconds):
        config = {"dataset": dataset, "backbone": backbone, "plugin": plugin, "schedule": "single", "train": {},
                  "plugin_options": {"consensus": False}, "token_tables": []}
        return TimedRun(f"{dataset}-{backbone}-{plugin}-{seconds}", seconds, cost_fields(config))

    runs = [run("A", "sasrec", "none", 100), run("B", "sasrec", "none", 400),  # ratio 4
            run("A", "sasrec", "mltfr", 300), run("B", "sasrec", "mltfr", 1800),  # ratio 6
            run("A", "sasrec", "te", 200), run("A", "fmlprec", "none", 50), run("B", "fmlprec", "none", 5000)]
    estimator = Estimator(runs)
    te_b = {**runs[1].fields, "plugin": "te"}
    seconds, level, used = estimator.estimate(te_b)
    assert (seconds, level) == (pytest.approx(200 * 5), SCALED_ANY_PLUGIN_LEVEL)  # the median ratio of 4 and 6
    assert {r.run_dir for r in used} == {r.run_dir for r in runs[:5]}  # FMLP-Rec's 100x is another encoding
    # a same-dataset run of the plug-in (another backbone of the encoding) comes first
    with_bert = Estimator(runs + [run("B", "bert4rec", "te", 700)])
    assert with_bert.estimate(te_b)[:2] == (700, ESTIMATE_LEVELS[3][0])
    # nothing measured on both datasets: still no estimate
    assert Estimator(runs[4:5] + [run("B", "sasrec", "none", 400)]).estimate(te_b)[1] == NO_ESTIMATE


def test_a_backbone_alone_in_its_encoding_is_scaled_by_the_datasets_sizes_as_the_last_resort():
    """FMLP-Rec on B where no prefix-encoded backbone has run: its time on A times B / A in training windows (its
    epoch grows with them), never with users; no sizes, or none for A, leaves it without an estimate. The sizes
    are asked for only when this level is reached, once per dataset."""
    def run(dataset, backbone, plugin, seconds):
        config = {"dataset": dataset, "backbone": backbone, "plugin": plugin, "schedule": "single", "train": {},
                  "plugin_options": {"consensus": False}, "token_tables": []}
        return TimedRun(f"{dataset}-{backbone}-{plugin}-{seconds}", seconds, cost_fields(config))

    runs = [run("A", "fmlprec", "mltfr", 1000), run("A", "fmlprec", "mltfr", 1200), run("A", "sasrec", "none", 100),
            run("B", "sasrec", "none", 20)]  # SASRec: B is 5x faster; B has 3x A's windows
    runs[0].fields["epochs"] = runs[1].fields["epochs"] = 100  # no epoch counts: as if as many epochs
    asked = []

    def sizes(dataset):
        asked.append(dataset)
        return {"A": {"sequences": 1000.0, "prefix windows": 10000.0},
                "B": {"sequences": 200.0, "prefix windows": 30000.0}}.get(dataset)

    fmlprec_b = {**runs[0].fields, "dataset": "B"}
    assert Estimator(runs).estimate(fmlprec_b)[1] == NO_ESTIMATE  # no sizes: nothing to scale by
    estimator = Estimator(runs, sizes=sizes)
    assert estimator.estimate({**runs[3].fields, "backbone": "linrec"})[1] == ESTIMATE_LEVELS[3][0] and asked == []
    seconds, level, used = estimator.estimate(fmlprec_b)
    assert (seconds, level) == (pytest.approx(1100 * 3), SIZE_SCALED_LEVEL) and len(used) == 2
    estimator.estimate(fmlprec_b)
    assert sorted(asked) == ["A", "B"]  # once each
    # with the epochs they trained: seconds per epoch (1000 / 20 and 1200 / 40), times the cap, times 3: an
    # upper bound for a run early stopping may end sooner
    timed = [replace(runs[0], epochs_trained=20), replace(runs[1], epochs_trained=40), *runs[2:]]
    capped = {**fmlprec_b, "epochs": 100}
    assert Estimator(timed, sizes=sizes).estimate(capped)[0] == pytest.approx((50 + 30) / 2 * 100 * 3)
    two_rounds = {**capped, "rounds": 2}  # no two-round FMLP-Rec run stored: nothing of the kind to scale
    assert Estimator(timed, sizes=sizes).estimate(two_rounds)[1] == NO_ESTIMATE
    assert Estimator(runs, sizes=lambda d: None).estimate(fmlprec_b)[1] == NO_ESTIMATE
    broken = Estimator(runs, sizes=lambda d: (_ for _ in ()).throw(FileNotFoundError(d)))
    assert broken.estimate(fmlprec_b)[1] == NO_ESTIMATE  # a dataset that cannot be read: no estimate, no error


def settings_run(backbone, seconds, epochs, authors=False, dataset="A", cap=100):
    """A timed MLTFR run under our settings or the authors' (trainable tables, a test evaluation every epoch)."""
    config = {"dataset": dataset, "backbone": backbone, "plugin": "mltfr", "schedule": "single",
              "train": {"test_every_epoch": authors, "epochs": cap},
              "plugin_options": {"consensus": False, "n_experts": 6 if authors else 4, "max_vocab": 2000,
                                 "trainable_tables": authors}, "token_tables": []}
    return TimedRun(f"{dataset}-{backbone}-{authors}-{seconds}-{epochs}", seconds, cost_fields(config), epochs)


def test_a_backbone_measured_under_other_settings_is_scaled_per_epoch_by_the_other_backbones():
    """BSARec + MLTFR under the authors' settings, measured here only under ours: its time per epoch under ours,
    times how much longer an epoch of the other backbones of its encoding takes under the authors' (FMLP-Rec: 3x,
    no matter that it trained 10 epochs there and 40 under ours: early stopping is not the settings' cost), times
    the epochs BSARec trained under ours; SASRec-like backbones are used only when none of its encoding has both."""
    runs = [settings_run("bsarec", 1000, 20),  # 50 s an epoch under ours
            settings_run("fmlprec", 800, 40), settings_run("fmlprec", 600, 10, authors=True),  # 20 -> 60 s: 3x
            settings_run("sasrec", 100, 10), settings_run("sasrec", 1000, 10, authors=True)]  # 10x, another encoding
    authors = {**runs[0].fields, **{k: runs[2].fields[k] for k in ("n_experts", "trainable_tables",
                                                                    "test_every_epoch")}}
    estimator = Estimator(runs)
    seconds, level, used = estimator.estimate(authors)
    assert (seconds, level) == (pytest.approx(50 * 3 * 20), SETTINGS_SCALED_LEVEL)
    assert {run.run_dir for run in used} == {run.run_dir for run in runs[:3]}
    # without a backbone of its encoding measured under both: the others' ratio (SASRec's 10x)
    no_fmlp = Estimator([runs[0], *runs[3:]])
    assert no_fmlp.estimate(authors)[:2] == (pytest.approx(50 * 10 * 20), SETTINGS_SCALED_LEVEL)
    # its own kind stored: the first level, as before; no other backbone under both: the second level's median
    assert Estimator(runs + [settings_run("bsarec", 7000, 30, authors=True)]).estimate(authors)[:2] == \
        (7000, ESTIMATE_LEVELS[0][0])
    assert Estimator(runs[:1]).estimate(authors)[:2] == (1000, ESTIMATE_LEVELS[1][0])
    # no epoch counts under ours: nothing to scale per epoch, the second level; a run without one beside one with
    # it is left out, from the estimate and from the runs it names
    assert Estimator([replace(runs[0], epochs_trained=None), *runs[1:]]).estimate(authors)[1] == ESTIMATE_LEVELS[1][0]
    uncounted = replace(runs[0], run_dir="no epochs", seconds=99999, epochs_trained=None)
    seconds, level, used = Estimator([uncounted, *runs]).estimate(authors)
    assert seconds == pytest.approx(3000) and "no epochs" not in {run.run_dir for run in used}
    # a lower cap for the run asked about: the epochs it may train are capped (the stopping rule is not scaled)
    capped = {**authors, "epochs": 10}
    with_cap = Estimator([runs[0], runs[1], settings_run("fmlprec", 600, 10, authors=True, cap=10)])
    assert with_cap.estimate(capped)[:2] == (pytest.approx(50 * 3 * 10), SETTINGS_SCALED_LEVEL)


def test_a_change_of_settings_no_backbone_here_has_both_of_is_scaled_as_on_other_datasets():
    """SASRec + MLTFR under the authors' settings on a dataset where only our settings have run: the change of
    settings measured on the other datasets scales its time per epoch, from SASRec itself there if it ran under
    both (5x), else from the backbones of its encoding (CL4SRec), else from any (FMLP-Rec); never the second
    level's median of our settings' runs alone, which a time budget would have trusted."""
    here = settings_run("sasrec", 1000, 25, dataset="Beauty")  # 40 s an epoch under ours
    elsewhere = [settings_run("sasrec", 400, 20, dataset="Pantry"), settings_run("sasrec", 1000, 10, authors=True,
                                                                                   dataset="Pantry"),  # 20 -> 100 s
                 settings_run("cl4srec", 300, 30, dataset="ml-100k"),
                 settings_run("cl4srec", 600, 20, authors=True, dataset="ml-100k"),  # 10 -> 30 s: 3x
                 settings_run("fmlprec", 100, 10, dataset="ml-100k"),
                 settings_run("fmlprec", 800, 10, authors=True, dataset="ml-100k")]  # 8x, another encoding
    authors = {**here.fields, **{k: elsewhere[1].fields[k] for k in ("n_experts", "trainable_tables",
                                                                      "test_every_epoch")}}
    seconds, level, used = Estimator([here, *elsewhere]).estimate(authors)
    assert (seconds, level) == (pytest.approx(40 * 5 * 25), SETTINGS_SCALED_LEVEL)
    assert {run.run_dir for run in used} == {run.run_dir for run in [here, *elsewhere[:2]]}
    # SASRec not under both anywhere: its encoding's (CL4SRec's 3x) before another encoding's (FMLP-Rec's 8x)
    assert Estimator([here, *elsewhere[2:]]).estimate(authors)[:2] == (pytest.approx(40 * 3 * 25),
                                                                       SETTINGS_SCALED_LEVEL)
    assert Estimator([here, *elsewhere[4:]]).estimate(authors)[:2] == (pytest.approx(40 * 8 * 25),
                                                                       SETTINGS_SCALED_LEVEL)
    # another plug-in's change of settings elsewhere does not count: the second level, as before
    other_plugin = [replace(run, fields={**run.fields, "plugin": "te"}) for run in elsewhere]
    assert Estimator([here, *other_plugin]).estimate(authors)[:2] == (1000, ESTIMATE_LEVELS[1][0])
    # a backbone here measured under both still comes first (FMLP-Rec here: 2x, over SASRec's 5x on Pantry)
    local = [settings_run("fmlprec", 200, 10, dataset="Beauty"), settings_run("fmlprec", 400, 10, authors=True,
                                                                              dataset="Beauty")]
    assert Estimator([here, *elsewhere, *local]).estimate(authors)[:2] == (pytest.approx(40 * 2 * 25),
                                                                           SETTINGS_SCALED_LEVEL)


def test_the_held_out_check_estimates_each_kind_from_the_others_only():
    """Each kind held out in turn and estimated from the rest. BSARec's authors' kind: 50 s an epoch under ours,
    times FMLP-Rec's 3x, times its 20 epochs = 3000 s against 6000 s measured (a factor of 2: counted within);
    BSARec's own kind: 300 s / 3 * 20 = 2000 s against 1000 s (within); FMLP-Rec's authors' kind: 20 s * BSARec's
    6x * its 40 epochs under ours = 4800 s against 600 s (outside: its early stopping went another way); FMLP-Rec's
    own: 60 s / 6 * 10 = 100 s against 800 s (outside); a kind like nothing else has no estimate."""
    runs = [settings_run("bsarec", 1000, 20), settings_run("bsarec", 6000, 20, authors=True),  # 50 -> 300 s: 6x
            settings_run("fmlprec", 800, 40), settings_run("fmlprec", 600, 10, authors=True),  # 20 -> 60 s: 3x
            settings_run("linrec", 10, 5, dataset="B")]
    check = held_out_check(runs)
    kinds = check.kinds.set_index(["backbone", "test_every_epoch"])
    assert kinds["estimate_s"].to_dict() == pytest.approx(
        {("bsarec", False): 2000, ("bsarec", True): 3000, ("fmlprec", False): 100, ("fmlprec", True): 4800,
         ("linrec", False): math.nan}, nan_ok=True)
    assert kinds.loc[("bsarec", True), "ratio"] == pytest.approx(2)
    assert kinds.loc[("bsarec", True), "estimate_from"] == SETTINGS_SCALED_LEVEL
    assert kinds.loc[("linrec", False), "estimate_from"] == NO_ESTIMATE
    text = check.text()
    assert "within a factor of 2 of its measured median for 2 of 4 kinds (2 of 4 runs)" in text
    assert "1 kind(s) had no estimate" in text
    assert "no kind of stored run could be estimated" in held_out_check(runs[4:]).text()
    # the datasets' sizes (for the last level) are asked once each over all the held-out estimators; one that
    # cannot be read leaves that level out, as in a plan, and breaks nothing
    asked = []

    def sizes(dataset):
        asked.append(dataset)
        raise FileNotFoundError(dataset)

    with_sizes = held_out_check(runs, sizes=sizes)
    assert asked == ["B"] and math.isnan(with_sizes.kinds["estimate_s"].iloc[-1])
    assert with_sizes.text() == text


def test_trained_epochs_add_up_the_rounds():
    from mltfrkit.plan import trained_epochs

    assert trained_epochs({"epochs": [{}] * 7}) == 7
    assert trained_epochs({"epochs": [{}] * 3, "round1": {"epochs": [{}] * 10}, "round2": {"epochs": [{}] * 3}}) == 13
    assert trained_epochs({"round1": {"epochs": [{}] * 10}, "round2": {}}) is None  # a round without its curve
    assert trained_epochs({}) is None


def test_epoch_units_count_users_and_training_windows():
    from types import SimpleNamespace

    import numpy as np

    split = SimpleNamespace(sequences=[np.arange(5), np.arange(100), np.arange(3)])
    # windows: 5 - 3 = 2, min(97, 50) = 50, 0
    assert epoch_units(split) == {"sequences": 3.0, "prefix windows": 52.0}


def test_a_batch_counts_each_run_once_and_runs_its_grids_one_after_another():
    """batch_totals: a run in two grids (a focus grid's runs are its full grid's) counts in the first only;
    each grid's wall time is simulated over its new runs, and the grids' walls add up (one starts when the one
    before has ended); runs without an estimate are counted and named, never given a time."""
    import pandas as pd

    def plan(rows, workers=2):
        frame = pd.DataFrame(rows, columns=["run_dir", "seconds", "measured", "order"])
        return GridPlan(runs=pd.DataFrame(), grid=len(rows), stored=0, recorded_from_stored=0, recorded_after=0,
                        workers=workers, serial_seconds=0, wall_seconds=0, estimate_sources=0, whole_runs=frame)

    focus = plan([("a", 5.0, True, 0), ("b", 3.0, False, 1)])
    full = plan([("a", 5.0, True, 0), ("c", 4.0, False, 1), ("b", 3.0, False, 2), ("d", 4.0, False, 3),
                 ("e", math.nan, False, -1)])
    totals = batch_totals([focus, full])
    assert (totals.grids, totals.runs, totals.measured, totals.estimated, totals.unestimated) == (2, 5, 1, 3, 1)
    assert totals.serial_seconds == 16 and totals.measured_seconds == 5
    assert totals.wall_seconds == 5 + 4  # focus: 5 | 3; full's new runs: 4 | 4
    text = totals.text("batch")
    assert text.startswith("batch (2 grids, 5 distinct runs): 0.0 h serial, 0.0 h wall with 2 workers")
    assert "left out: 1 without an estimate, so it takes longer than that" in text
    assert batch_totals([full, focus]).wall_seconds == simulated_wall([5, 4, 3, 4], 2, order=[0, 1, 2, 3])
    # a stored run without a time is counted and named, not given one; a plan without rows adds nothing
    untimed = plan([("f", math.nan, True, -1)])
    totals = batch_totals([focus, untimed, replace(untimed, whole_runs=None)])
    assert (totals.runs, totals.stored_untimed, totals.unestimated) == (3, 1, 0)
    assert "left out: 1 stored without a time" in totals.text("batch")
    assert "upper bound" not in totals.text("batch")
    # estimates at the last level (every epoch of the cap) are counted and summed as upper bounds
    frame = pd.DataFrame([("g", 7200.0, False, 0, True), ("h", 3600.0, False, 1, False), ("i", 600.0, True, 2, False)],
                         columns=["run_dir", "seconds", "measured", "order", "bound"])
    totals = batch_totals([replace(focus, whole_runs=frame), focus])
    assert (totals.bounded, totals.bounded_seconds, totals.estimated) == (1, 7200.0, 3)
    assert "3 estimated (1 of them, 2.0 h serial, at an upper bound: every epoch of the cap" in totals.text("batch")


def test_rounds_follow_what_training_does():
    """Runs that train twice are never estimated from runs that train once: MLTFR trains a second round only
    with a consensus expert (two experts of one width), a w/o SC run once, a two-round schedule twice."""
    def config(plugin="mltfr", widths=(384, 384), schedule="single", **options):
        return {"dataset": "d", "backbone": "sasrec", "plugin": plugin, "schedule": schedule, "train": {},
                "plugin_options": {"consensus": True, **options},
                "token_tables": [{"name": f"t{i}", "d": d} for i, d in enumerate(widths)]}

    assert cost_fields(config())["rounds"] == 2
    assert cost_fields(config(widths=(384, 768)))["rounds"] == 1  # no consensus expert: one round
    assert cost_fields(config(widths=(384,)))["rounds"] == 1
    assert cost_fields(config(consensus=False))["rounds"] == 1
    assert cost_fields(config(plugin="none", widths=(), schedule="two_round"))["rounds"] == 2
    assert cost_fields(config(plugin="none", widths=()))["rounds"] == 1


def test_wall_time_simulates_workers_taking_the_next_run():
    # LPT hands 5, 4, 3, 3, 3 to two workers as 5+3 and 4+3+3: the last run ends at 10, not at 18 / 2 = 9
    assert simulated_wall([5, 4, 3, 3, 3], 2) == 10
    assert simulated_wall([10, 1, 1], 2) == 10  # one long run bounds the grid
    assert simulated_wall([3, 3, 2, 2, 2], 2) == 7  # LPT's textbook case (a perfect split takes 6)
    assert simulated_wall([5, 4, 3, 3, 3], 1) == 18
    assert simulated_wall([5, 4], 8) == 5
    assert simulated_wall([1, 2, 3], 2, order=[0, 1, 2]) == 4  # the given order, not sorted: 1+3 and 2
    with pytest.raises(ValueError):
        simulated_wall([1], 0)


def test_the_plan_wall_time_follows_the_executors_order(three_runs):
    path, root = three_runs
    store = quiet_store(root)
    grid = [spec(path, seed=seed) for seed in (10, 11, 12)]
    one, two = store.plan(grid, workers=1), store.plan(grid, workers=2)
    estimates = two.runs["estimate_s"].tolist()
    assert one.wall_seconds == pytest.approx(sum(estimates)) == pytest.approx(one.serial_seconds)
    assert two.wall_seconds == pytest.approx(simulated_wall(estimates, 2))
    assert two.wall_seconds == pytest.approx(2 * estimates[0])  # three equal runs on two workers
    default = store.plan(grid)
    assert default.workers == concurrent_runs(store.executor) == 1  # the store's local executor


def test_the_whole_grid_adds_the_stored_runs_measured_times_to_the_estimates(three_runs):
    """What the whole grid takes on an empty store: the stored runs at their measured seconds (once per run,
    however many grid entries they answer), the rest at their estimates, on `workers` workers longest first."""
    path, root = three_runs
    store = quiet_store(root)
    measured = {Path(run_dir).name: seconds for run_dir, seconds in stored_seconds(store).items()}
    stored = [spec(path, seed=seed) for seed in (0, 1)]
    new = spec(path, seed=5)
    plan = store.plan([*stored, stored[0], new], workers=2)
    own = [measured[store.run_dir(run).name] for run in stored]
    estimate = plan.runs["estimate_s"].iloc[0]
    assert (plan.stored, plan.stored_timed, plan.stored_untimed) == (3, 2, 0)
    assert plan.stored_seconds == pytest.approx(sum(own))
    assert plan.whole_serial_seconds == pytest.approx(sum(own) + estimate)
    assert plan.whole_wall_seconds == pytest.approx(simulated_wall([*own, estimate], 2))
    assert plan.whole_wall_seconds >= plan.wall_seconds and plan.whole_serial_seconds >= plan.serial_seconds
    line = plan.totals_line("grid")
    assert f"the whole grid: {(sum(own) + estimate) / 3600:.1f} h serial" in line
    assert "measured on 2 stored runs" in line
    # nothing stored: the estimate is the whole grid, and the line says nothing more
    fresh = store.plan([new])
    assert fresh.stored_timed == 0 and "the whole grid" not in fresh.totals_line("grid")
    # everything stored: nothing to train, and the whole grid is what its runs took
    done = store.plan(stored, workers=1)
    assert done.to_train == 0 and done.whole_wall_seconds == pytest.approx(sum(own))
    assert "nothing to train; the whole grid" in done.totals_line("grid")
    # the whole grid's runs, one row each, for a batch's total: the same seconds and wall
    rows = plan.whole_runs
    assert sorted(rows["run_dir"]) == sorted([store.run_dir(run).name for run in stored] + [store.run_dir(new).name])
    assert rows["measured"].sum() == 2 and rows["seconds"].sum() == pytest.approx(plan.whole_serial_seconds)
    assert batch_totals([plan]).wall_seconds == pytest.approx(plan.whole_wall_seconds)
    assert batch_totals([plan, done]).runs == 3  # the second grid's runs are the first's
    assert not rows["bound"].any()  # measured, or estimated from runs of the same kind


def test_sweep_plan_prints_the_totals_and_trains_nothing(tiny_file, tmp_path, capsys, monkeypatch):
    from mltfrkit.experiments import Experiment

    link_cached_inputs(SOURCES[:1])
    exp = Experiment(str(tiny_file), runs_dir=str(tmp_path / "runs"), epochs=1, seeds=[0], progress=False)
    exp.store.log = None
    exp.store.ensure(exp.spec("sasrec", seed=0))  # the W/O run of seed 0 is stored
    root = exp.store.root
    before = files_under(root)
    trained = counting_training(monkeypatch)
    argv = ["sweep", "te_vs_re", "--dataset", str(tiny_file), "--runs-dir", str(tmp_path / "runs"), "--epochs", "1",
            "--seeds", "0", "1", "--sources", SOURCES[0], "--no-progress", "--plan"]
    assert main(argv + ["--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert not trained and files_under(root) == before
    line = next(text for text in out.splitlines() if text.startswith("te_vs_re on tiny:"))
    assert re.fullmatch(r"te_vs_re on tiny: 6 runs, 1 stored, 5 to train \(0 resume\); estimated \d+\.\d h serial, "
                        r"\d+\.\d h wall with 2 workers \(from 1 stored run's measured time; 4 runs have no estimate\); "
                        r"the whole grid: \d+\.\d h serial, \d+\.\d h wall with 2 workers \(\d+\.\d h measured on 1 stored "
                        r"run, 4 without an estimate left out\)", line), line
    assert TIMING_CAUTION in out
    assert re.search(r"sasrec\s+none\s+single\s+1\s+0\s+0", out)  # the summary's W/O row: 1 run, estimated
    assert re.search(r"sasrec\s+te\s+single\s+2\s+0\s+2", out)  # LLM-TE: 2 runs, none estimated

    plan = exp.plan("te_vs_re", sources=[SOURCES[0]], workers=2)
    assert (plan.grid, plan.stored, plan.to_train) == (3, 1, 2)  # this Experiment has one seed
    assert main(argv) == 0  # default workers: what the sweep's executor (auto) would run at once
    workers = concurrent_runs(make_executor("auto"))
    assert f"with {workers} worker{'s' if workers != 1 else ''} " in capsys.readouterr().out
    assert not trained and files_under(root) == before


def test_sweep_sources_reach_the_ladders_token_source_rung(tiny_file, tmp_path, capsys, monkeypatch):
    """``--sources`` on the reproduction_gap grid adds the token-source rung (one name, a preset such as llm_heavy,
    stays a string, as the notebook's ``sources`` parameter passes it), so the sweep plans exactly the runs the
    notebook reads; a grid that has no use for it refuses it rather than ignoring it."""
    from mltfrkit.experiments import Experiment
    from mltfrkit.vocab import resolve_preset

    link_cached_inputs(resolve_preset("offline"))  # the authors' configuration has 6 experts
    common = ["--dataset", str(tiny_file), "--runs-dir", str(tmp_path / "runs"), "--epochs", "1", "--seeds", "0",
              "--backbones", "sasrec", "--llms", "offline", "--no-progress", "--plan"]
    exp = Experiment(str(tiny_file), runs_dir=str(tmp_path / "runs"), epochs=1, seeds=[0], backbones=["sasrec"],
                     llms="offline", progress=False)
    without = exp.plan("reproduction_gap").grid
    three = ["paraphrase-MiniLM-L3-v2", "all-MiniLM-L6-v2", "SmolLM2-135M"]  # ours' first three sources, reordered
    with_rung = exp.plan("reproduction_gap", sources=three).grid
    assert with_rung == without + 1  # the rung's MLTFR run; its W/O and W/O 2-round are the last rung's
    line = lambda: next(t for t in capsys.readouterr().out.splitlines() if t.startswith("reproduction_gap on"))
    assert main(["sweep", "reproduction_gap", "--sources", *three, *common]) == 0
    assert line().startswith(f"reproduction_gap on tiny: {with_rung} runs")
    assert main(["sweep", "reproduction_gap", *common]) == 0
    assert line().startswith(f"reproduction_gap on tiny: {without} runs")
    passed, plan = [], Experiment.plan
    monkeypatch.setattr(Experiment, "plan", lambda self, name, workers=None, **options: passed.append(options) or
                        plan(self, name, workers, sources=three))
    assert main(["sweep", "reproduction_gap", "--sources", "llm_heavy", *common]) == 0
    assert passed == [{"sources": "llm_heavy"}]  # the notebook's sources="llm_heavy", not ["llm_heavy"]
    assert main(["sweep", "table2", "--sources", SOURCES[1], *common]) == 2
    assert "--sources applies to the te_vs_re, claims and reproduction_gap grids, not table2" in capsys.readouterr().err


def test_a_run_its_plain_patience_twin_may_answer_waits_for_it_and_is_not_trained(tiny_file, tmp_path, monkeypatch):
    """The reproduction ladder holds the authors' rung (plain patience, the test curve tracked) and ours (relative
    patience) of one spec. When the plain run stops alike, it answers for ours (get): ensure_many trains it first
    and ours only if it does not, so two workers never train the same run twice; the plan flags and counts it."""
    # patience_relative 0.01: the wait max(1, 0.01 x best epoch) is 1 for any best epoch below 100, so the plain
    # run (patience 1) stops alike and answers; the second grid's 5 x best epoch never does.
    ours = spec(tiny_file, epochs=40, patience=1, patience_relative=0.01, lr=0.01, seed=3)
    authors = replace(ours, train=replace(ours.train, patience_relative=0.0, test_every_epoch=True))
    store = quiet_store(tmp_path / "runs")
    grid = [ours, authors]
    plan = store.plan(grid, workers=2)
    assert plan.to_train == 2 and plan.may_be_answered == 1
    assert plan.runs.set_index("run_dir")["may_be_answered"].to_dict() == {
        store.run_dir(ours).name: True, store.run_dir(authors).name: False}
    assert "1 may be answered by a plain-patience run of this grid" in plan.totals_line("grid")

    trained = counting_training(monkeypatch)
    results = store.ensure_many(grid)
    assert [Path(d).name for d in trained][0] == store.run_dir(authors).name  # the one that may answer goes first
    assert len(trained) == 1 and results[0]["run_dir"] == results[1]["run_dir"]  # answered, not trained
    assert "same epoch" in results[0]["equivalent_stopping"] and results[1]["stopped_early"]
    assert store.plan(grid).to_train == 0
    longer = replace(ours, train=replace(ours.train, patience_relative=5.0, seed=4))
    longer_authors = replace(longer, train=replace(longer.train, patience_relative=0.0, test_every_epoch=True))
    trained.clear()
    again = store.ensure_many([longer, longer_authors])  # a 5 x best-epoch wait never stops like patience 1
    assert [Path(d).name for d in trained] == [store.run_dir(longer_authors).name, store.run_dir(longer).name]
    assert again[0]["run_dir"] == str(store.run_dir(longer)) and "equivalent_stopping" not in again[0]


def test_a_without_consensus_run_whose_full_run_has_no_round_one_is_trained_in_the_first_pass(tiny_file, tmp_path,
                                                                                              monkeypatch):
    """Experts of different widths have no consensus expert, so the full run trains one round and has no round 1
    to record its w/o SC ablation from: the plan counts both runs, and ensure_many trains both in one pass."""
    sources = ["all-MiniLM-L6-v2", "SmolLM2-135M"]  # 384-d and 576-d
    link_cached_inputs(sources)
    full, ablated = full_and_ablated(tiny_file, epochs=1)
    full = replace(full, plugin_options={**full.plugin_options, "llms": sources})
    ablated = replace(ablated, plugin_options={**ablated.plugin_options, "llms": sources})
    store = quiet_store(tmp_path / "runs")
    plan = store.plan([ablated, full])
    assert (plan.to_train, plan.recorded_after) == (2, 0)
    assert set(plan.runs["rounds"]) == {1}
    passes = []
    real_run = store.executor.run

    def counted(jobs, owner):
        passes.append(sorted(Path(job.run_dir).name for job in jobs))
        return real_run(jobs, owner)

    monkeypatch.setattr(store.executor, "run", counted)
    results = store.ensure_many([ablated, full])
    assert passes == [sorted(plan.runs["run_dir"])]  # one pass, both runs
    assert all(result is not None and "derived_from" not in result for result in results)


def test_the_finish_by_estimate_of_a_backbone_alone_in_its_encoding_comes_from_the_data_sizes(tmp_path):
    """The store's own estimates (what --finish-by decides by) reach the last level: FMLP-Rec trained on one file,
    asked for on another where only SASRec ran, gets its time per epoch scaled by the training windows and the
    cap, not NaN (which would let it start whatever the time left)."""
    small = write_tiny_file(tmp_path)
    large = tmp_path / "larger.txt"
    large.write_text(small.read_text() * 3)  # three times the users and windows (users repeat under new names)
    lines = [f"x{n}{line}" for n, line in enumerate(large.read_text().splitlines())]
    large.write_text("\n".join(lines) + "\n")
    store = quiet_store(tmp_path / "runs")
    fmlprec_small = replace(spec(small), backbone="fmlprec", model={"hidden_size": 16, "n_layers": 1})
    store.ensure_many([fmlprec_small, spec(large)])
    fmlprec_large = replace(fmlprec_small, dataset=str(large))
    fields = cost_fields(fmlprec_large.to_dict(store.split(str(large)).source_sha256))
    seconds = store._estimates()(fields)
    result = store.get(fmlprec_small)
    per_epoch = result["seconds"] / len(result["epochs"])
    assert seconds == pytest.approx(per_epoch * fmlprec_large.train.epochs * 3, rel=0.05)
    plan = store.plan([fmlprec_large])
    assert plan.runs["estimate_from"].tolist() == [SIZE_SCALED_LEVEL]
    # a batch's total counts it as an upper bound; the stored runs it came from are not
    assert plan.whole_runs["bound"].tolist() == [True]
    totals = batch_totals([plan])
    assert totals.bounded == 1 and totals.bounded_seconds == pytest.approx(plan.whole_serial_seconds)
    assert "(1 of them" in totals.text("batch") and "at an upper bound" in totals.text("batch")
    # beside stored runs (listed first in whole_runs), the flag stays with its own run
    both = store.plan([fmlprec_small, spec(large), fmlprec_large]).whole_runs.set_index("run_dir")["bound"]
    assert both.to_dict() == {store.run_dir(fmlprec_small).name: False, store.run_dir(spec(large)).name: False,
                              store.run_dir(fmlprec_large).name: True}
